# Sourced by the load scripts: builds and starts the release server on an ephemeral
# loopback port with a fresh data folder and a known admin key, waits for its
# `listening on` line, and stops it (and removes the folder) when the script exits.
# Sets: $address, $key, $pid, $data. $SCAIGRID_LOAD_CONFIG, if set, is passed as --config;
# $SCAIGRID_LOAD_BINARY, if set, is the server binary run instead of this tree's build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scaigrid/target}"
server_binary="${SCAIGRID_LOAD_BINARY:-$CARGO_TARGET_DIR/release/scaigrid}"
[ -n "${SCAIGRID_LOAD_BINARY:-}" ] || cargo build --release --bin scaigrid -q
data="$(mktemp -d)"
key="sgk_load_platform_admin_key_0123456789"
SCAIGRID_BIND=127.0.0.1:0 SCAIGRID_DATA_DIR="$data" SCAIGRID_BOOTSTRAP_ADMIN_KEY="$key" \
  RUST_LOG="${RUST_LOG:-warn,scaigrid=info}" "$server_binary" serve ${SCAIGRID_LOAD_CONFIG:+--config "$SCAIGRID_LOAD_CONFIG"} 2>"$data/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 600); do grep -q "listening on" "$data/server.log" && break; sleep 0.1; done
address="$(grep -o 'listening on [0-9.:]*' "$data/server.log" | awk '{print $3}')"
[ -n "$address" ] || { echo "the server did not start:"; cat "$data/server.log"; exit 1; }
