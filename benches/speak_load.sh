#!/usr/bin/env bash
# Load run for ScaiSpeak streams: piper-tts (PyPI) times its first audio on the TTFA
# sentence (the reference), then a release server with the real models on loopback and
# benches/speak_load.rs: time to first audio on /stream/speak with 1 and 4 concurrent
# sessions, and the aggregate real-time factor.
# Usage: benches/speak_load.sh [sessions, e.g. 1,4] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-1,4}"
rounds="${2:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
models/fetch >/dev/null
python3 -c 'import piper' 2>/dev/null || python3 -m pip install -q piper-tts
cargo build --release --bin scaigrid -q
cargo bench --bench speak_load --no-run -q 2>/dev/null
piper_ms=$(python3 - <<'PY'
import time, statistics
from piper import PiperVoice
voice = PiperVoice.load("models/cache/piper-joe/en_US-joe-medium.onnx")
text = "When the meeting ends, please send the notes to everyone on the team."
next(iter(voice.synthesize(text)))
times = []
for _ in range(7):
    t0 = time.perf_counter()
    next(iter(voice.synthesize(text)))
    times.append(time.perf_counter() - t0)
print(round(statistics.median(times) * 1000))
PY
)
echo "reference: piper-tts first audio (median of 7, in-process, no network): ${piper_ms} ms"
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
cargo bench --bench speak_load -q -- --url "http://$address" --key "$key" \
  --sessions "$sessions" --rounds "$rounds"
