#!/usr/bin/env bash
# Run the forecast dataflow with Bytewax recovery (the container's entry point),
# and run it again from its last snapshot when it crashes.
#   RECOVERY_DIR (default /recovery), SNAPSHOT_S (default 1: see the README, Crash recovery), WORKERS (default 1),
#   RESTART_DELAY_S (default 5: the wait before a restart)
# A directory with no recovery store gets one: the dataflow logs a fresh start.
# Exit status, the dataflow's: 0 when its input ended; 2 (a bad setting, a damaged or mismatched recovery
# store) and 74 (an output that cannot be written) stop the script, since the same command would fail the
# same way until someone fixes the cause. Any other status (75: Kafka unreachable past the outage timeout,
# a crash, a kill) restarts the dataflow after RESTART_DELAY_S.
set -uo pipefail
dir="${RECOVERY_DIR:-/recovery}"
if ! ls "$dir"/part-*.sqlite3 >/dev/null 2>&1; then
  echo "run-forecast: no recovery store in $dir: creating one" >&2
  mkdir -p "$dir" && python -m bytewax.recovery "$dir" 1 || exit 2
fi
child=0
trap 'trap - TERM INT; [ "$child" -gt 0 ] && kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM INT
while true; do
  python -m bytewax.run dataflows.forecast -r "$dir" -s "${SNAPSHOT_S:-1}" -b 0 -w "${WORKERS:-1}" &
  child=$!
  wait "$child"
  status=$?
  child=0
  case "$status" in
    0) exit 0 ;;
    2 | 74)
      echo "run-forecast: the dataflow stopped with status $status (the line above says why); not restarting it" >&2
      exit "$status" ;;
  esac
  echo "run-forecast: the dataflow exited with status $status; restarting it from the last snapshot in" \
    "${RESTART_DELAY_S:-5} s" >&2
  sleep "${RESTART_DELAY_S:-5}"
done
