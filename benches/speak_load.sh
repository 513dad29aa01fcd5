#!/usr/bin/env bash
# Load run for ScaiSpeak streams: piper-tts (PyPI) times its first audio on the TTFA
# sentence (the reference), then a release server with the real models on loopback and
# benches/speak_load.rs: time to first audio on /stream/speak with 1 and 4 concurrent
# sessions, and the aggregate real-time factor.
# Usage: benches/speak_load.sh [sessions, e.g. 1,4] [rounds] [stagger ms: session i of
# a round starts i × this late, so later streams arrive while earlier ones speak]
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
sessions="${1:-1,4}"
rounds="${2:-5}"
stagger="${3:-0}"
models/fetch >/dev/null
python3 -c 'import piper' 2>/dev/null || python3 -m pip install -q piper-tts
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
. benches/release_server.sh
echo "server at $address; $(nproc) cores"
cargo bench --bench speak_load -q -- --url "http://$address" --key "$key" \
  --sessions "$sessions" --rounds "$rounds" --stagger-ms "$stagger"
