#!/usr/bin/env bash
# Local Apache Kafka (KRaft, single broker+controller) from Maven Central jars.
#   scripts/kafka.sh fetch|up|down|status
# Env: CEM_KAFKA_PORT (9092), CEM_KAFKA_HOME (.cache/kafka under the repo), CEM_KAFKA_RUN_DIR
# (the broker's data and logs; default $CEM_KAFKA_HOME/run-<port>).
# Jars are cached in $CEM_KAFKA_HOME/libs, so a second `up` downloads nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${CEM_KAFKA_HOME:-$ROOT/.cache/kafka}"
PORT="${CEM_KAFKA_PORT:-9092}"
CPORT="${CEM_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
RUN="${CEM_KAFKA_RUN_DIR:-$HOME_DIR/run-$PORT}"
LIBS="$HOME_DIR/libs"
PIDFILE="$RUN/kafka.pid"

fetch() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  echo "kafka: fetching broker jars from Maven Central into $LIBS" >&2
  mkdir -p "$LIBS"
  # Maven 3.8 writes colour resets even in batch mode: its output goes to a log shown only on failure.
  mvn -q -B --no-transfer-progress -Dstyle.color=never -f "$ROOT/docker/kafka/pom.xml" \
      dependency:copy-dependencies -DoutputDirectory="$LIBS" -DincludeScope=runtime > "$HOME_DIR/fetch.log" 2>&1 \
    || { cat "$HOME_DIR/fetch.log" >&2; echo "kafka: fetching the jars failed, log above ($HOME_DIR/fetch.log)" >&2; exit 1; }
  touch "$LIBS/.complete"
}

is_up() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

java_cmd() {
  java -Xms256m -Xmx1g -XX:+UseG1GC -Dlog4j2.configurationFile="$ROOT/docker/kafka/log4j2.yaml" \
       -cp "$LIBS/*" "$@"
}

up() {
  fetch
  if is_up; then echo "kafka: already running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; return 0; fi
  mkdir -p "$RUN"
  sed -e "s#@PORT@#$PORT#g" -e "s#@CONTROLLER_PORT@#$CPORT#g" -e "s#@DATA_DIR@#$RUN#g" \
      "$ROOT/docker/kafka/server.properties" > "$RUN/server.properties"
  if [ ! -f "$RUN/logs/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format --standalone -t "cem-local-$PORT-cluster0" \
      -c "$RUN/server.properties" > "$RUN/format.log" 2>&1 \
      || { cat "$RUN/format.log" >&2; echo "kafka: storage format failed, see above" >&2; exit 1; }
  fi
  nohup bash -c "exec java -Xms256m -Xmx1g -XX:+UseG1GC -Dlog4j2.configurationFile='$ROOT/docker/kafka/log4j2.yaml' -cp '$LIBS/*' kafka.Kafka '$RUN/server.properties'" \
      > "$RUN/server.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 120); do
    if ! is_up; then tail -30 "$RUN/server.log" >&2; echo "kafka: broker exited during start-up, log above ($RUN/server.log)" >&2; exit 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && grep -q "Kafka Server started" "$RUN/server.log"; then
      echo "kafka: up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; return 0
    fi
    sleep 0.5
  done
  echo "kafka: not up after 60 s, see $RUN/server.log" >&2; exit 1
}

down() {
  if ! is_up; then echo "kafka: not running on port $PORT"; rm -f "$PIDFILE"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$PIDFILE"; echo "kafka: stopped"
}

status() {
  if is_up; then echo "kafka: running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; else echo "kafka: not running on port $PORT"; return 3; fi
}

wipe() { down; rm -rf "$RUN"; echo "kafka: data in $RUN removed"; }

case "${1:-}" in
  fetch) fetch ;; up) up ;; down) down ;; status) status ;; wipe) wipe ;;
  *) echo "usage: $0 fetch|up|down|status|wipe" >&2; exit 2 ;;
esac
