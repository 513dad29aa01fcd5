#!/usr/bin/env bash
# Media decode speed against ffmpeg, on one core, in one run: each fixture decoded to
# 16 kHz mono by ffmpeg (-threads 1) and by our criterion bench (both pinned to core 0).
# ffmpeg's process start-up is taken out: it decodes the file once and LOOPS+1 times
# (-stream_loop) in one process each, and the difference divided by LOOPS is the cost
# of one pass. Prints x-real-time for both and our speed / ffmpeg's.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
media/fixtures/make.sh
dir=media/fixtures/generated
loops="${LOOPS:-40}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo bench --bench media_decode --no-run -q 2>/dev/null   # build on every core first
taskset -c 0 cargo bench --bench media_decode -- --output-format bencher --warm-up-time 1 --measurement-time 3 2>/dev/null | tee "$log" >/dev/null
printf '%-22s %10s %12s %12s %8s\n' file audio_s ours_xRT ffmpeg_xRT ratio
for name in speech_16k_s16.wav speech_48k_f32.wav speech.mp3 speech.flac speech.ogg speech.opus speech.webm speech.m4a; do
  seconds=$(awk -v n="$name" '$1=="audio_seconds" && $2==n {print $3}' "$log")
  ours_ns=$(awk -v n="decode_to_16k_mono/$name" '$2==n {gsub(",","",$5); print $5}' "$log")
  run() { taskset -c 0 ffmpeg -v error -threads 1 -stream_loop "$1" -i "$dir/$name" -ac 1 -ar 16000 -f f32le -y /dev/null; }
  t0=$(date +%s.%N); run 0; t1=$(date +%s.%N); run "$loops"; t2=$(date +%s.%N)
  python3 - "$name" "$seconds" "$ours_ns" "$t0" "$t1" "$t2" "$loops" <<'PY'
import sys
name, seconds, ours_ns = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
t0, t1, t2, loops = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
ffmpeg_s = ((t2 - t1) - (t1 - t0)) / loops
ours_s = ours_ns / 1e9
print(f"{name:<22} {seconds:>10.2f} {seconds/ours_s:>12.0f} {seconds/ffmpeg_s:>12.0f} {ffmpeg_s/ours_s:>8.2f}")
PY
done
awk '$2 ~ /^stream_vs_whole|^preflight/ {print}' "$log"
