#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft: broker + controller in one
# JVM) on 127.0.0.1, for development and tests. No Docker.
#
#   scripts/kafka.sh fetch         # Kafka jars from Maven Central into .kafka/libs
#   scripts/kafka.sh start [PORT]  # format storage, start, wait until ready (free port by default)
#   scripts/kafka.sh stop          # stop it
#   scripts/kafka.sh status        # exit 0 if running
#   scripts/kafka.sh kill          # kill -9 it (a crash: configuration and data stay)
#   scripts/kafka.sh restart       # start it again on the same ports with the same data
#
# start, status and restart print the setting that points ticklet at the broker,
#   export TICKLET_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:PORT
# so that `eval "$(scripts/kafka.sh start)"` sets it in the calling shell.
#
# KAFKA_HOME (default .kafka in the repository) holds the jars; KAFKA_RUN_DIR
# (default $KAFKA_HOME/run) the configuration, data and log of the running broker.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/pidfile.sh"
home="${KAFKA_HOME:-$root/.kafka}"
libs="$home/libs"
run="${KAFKA_RUN_DIR:-$home/run}"

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is required to fetch Kafka" >&2; exit 1; }
  mkdir -p "$libs"
  # Maven's output goes to a log (it writes colour codes even when told not to), shown if it fails.
  if ! mvn -q -B -Dstyle.color=never -f "$root/scripts/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime >"$home/fetch.log" 2>&1; then
    echo "kafka.sh: fetching Kafka's jars with Maven failed; the end of its log ($home/fetch.log):" >&2
    tail -n 40 "$home/fetch.log" >&2; exit 1
  fi
  touch "$libs/.complete"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() {
  local port=$1 pid=$2
  for _ in $(seq 1 120); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "kafka.sh: broker exited; last log lines:" >&2; tail -n 40 "$run/kafka.log" >&2; return 1
    fi
    if grep -q "Kafka Server started" "$run/kafka.log" 2>/dev/null \
       && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  echo "kafka.sh: broker not ready after 60 s" >&2; tail -n 40 "$run/kafka.log" >&2; return 1
}

start() {
  fetch
  if status >/dev/null 2>&1; then status; return 0; fi
  local port="${1:-$(free_port)}" cport
  cport="$(free_port)"
  rm -rf "$run"; mkdir -p "$run/data"
  cat > "$run/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$run/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
# Replayed ticks carry their original (old) timestamps: never expire by time.
log.retention.ms=-1
PROPS
  cat > "$run/log4j.properties" <<'PROPS'
log4j.rootLogger=WARN, stdout
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
PROPS
  local cluster
  cluster="$(java "${jopts[@]}" -cp "$libs/*" kafka.tools.StorageTool random-uuid)"
  java "${jopts[@]}" -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster" \
       -c "$run/server.properties" >"$run/format.log" 2>&1
  echo "127.0.0.1:$port" > "$run/bootstrap"
  launch
}

jopts=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true "-Dlog4j.configuration=file:$run/log4j.properties")
# More JVM options, e.g. KAFKA_JVM_OPTS="-Xlog:gc:file=/tmp/kafka-gc.log" to see the broker's pauses.
read -r -a extra_jopts <<< "${KAFKA_JVM_OPTS:-}"
jopts+=("${extra_jopts[@]}")

# Start the JVM on the configuration and data in $run; wait until it serves.
launch() {
  local port pid
  port="$(cut -d: -f2 "$run/bootstrap")"
  nohup java "${jopts[@]}" -cp "$libs/*" kafka.Kafka "$run/server.properties" \
        >"$run/kafka.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" > "$run/pid"
  wait_ready "$port" "$pid"
  print_env
}

# What to export (eval-able); a hint on stderr when a person reads it on a terminal.
print_env() {
  printf 'export TICKLET_KAFKA__BOOTSTRAP_SERVERS=%q\n' "$(cat "$run/bootstrap")"
  if [ -t 1 ]; then
    echo "kafka.sh: to set it in this shell: eval \"\$($0 status)\"" >&2
  fi
}

# kill -9: the broker dies as in a crash, its configuration and data stay for restart.
crash() {
  [ -f "$run/pid" ] || { echo "kafka.sh: no broker in $run" >&2; return 1; }
  local pid; pid="$(cat "$run/pid")"
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$run/pid"
}

# The same broker again (same ports, same data), e.g. after kill.
restart() {
  [ -f "$run/server.properties" ] && [ -f "$run/bootstrap" ] \
    || { echo "kafka.sh: no broker configured in $run; use start" >&2; return 1; }
  if status >/dev/null 2>&1; then status; return 0; fi
  fetch
  [ ! -f "$run/kafka.log" ] || cat "$run/kafka.log" >> "$run/kafka.log.old"
  launch
}

status() {
  [ -f "$run/pid" ] && kill -0 "$(cat "$run/pid")" 2>/dev/null && print_env
}

stop() { stop_pid "$run/pid" 300; }

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  kill) crash ;;
  restart) restart ;;
  *) echo "usage: $0 fetch|start [PORT]|stop|status|kill|restart" >&2; exit 2 ;;
esac
