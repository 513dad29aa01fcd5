#!/usr/bin/env bash
# Load run for WebRTC sessions: a release server with the real models on loopback and
# benches/webrtc_load.rs (a str0m client): ScaiEcho mouth-to-final and ScaiSpeak
# text-to-first-packet over WebRTC, with the same audio and text over the WebSocket
# streams as the reference, for 1 and 4 concurrent sessions.
# Usage: benches/webrtc_load.sh [sessions, e.g. 1,4] [rounds]
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
sessions="${1:-1,4}"
rounds="${2:-3}"
models/fetch >/dev/null
cargo bench --bench webrtc_load --no-run -q 2>/dev/null
. benches/release_server.sh
echo "server at $address; $(nproc) cores"
cargo bench --bench webrtc_load -q -- --url "http://$address" --key "$key" \
  --sessions "$sessions" --rounds "$rounds"
