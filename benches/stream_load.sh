#!/usr/bin/env bash
# Load run for ScaiEcho streams: a release server with the real models on loopback,
# then benches/stream_load.rs (N paced WebSocket streams of real speech per step, final
# latency and lag per N, then a 10-minute batch transcription).
# Usage: benches/stream_load.sh [streams, e.g. 1,2,4,8,12] [frame ms]
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
streams="${1:-1,2,4,8,12}"
frame_ms="${2:-40}"
models/fetch >/dev/null
cargo bench --bench stream_load --no-run -q 2>/dev/null
. benches/release_server.sh
echo "server at $address; $(nproc) cores"
cargo bench --bench stream_load -q -- --url "http://$address" --key "$key" \
  --streams "$streams" --frame-ms "$frame_ms"
