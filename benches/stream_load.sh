#!/usr/bin/env bash
# Load run for ScaiEcho streams: a release server with the real models on loopback,
# then benches/stream_load.rs (N paced WebSocket streams of real speech per step, final
# latency and lag per N, then a 10-minute batch transcription).
# Usage: benches/stream_load.sh [streams, e.g. 1,2,4,8,12] [frame ms]
set -euo pipefail
cd "$(dirname "$0")/.."
streams="${1:-1,2,4,8,12}"
frame_ms="${2:-40}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
models/fetch >/dev/null
cargo build --release --bin scaigrid -q
cargo bench --bench stream_load --no-run -q 2>/dev/null
data="$(mktemp -d)"
log="$data/server.log"
key="sgk_load_platform_admin_key_0123456789"
SCAIGRID_BIND=127.0.0.1:0 SCAIGRID_DATA_DIR="$data" SCAIGRID_BOOTSTRAP_ADMIN_KEY="$key" \
  RUST_LOG="${RUST_LOG:-warn,scaigrid=info}" "$CARGO_TARGET_DIR/release/scaigrid" serve 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 600); do grep -q "listening on" "$log" && break; sleep 0.1; done
address="$(grep -o 'listening on [0-9.:]*' "$log" | awk '{print $3}')"
echo "server at $address; $(nproc) cores"
cargo bench --bench stream_load -q -- --url "http://$address" --key "$key" \
  --streams "$streams" --frame-ms "$frame_ms"
