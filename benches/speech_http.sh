#!/usr/bin/env bash
# HTTP synthesis against piper-tts (PyPI) in one run: for texts of 2, 14, 24 and 60 words,
# piper-tts in-process (the same voice model, two cores) gives the reference time to its
# first chunk and to its whole audio; then a release server on loopback answers
# `POST /v1/audio/speech` for the same texts and the script times the first byte of the
# body and the last. Prints each figure and ours/piper as a ratio (median of the runs).
# Usage: benches/speech_http.sh [runs, default 7] [formats, default wav,mp3]
# $SCAIGRID_LOAD_BINARY runs another server binary (a baseline) instead of this tree's.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
runs="${1:-7}"
formats="${2:-wav,mp3}"
models/fetch --only onnxruntime audio.tts.piper-joe >/dev/null
python3 -c 'import piper' 2>/dev/null || python3 -m pip install -q piper-tts
texts_file="$(mktemp)"
cat >"$texts_file" <<'TEXTS'
Good morning.
When the meeting ends, please send the notes to everyone on the team before lunch today.
The quarterly report is ready for review, and the finance team would like everyone to read the summary before the call on Thursday.
Thank you for calling the support line. Your order has shipped and should arrive within three business days. If you need to change the delivery address, please reply to the confirmation email or call us again. Our team is available every weekday from eight in the morning until six in the evening, and on Saturdays until noon.
TEXTS
piper_figures=$(taskset -c 0,1 python3 - "$texts_file" "$runs" <<'PY'
import statistics, sys, time
from piper import PiperVoice
voice = PiperVoice.load("models/cache/piper-joe/en_US-joe-medium.onnx")
texts = [line.strip() for line in open(sys.argv[1]) if line.strip()]
runs = int(sys.argv[2])
list(voice.synthesize(texts[0]))
for text in texts:
    firsts, totals = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        chunks = iter(voice.synthesize(text))
        next(chunks)
        firsts.append(time.perf_counter() - t0)
        list(chunks)
        totals.append(time.perf_counter() - t0)
    print(f"{statistics.median(firsts):.4f} {statistics.median(totals):.4f}")
PY
)
. benches/release_server.sh
echo "server at $address; $(nproc) cores; binary $server_binary"
python3 - "$address" "$key" "$texts_file" "$runs" "$formats" "$piper_figures" <<'PY'
import http.client, json, statistics, sys, time
address, key, texts_file, runs, formats, piper = sys.argv[1:7]
host, port = address.rsplit(":", 1)
texts = [line.strip() for line in open(texts_file) if line.strip()]
piper = [tuple(map(float, line.split())) for line in piper.splitlines()]

def speak(text, fmt):
    connection = http.client.HTTPConnection(host, int(port))
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": text, "response_format": fmt})
    t0 = time.perf_counter()
    connection.request("POST", "/v1/audio/speech", body,
                       {"authorization": f"Bearer {key}", "content-type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise SystemExit(f"{fmt}: {response.status} {response.read()[:300]!r}")
    first = None
    size = 0
    chunks = 0
    while True:
        piece = response.read1(65536)
        if not piece:
            break
        if first is None:
            first = time.perf_counter() - t0
        size += len(piece)
        chunks += 1
    total = time.perf_counter() - t0
    connection.close()
    return first, total, size, chunks

for fmt in formats.split(","):
    speak(texts[0], fmt)
    for text, (p_first, p_total) in zip(texts, piper):
        firsts, totals = [], []
        for _ in range(int(runs)):
            first, total, size, chunks = speak(text, fmt)
            firsts.append(first)
            totals.append(total)
        first, total = statistics.median(firsts), statistics.median(totals)
        words = len(text.split())
        print(f"{fmt:4} {words:3} words: first byte {first*1000:6.0f} ms ({first/p_first:.2f}x piper's first chunk "
              f"{p_first*1000:.0f} ms), whole {total*1000:6.0f} ms ({total/p_total:.2f}x piper's {p_total*1000:.0f} ms), "
              f"{size} bytes in {chunks} reads")
PY
rm -f "$texts_file"
