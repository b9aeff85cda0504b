#!/usr/bin/env bash
# A local stand-in for Binance on 127.0.0.1, for trying `ticklet collect` without an exchange:
# the collector tests' exchange (harness/binance_server.py) serving recordings over the
# combined-stream websocket and the REST depth endpoint (the true book: the recorded
# snapshot plus every diff sent). Each collector connection gets the recording from its
# start, paced by the recorded receive times divided by --speed.
#
#   scripts/test-exchange.sh start [--speed N] RECORDING...   # serve in the background (N: 1, real time)
#   scripts/test-exchange.sh stop
#   scripts/test-exchange.sh status                           # exit 0 if running
#
# start and status print the settings that point the collector at it,
#   export TICKLET_COLLECT__WS_URL=ws://127.0.0.1:PORT
#   export TICKLET_COLLECT__DEPTH_URL=http://127.0.0.1:PORT/api/v3/depth   (/fapi/v1/depth for usdm/ recordings)
# so that `eval "$(scripts/test-exchange.sh start data/sample/spot/btcusdt_20240808.gz)"` sets them
# in the calling shell. RECORDING: websocket recordings of one market (SYMBOL_DATE.gz, as
# `ticklet collect` captures them and data/sample holds). TEST_EXCHANGE_RUN_DIR (default
# .test-exchange in the repository) holds its pid, settings and log.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/pidfile.sh"
run="${TEST_EXCHANGE_RUN_DIR:-$root/.test-exchange}"

say() { echo "test-exchange.sh: $*" >&2; }

print_env() {
  cat "$run/env"
  if [ -t 1 ]; then
    say "to set these in this shell: eval \"\$($0 status)\""
  fi
}

status() {
  [ -f "$run/pid" ] && kill -0 "$(cat "$run/pid")" 2>/dev/null && print_env
}

start() {
  local speed=1
  if [ "${1:-}" = --speed ]; then speed="${2:?--speed needs a number}"; shift 2; fi
  [ $# -gt 0 ] || { say "usage: $0 start [--speed N] RECORDING..."; exit 2; }
  local f
  for f in "$@"; do [ -f "$f" ] || { say "$f: no such recording"; exit 2; }; done
  if status >/dev/null 2>&1; then say "already running (stop it first)"; status; return 0; fi
  rm -rf "$run"; mkdir -p "$run"
  PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" nohup python3 - "$run/env" "$speed" "$@" \
    >"$run/exchange.log" 2>&1 <<'PY' &
import shlex
import sys
import threading
from pathlib import Path

from harness.binance_server import ReplayExchange

env, speed, files = Path(sys.argv[1]), float(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
market = "usdm" if files[0].parent.name == "usdm" else "spot"
ex = ReplayExchange(files, speed=speed).start()
tmp = env.with_suffix(".tmp")
tmp.write_text(f"export TICKLET_COLLECT__WS_URL={shlex.quote(ex.url)}\n"
               f"export TICKLET_COLLECT__DEPTH_URL={shlex.quote(ex.depth_url(market))}\n")
tmp.rename(env)
print(f"serving {len(ex.messages)} messages of {', '.join(map(str, files))} on {ex.url} ({market})", flush=True)
threading.Event().wait()  # until stop (SIGTERM)
PY
  local pid=$!
  echo "$pid" > "$run/pid"
  for _ in $(seq 1 600); do
    [ -f "$run/env" ] && { print_env; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  say "the exchange did not start; its log:"; tail -n 20 "$run/exchange.log" >&2
  stop; return 1
}

stop() { stop_pid "$run/pid" 100; }

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [--speed N] RECORDING...|stop|status" >&2; exit 2 ;;
esac
