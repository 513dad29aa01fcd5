#!/usr/bin/env bash
# Engines against their peers on the same clip, same core, same run: our Silero VAD
# (one stream, and 16 streams batched) against the Python onnxruntime Silero loop (the
# reference usage, one stream), speaker-embedding speed in x real time, and Whisper
# tiny.en on a 44 s clip against faster-whisper (PyPI; same CTranslate2 weights, int8,
# beam 1, one thread) with both word error rates: all on one core.
# On both cores, as the server runs them: the 16 VAD streams as two batches on two
# threads, and Piper's time to first audio and real-time factor against piper-tts (PyPI)
# on the same voice and sentence (each with its default threads for two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
models/fetch --only onnxruntime audio.vad.silero audio.analyze.pyannote audio.tts.piper-joe audio.stt.whisper-tiny-en test.speech.beckett >/dev/null
python3 -c 'import onnxruntime, numpy' 2>/dev/null || python3 -m pip install -q onnxruntime==1.31.1 numpy
python3 -c 'import piper' 2>/dev/null || python3 -m pip install -q piper-tts
python3 -c 'import faster_whisper' 2>/dev/null || python3 -m pip install -q faster-whisper
cargo bench --bench engines --no-run -q 2>/dev/null
log="$(mktemp)"; trap 'rm -f "$log"' EXIT
taskset -c 0 cargo bench --bench engines -- --output-format bencher --warm-up-time 1 --measurement-time 3 '^(vad/one_stream|vad/16_streams_batched|embedding|stt)' 2>/dev/null >"$log"
taskset -c 0,1 cargo bench --bench engines -- --output-format bencher --warm-up-time 1 --measurement-time 3 '^(vad/16_streams_two_threads|tts/)' 2>/dev/null >>"$log"
python_s=$(taskset -c 0 python3 - <<'PY'
import time, wave, numpy as np, onnxruntime as ort, os
w = wave.open(os.path.expanduser("models/cache/test-audio/beckett.wav"))
x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
options = ort.SessionOptions(); options.intra_op_num_threads = 1; options.inter_op_num_threads = 1
s = ort.InferenceSession("models/cache/silero-vad/silero_vad.onnx", options)
def run():
    state = np.zeros((2, 1, 128), np.float32); ctx = np.zeros((1, 64), np.float32)
    sr = np.array(16000, dtype=np.int64)
    for i in range(len(x) // 512):
        frame = x[i * 512:(i + 1) * 512][None, :]
        out, state = s.run(None, {"input": np.concatenate([ctx, frame], axis=1), "state": state, "sr": sr})
        ctx = frame[:, -64:]
run()
best = min((lambda t0: (run(), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(5))
print(best)
PY
)
read -r piper_first_s piper_all_s < <(taskset -c 0,1 python3 - <<'PY'
import statistics, time
from piper import PiperVoice
voice = PiperVoice.load("models/cache/piper-joe/en_US-joe-medium.onnx")
text = "When the meeting ends, please send the notes to everyone on the team."
list(voice.synthesize(text))
firsts, total = [], 0.0
for _ in range(10):
    t0 = time.perf_counter()
    chunks = iter(voice.synthesize(text))
    next(chunks)
    firsts.append(time.perf_counter() - t0)
    list(chunks)
    total += time.perf_counter() - t0
# Time to first audio: the median run. Whole sentence: the mean of the ten runs (its
# length varies from run to run; the bench's audio length is a mean of ten too).
print(statistics.median(firsts), total / 10)
PY
)
read -r whisper_s whisper_wer whisper_three_s < <(HF_HUB_OFFLINE=1 taskset -c 0 python3 - <<'PY'
import re, time
from faster_whisper import WhisperModel
model = WhisperModel("models/cache/whisper-tiny-en/ct2", device="cpu", compute_type="int8", cpu_threads=1)
clip = "models/cache/test-audio/two_cities.wav"
def run(clip=clip):
    segments, _ = model.transcribe(clip, beam_size=1, language="en")
    return " ".join(s.text for s in segments)
text = run()
best = 1e9
for _ in range(3):
    t0 = time.perf_counter(); run(); best = min(best, time.perf_counter() - t0)
three = 1e9
for _ in range(2):
    t0 = time.perf_counter()
    for name in ("two_cities", "endgame_nagg_nell", "beckett"):
        run(f"models/cache/test-audio/{name}.wav")
    three = min(three, time.perf_counter() - t0)
words = lambda t: re.sub(r"[^a-z0-9' ]", " ", t.lower()).split()
ref, hyp = words(open("engines/tests/data/two_cities.txt").read()), words(text)
prev = list(range(len(hyp) + 1))
for i, r in enumerate(ref):
    cur = [i + 1] * (len(hyp) + 1)
    for j, h in enumerate(hyp):
        cur[j + 1] = min(prev[j] + (r != h), prev[j + 1] + 1, cur[j] + 1)
    prev = cur
print(best, prev[-1] / len(ref), three)
PY
)
python3 - "$log" "$python_s" "$piper_first_s" "$piper_all_s" "$whisper_s" "$whisper_wer" "$whisper_three_s" <<'PY'
import sys, re
log, python_s = open(sys.argv[1]).read(), float(sys.argv[2])
piper_first_s, piper_all_s = float(sys.argv[3]), float(sys.argv[4])
whisper_s, whisper_wer, whisper_three_s = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
seconds = float(re.search(r"audio_seconds beckett ([0-9.]+)", log).group(1))
ns = {m.group(1): float(m.group(2).replace(",", "")) for m in re.finditer(r"test (\S+) \.\.\. bench:\s+([0-9,]+) ns/iter", log)}
one, many, emb = ns["vad/one_stream"] / 1e9, ns["vad/16_streams_batched"] / 1e9, ns["embedding/beckett_10s"] / 1e9
print(f"clip {seconds:.2f} s, one core")
print(f"VAD python onnxruntime loop, 1 stream : {seconds/python_s:8.0f}x real time")
print(f"VAD ours, 1 stream                    : {seconds/one:8.0f}x real time  ({python_s/one:.2f}x python)")
print(f"VAD ours, 16 streams batched          : {16*seconds/many:8.0f}x real time aggregate  ({16*python_s/many:.2f}x python)")
two = ns["vad/16_streams_two_threads"] / 1e9
print(f"VAD ours, 16 streams on two cores     : {16*seconds/two:8.0f}x real time aggregate  ({16*python_s/two:.2f}x python on one core)")
print(f"speaker embedding                     : {seconds/emb:8.0f}x real time")
tts_first, tts_all = ns["tts/first_audio"] / 1e9, ns["tts/sentence"] / 1e9
tts_audio = float(re.search(r"tts_audio_seconds ([0-9.]+)", log).group(1))
stt = ns["stt/two_cities_44s"] / 1e9
long = float(re.search(r"audio_seconds two_cities ([0-9.]+)", log).group(1))
ours_wer = float(re.search(r"stt_wer ([0-9.]+)", log).group(1))
print(f"STT {long:.1f} s clip, tiny.en greedy : ours {stt:.2f} s ({long/stt:.0f}x real time, WER {ours_wer:.1%}), faster-whisper int8 {whisper_s:.2f} s (WER {whisper_wer:.1%}): {whisper_s/stt:.2f}x faster-whisper's throughput")
three = ns["stt/three_clips_concurrent"] / 1e9
three_audio = float(re.search(r"audio_seconds three_clips ([0-9.]+)", log).group(1))
print(f"STT three clips ({three_audio:.0f} s) at once : ours {three:.2f} s ({three_audio/three:.0f}x real time), faster-whisper one after another {whisper_three_s:.2f} s: {whisper_three_s/three:.2f}x its throughput")
print(f"TTS first audio, two-clause sentence  : ours {tts_first*1000:.0f} ms (first piece of the first clause), piper-tts {piper_first_s*1000:.0f} ms (its first chunk): {tts_first/piper_first_s:.2f}x (two cores)")
print(f"TTS whole sentence ({tts_audio:.2f} s audio)  : ours {tts_all*1000:.0f} ms ({tts_audio/tts_all:.1f}x real time), piper-tts {piper_all_s*1000:.0f} ms ({tts_audio/piper_all_s:.1f}x): real-time factor {tts_all/piper_all_s:.2f}x piper-tts's")
PY
