#!/usr/bin/env bash
# Scale-out on one machine: the same load through an edge of the process topology
# (scripts/topology: PostgreSQL, Redis, S3, an edge, a worker) with 1 inference node,
# then with 2 node processes:
#   - stream_load: final latency of N paced real-time streams (which N keep up);
#   - batch: P ten-minute recordings through POST /transcribe at once, aggregate x real
#     time (each recording runs on one node: a second node serves the second one).
# Usage: benches/nodes_scale.sh [streams, e.g. 4,8,16] [batch parallel, e.g. 2]
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
streams="${1:-4,8,16}"
parallel="${2:-2}"
cargo build --release --bin scaigrid -q
cargo bench --bench stream_load --no-run -q 2>/dev/null
trap 'scripts/topology stop' EXIT
for nodes in 1 2; do
  echo "=== $nodes node process(es) ==="
  NODES="$nodes" EDGES=1 SCAIGRID_BINARY="$CARGO_TARGET_DIR/release/scaigrid" \
    scripts/topology start >/dev/null
  set -a; . "${SCAIGRID_TOPOLOGY_DIR:-/tmp/scaigrid-topology}/env"; set +a
  url="http://127.0.0.1:18080"
  for _ in $(seq 1 120); do
    online="$(curl -fs -H "authorization: Bearer $SCAIGRID_BOOTSTRAP_ADMIN_KEY" \
      "$url/v1/infra/nodes" | grep -o '"status":"online"' | wc -l || true)"
    [ "$online" -ge "$nodes" ] && break
    sleep 1
  done
  cargo bench --bench stream_load -q -- --url "$url" --key "$SCAIGRID_BOOTSTRAP_ADMIN_KEY" \
    --streams "$streams" --frame-ms 40 --batch-parallel "$parallel"
  scripts/topology stop
done
