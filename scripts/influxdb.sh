#!/usr/bin/env bash
# A real InfluxDB 2 (influxd, API only) on 127.0.0.1, for development and
# tests. No Docker, no download sites: built from source through the Go
# module proxy (Go) and crates.io (Flux's Rust library), once per machine.
#
#   scripts/influxdb.sh build          # build influxd $INFLUXDB_VERSION into the user cache (once)
#   scripts/influxdb.sh path           # print the cached binary's path (exit 1 when not built)
#   scripts/influxdb.sh start [PORT]   # start it on 127.0.0.1 (a free port by default), run the setup
#                                      # (org, bucket, user, token), wait until ready, print its settings;
#                                      # set up before: restarts with the same data, port and token
#   scripts/influxdb.sh stop           # stop it (keeps its data)
#   scripts/influxdb.sh wipe           # stop it and delete its data
#   scripts/influxdb.sh status         # exit 0 and print its settings if running
#
# The settings printed are shell lines: INFLUX_URL=, INFLUX_ORG=, INFLUX_BUCKET=,
# INFLUX_TOKEN= (what the tests read), then the same as ticklet's settings,
#   export TICKLET_INFLUX__URL=... TICKLET_INFLUX__ORG=... TICKLET_INFLUX__BUCKET=... TICKLET_INFLUX__TOKEN=...
# so that `eval "$(scripts/influxdb.sh start)"` points ticklet at the server (writing
# to it is still TICKLET_OUTPUT__INFLUX=true).
#
# The binary lands in ${XDG_CACHE_HOME:-~/.cache}/ticklet/influxdb-VERSION/influxd;
# the build's own caches (Go modules and build cache, cargo registry: about
# 3 GB) in .../influxdb-VERSION/build, removed after a successful build
# unless INFLUXDB_KEEP_BUILD=1. Needs Go (>= 1.22), cargo/rustc (rustup's
# stable) and a C compiler; a missing one is named in one line.
# INFLUXDB_RUN_DIR (default .influxdb/run in the repository) holds the data
# and log of the running server; INFLUXDB_ORG, INFLUXDB_BUCKET, INFLUXDB_TOKEN
# set what the setup creates (default ticklet, ticklet, a random token).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/pidfile.sh"
INFLUXDB_VERSION="${INFLUXDB_VERSION:-2.7.12}"
PKG_CONFIG_VERSION=v0.3.0            # influxdata/pkg-config: builds libflux with cargo
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ticklet"
home="$cache/influxdb-$INFLUXDB_VERSION"
bin="$home/influxd"
run="${INFLUXDB_RUN_DIR:-$root/.influxdb/run}"

say() { echo "influxdb.sh: $*" >&2; }
die() { say "$*"; exit 1; }

