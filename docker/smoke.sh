#!/usr/bin/env bash
# Smoke test of the scaled deployment (docker/compose.yml, or the same topology as
# processes): through each edge, speech, its transcription, a transcription stream and
# a speech stream; a chat completion when SMOKE_CHAT_UPSTREAM is set. See smoke.py.
#   SCAIGRID_BOOTSTRAP_ADMIN_KEY=... docker/smoke.sh
# With compose, the key is the one in docker/.env.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${SCAIGRID_BOOTSTRAP_ADMIN_KEY:-}" ] && [ -f "$here/.env" ]; then
  SCAIGRID_BOOTSTRAP_ADMIN_KEY="$(sed -n 's/^SCAIGRID_BOOTSTRAP_ADMIN_KEY=//p' "$here/.env")"
  export SCAIGRID_BOOTSTRAP_ADMIN_KEY
fi
exec python3 "$here/smoke.py"
