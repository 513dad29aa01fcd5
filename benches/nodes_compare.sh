#!/usr/bin/env bash
# The inference-node boundary's cost: the same load runs against the release server of
# a reference commit (engines in the server process) and of this tree (engines in a
# supervised node process over gRPC), one after the other on this machine.
#   - stream_load: final latency p50/p95 of N paced real-time streams, and the batch
#     figure (a 10-minute recording through POST /transcribe, x real time);
#   - speak_load: time to first audio of /stream/speak sessions.
# Usage: benches/nodes_compare.sh REFERENCE_REV [streams, e.g. 1,16] [speak rounds]
# With ONLY=stream or ONLY=speak, just that load runs.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
reference="${1:?usage: benches/nodes_compare.sh REFERENCE_REV [streams]}"
streams="${2:-1,16}"
rounds="${3:-5}"
only="${ONLY:-}"
models/fetch >/dev/null
bins="$(mktemp -d)"
trap 'rm -rf "$bins"; git worktree remove --force "$bins/tree" 2>/dev/null || true' EXIT
echo "building the reference ($reference) and this tree, release"
git worktree add -q "$bins/tree" "$reference"
(cd "$bins/tree" && cargo build --release --bin scaigrid -q)
cp "$CARGO_TARGET_DIR/release/scaigrid" "$bins/reference"
cargo build --release --bin scaigrid -q
cp "$CARGO_TARGET_DIR/release/scaigrid" "$bins/current"
cargo bench --bench stream_load --no-run -q 2>/dev/null
cargo bench --bench speak_load --no-run -q 2>/dev/null
for which in reference current; do
  echo "=== $which ==="
  (
    export SCAIGRID_LOAD_BINARY="$bins/$which"
    . benches/release_server.sh
    [ "$only" = speak ] || cargo bench --bench stream_load -q -- --url "http://$address" \
      --key "$key" --streams "$streams" --frame-ms 40
    [ "$only" = stream ] || cargo bench --bench speak_load -q -- --url "http://$address" \
      --key "$key" --sessions 1,4 --rounds "$rounds" --stagger-ms 0
  )
done