need_tools() {
  local missing=()
  command -v go >/dev/null || missing+=("Go (go, >= 1.22: https://go.dev/doc/install)")
  command -v cargo >/dev/null || missing+=("cargo (Rust stable: rustup)")
  command -v rustc >/dev/null || missing+=("rustc (Rust stable: rustup)")
  command -v cc >/dev/null || command -v gcc >/dev/null || missing+=("a C compiler (cc/gcc: apt-get install build-essential)")
  if [ ${#missing[@]} -gt 0 ]; then
    local list
    list="$(printf '%s, ' "${missing[@]}")"
    die "building InfluxDB $INFLUXDB_VERSION needs ${list%, }, not found on PATH"
  fi
}

build() {
  if [ -x "$bin" ]; then echo "$bin"; return 0; fi
  need_tools
  local b="$home/build"
  mkdir -p "$b"/{gopath,gocache,gobin,cargo,src}
  export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
  export GOPATH="$b/gopath" GOMODCACHE="$b/gopath/pkg/mod" GOCACHE="$b/gocache" GOBIN="$b/gobin"
  export CARGO_HOME="$b/cargo"
  # Flux's Rust library with the installed stable rustc, not the old release its
  # rust-toolchain file names (rustup would try to download it).
  export RUSTUP_TOOLCHAIN=stable
  # libflux (v0.196.x) denies lints that newer rustc versions added: cap them at warn.
  # RUSTFLAGS does not reach its host build through pkg-config; a rustc wrapper does.
  cat > "$b/rustc-wrapper" <<'WRAP'
#!/bin/sh
rustc="$1"; shift
case " $* " in
  *" --cap-lints "*) exec "$rustc" "$@" ;;
  *" --crate-name "*) exec "$rustc" "$@" --cap-lints warn ;;
esac
exec "$rustc" "$@"
WRAP
  chmod +x "$b/rustc-wrapper"
  export RUSTC_WRAPPER="$b/rustc-wrapper"
  export PATH="$GOBIN:$PATH"
  local t0=$SECONDS
  say "building InfluxDB $INFLUXDB_VERSION from source into $home (once per machine; ~10 min on 2 cores) ..."
  say "toolchains: $(go version | awk '{print $3}'), $(rustc --version | awk '{print "rustc " $2}'), $(cc --version | head -n1)"
  say "[1/3] go install github.com/influxdata/pkg-config@$PKG_CONFIG_VERSION"
  go install "github.com/influxdata/pkg-config@$PKG_CONFIG_VERSION"
  say "[2/3] go mod download github.com/influxdata/influxdb/v2@v$INFLUXDB_VERSION"
  local dir
  dir="$(go mod download -json "github.com/influxdata/influxdb/v2@v$INFLUXDB_VERSION" \
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  rm -rf "$b/src/influxdb"
  cp -r "$dir" "$b/src/influxdb"
  chmod -R u+w "$b/src/influxdb"
  say "[3/3] go build ./cmd/influxd (Go modules, then Flux's Rust library with cargo: the long part)"
  (cd "$b/src/influxdb" && \
   go build -tags sqlite_foreign_keys,sqlite_json -ldflags "-s -w -X main.version=$INFLUXDB_VERSION" \
     -o "$bin.tmp" ./cmd/influxd)
  mv "$bin.tmp" "$bin"
  say "built $bin in $((SECONDS - t0)) s"
  if [ "${INFLUXDB_KEEP_BUILD:-0}" != 1 ]; then
    chmod -R u+w "$b" && rm -rf "$b"
  fi
  echo "$bin"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() {
  local url=$1 pid=$2
  for _ in $(seq 1 200); do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "influxd exited; last log lines:"; tail -n 40 "$run/influxd.log" >&2; return 1
    fi
    if curl -fsS -o /dev/null "$url/health" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  say "influxd not ready after 20 s"; tail -n 40 "$run/influxd.log" >&2; return 1
}

launch() {
  local port=$1
  nohup "$bin" --http-bind-address "127.0.0.1:$port" --bolt-path "$run/influxd.bolt" \
        --engine-path "$run/engine" --sqlite-path "$run/influxd.sqlite" --reporting-disabled \
        --log-level "${INFLUXDB_LOG_LEVEL:-warn}" >>"$run/influxd.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" > "$run/pid"
  wait_ready "http://127.0.0.1:$port" "$pid"
}

start() {
  [ -x "$bin" ] || die "influxd $INFLUXDB_VERSION is not built: run \`scripts/influxdb.sh build\` (once, ~10 min)"
  if status >/dev/null 2>&1; then status; return 0; fi
  if [ -f "$run/env" ]; then  # set up before: the same data, port and token
    local url; url="$(sed -n 's/^INFLUX_URL=//p' "$run/env")"
    launch "${url##*:}"
    print_env; return 0
  fi
  local port="${1:-$(free_port)}"
  local org="${INFLUXDB_ORG:-ticklet}" bucket="${INFLUXDB_BUCKET:-ticklet}"
  local token="${INFLUXDB_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')}"
  local password
  password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(16))')"
  rm -rf "$run"; mkdir -p "$run"
  launch "$port"
  local url="http://127.0.0.1:$port" body
  body="$(python3 -c 'import json,sys; print(json.dumps({"username": "ticklet", "password": sys.argv[1],
          "org": sys.argv[2], "bucket": sys.argv[3], "token": sys.argv[4], "retentionPeriodSeconds": 0}))' \
          "$password" "$org" "$bucket" "$token")"
  curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' --data "$body" "$url/api/v2/setup" \
    || { say "setup failed"; stop; return 1; }
  (umask 077; printf 'INFLUX_URL=%q\nINFLUX_ORG=%q\nINFLUX_BUCKET=%q\nINFLUX_TOKEN=%q\n' \
                     "$url" "$org" "$bucket" "$token" > "$run/env")
  print_env
}

# The server's settings (the INFLUX_* lines of $run/env), then as ticklet reads
# them; eval-able. A hint on stderr when a person reads it on a terminal.
print_env() {
  cat "$run/env"
  sed -n 's/^INFLUX_\(URL\|ORG\|BUCKET\|TOKEN\)=/export TICKLET_INFLUX__\1=/p' "$run/env"
  if [ -t 1 ]; then
    say "to set these in this shell: eval \"\$($0 status)\"; TICKLET_OUTPUT__INFLUX=true turns the output on"
  fi
}

status() {
  [ -f "$run/pid" ] && kill -0 "$(cat "$run/pid")" 2>/dev/null && print_env
}

stop() { stop_pid "$run/pid" 100; }

wipe() {
  stop
  rm -rf "$run"
}

path() {
  [ -x "$bin" ] || { say "influxd $INFLUXDB_VERSION is not built ($bin)"; return 1; }
  echo "$bin"
}

case "${1:-}" in
  build) build ;;
  path) path ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  wipe) wipe ;;
  status) status ;;
  *) echo "usage: $0 build|path|start [PORT]|stop|wipe|status" >&2; exit 2 ;;
esac
