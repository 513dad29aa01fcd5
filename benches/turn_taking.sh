#!/usr/bin/env bash
# Turn taking on real speech: false cut-ins per minute and the wait at sentence ends of
# fixed pauses (server_vad) and semantic_vad, on the test recordings (a release server
# with the real models on loopback, then benches/turn_taking.rs).
# Usage: benches/turn_taking.sh [clip.wav ...]
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
cd "$(dirname "$0")/.."
models/fetch >/dev/null
clips=("$@")
[ ${#clips[@]} -gt 0 ] || clips=(models/cache/test-audio/two_cities.wav models/cache/test-audio/endgame_nagg_nell.wav models/cache/test-audio/beckett.wav)
cargo bench --bench turn_taking --no-run -q 2>/dev/null
. benches/release_server.sh
echo "server at $address; $(nproc) cores"
cargo bench --bench turn_taking -q -- --url "http://$address" --key "$key" "${clips[@]}"
