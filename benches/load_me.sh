#!/usr/bin/env bash
# Load run: GET /v1/me with an API key against the release server on loopback, with
# GET /health/live in the same run as the reference. Needs wrk (Debian `wrk`).
# Usage: benches/load_me.sh [seconds] [connections]
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
seconds="${1:-15}"
connections="${2:-64}"
export RUST_LOG="${RUST_LOG:-info}"
. benches/release_server.sh
echo "server at $address (RUST_LOG=${RUST_LOG:-info}); ${seconds}s, ${connections} connections, 2 wrk threads"
echo "== reference: GET /health/live"
wrk -t2 -c"$connections" -d"${seconds}s" --latency "http://$address/health/live" | grep -E 'Requests/sec|Latency|50%|99%'
echo "== GET /v1/me with an API key"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $key" "http://$address/v1/me" | grep -E 'Requests/sec|Latency|50%|99%|Non-2xx'
