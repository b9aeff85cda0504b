#!/usr/bin/env bash
# Run the forecast dataflow with Bytewax recovery: create the recovery store
# on first start, then resume from it on every restart.
#   RECOVERY_DIR (default /recovery), SNAPSHOT_S (default 1: see the README, Crash recovery), WORKERS (default 1)
set -euo pipefail
dir="${RECOVERY_DIR:-/recovery}"
if ! ls "$dir"/part-*.sqlite3 >/dev/null 2>&1; then
  mkdir -p "$dir"
  python -m bytewax.recovery "$dir" 1
fi
exec python -m bytewax.run dataflows.forecast -r "$dir" -s "${SNAPSHOT_S:-1}" -b 0 -w "${WORKERS:-1}"
