#!/usr/bin/env bash
# Gateway overhead: chat completions at a fixed rate straight to an in-process upstream
# and through the release server in the same run (auth, rate limits, a budget and
# accounting on), with the server's resident memory before and after.
# Usage: benches/gateway_load.sh [seconds per phase] [requests/s] [--soak] [--stall]
# (`--soak`: only the gateway phase, for a long run watching memory; `--stall` also
# stops the server for 2 s after 2 minutes, so a pile of requests bursts in when it
# resumes, and the samples show whether the memory that burst took comes back.)
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
seconds="${1:-20}"
rate="${2:-2000}"
export RUST_LOG="${RUST_LOG:-warn,scaigrid=info,scaigrid::access=warn}"
# Build the bench first: its build relinks the server binary with dev features.
cargo bench --bench gateway_load --no-run -q 2>/dev/null
. benches/release_server.sh
rss() { awk '/VmRSS/ {rss = $2} /RssAnon/ {anon = $2} END {print rss " kB (anonymous " anon " kB)"}' "/proc/$pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
echo "server at $address; RSS at start: $(rss)"
before="$(cpu_ticks)"
# A soak samples resident memory every minute, so growth shows its shape (a plateau is
# allocator warm-up, a straight line is a leak).
if [ "${3:-}" = "--soak" ]; then
  started=$SECONDS
  ( while sleep 60; do echo "  RSS after $((SECONDS - started)) s: $(rss)"; done ) &
  sampler=$!
  if [ "${4:-}" = "--stall" ]; then
    ( sleep 120; kill -STOP "$pid"; sleep 2; kill -CONT "$pid"; echo "  (stopped the server for 2 s at 120 s)"
      sleep 5; echo "  RSS 5 s after the stall: $(rss)" ) &
  fi
fi
"$(ls -t "$CARGO_TARGET_DIR"/release/deps/gateway_load-* | grep -v "\.d$" | head -1)" --gateway "http://$address" --key "$key" --seconds "$seconds" --rate "$rate" ${3:-}
after="$(cpu_ticks)"
[ -z "${sampler:-}" ] || kill "$sampler"
requests=$(( seconds * rate + rate / 2 ))
# Server CPU over the whole run divided by the requests it proxied (the direct phase
# leaves it idle).
echo "RSS at end: $(rss); $(curl -s "http://$address/metrics" | grep '^scaigrid_accounting_flush_lag_seconds' || echo 'no flush lag exported')"
echo "server CPU: $(( (after - before) * 1000 / $(getconf CLK_TCK) )) ms for ~$requests gateway requests" \
  "($(( (after - before) * 1000000 / $(getconf CLK_TCK) / requests )) us each)"
