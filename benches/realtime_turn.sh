#!/usr/bin/env bash
# Mouth-to-ear latency of a Realtime voice turn: a release server with the real models on
# loopback, then benches/realtime_turn.rs (a spoken question in real time, a mock chat
# model answering in 50 ms; end of speech → first answer audio, p50/p95, and where the
# time went).
# Usage: benches/realtime_turn.sh [rounds] [silence_duration_ms] [mock LLM ms]
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
rounds="${1:-10}"
silence="${2:-200}"
llm="${3:-50}"
models/fetch >/dev/null
cargo bench --bench realtime_turn --no-run -q 2>/dev/null
. benches/release_server.sh
echo "server at $address; $(nproc) cores"
cargo bench --bench realtime_turn -q -- --url "http://$address" --key "$key" \
  --rounds "$rounds" --silence-ms "$silence" --llm-ms "$llm"
