#!/usr/bin/env bash
# Load run: GET /v1/me with an API key against the release server on loopback, with
# GET /health/live in the same run as the reference. Needs wrk (Debian `wrk`).
# Usage: benches/load_me.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
connections="${2:-64}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cargo build --release --bin scaigrid -q
data="$(mktemp -d)"
log="$data/server.log"
key="sgk_load_platform_admin_key_0123456789"
SCAIGRID_BIND=127.0.0.1:0 SCAIGRID_DATA_DIR="$data" SCAIGRID_BOOTSTRAP_ADMIN_KEY="$key" \
  RUST_LOG="${RUST_LOG:-info}" "$CARGO_TARGET_DIR/release/scaigrid" serve 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 200); do grep -q "listening on" "$log" && break; sleep 0.05; done
address="$(grep -o 'listening on [0-9.:]*' "$log" | awk '{print $3}')"
echo "server at $address (RUST_LOG=${RUST_LOG:-info}); ${seconds}s, ${connections} connections, 2 wrk threads"
echo "== reference: GET /health/live"
wrk -t2 -c"$connections" -d"${seconds}s" --latency "http://$address/health/live" | grep -E 'Requests/sec|Latency|50%|99%'
echo "== GET /v1/me with an API key"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $key" "http://$address/v1/me" | grep -E 'Requests/sec|Latency|50%|99%|Non-2xx'
