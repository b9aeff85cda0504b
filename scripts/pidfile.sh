# Sourced by scripts/kafka.sh, influxdb.sh and test-exchange.sh: stopping the server a pid file names.

# stop_pid PIDFILE TENTHS: SIGTERM to the process PIDFILE names, up to TENTHS tenths of a second
# for it to end, then SIGKILL; the pid file goes. Nothing to do without a pid file.
stop_pid() {
  [ -f "$1" ] || return 0
  local pid; pid="$(cat "$1")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 "$2"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}
