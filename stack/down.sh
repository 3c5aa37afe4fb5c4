#!/usr/bin/env bash
# Stop only the brokers up.sh started (by recorded pid); brokers found running are left alone.
# Usage: down.sh [kafka] [rabbitmq] [registry]   (all three when none is named)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# SIGTERM to a process this script's up.sh recorded, SIGKILL when it outlives $3 half-seconds.
stop_pid() {
  local name="$1" f="$STATE/$2.pid" tries="$3" pid
  [ -f "$f" ] || { say "$name: not started by us, leaving it"; return; }
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    say "$name: stopping pid $pid"
    kill "$pid"
    for _ in $(seq 1 "$tries"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { say "$name: still running after $((tries / 2)) s, killing"; kill -9 "$pid"; }
  fi
  rm -f "$f"
}

# The record of who started a broker goes with the broker, when it is this stack's.
forget() { [ "$(cat "$(record "$1" "$2")" 2>/dev/null)" = "$STATE" ] && rm -f "$(record "$1" "$2")"; return 0; }

stop_kafka() {   # SIGTERM runs the broker's controlled shutdown
  [ -f "$STATE/kafka.pid" ] && forget kafka "$KAFKA_PORT"
  stop_pid Kafka kafka 120
}

stop_rabbitmq() {
  local f="$STATE/rabbitmq.pid" node pid
  [ -f "$f" ] || { say "RabbitMQ: not started by us, leaving it"; return; }
  forget rabbitmq "$AMQP_PORT"
  node="$(cat "$STATE/rabbitmq.node" 2>/dev/null || echo rabbit@localhost)"
  pid="$(cat "$f")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    say "RabbitMQ: stopping $node (pid $pid)"
    as_root rabbitmqctl -n "$node" stop >/dev/null 2>&1 || kill "$pid"
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$f" "$STATE/rabbitmq.node"
}

stop_registry() { stop_pid "schema registry" registry 60; }

for broker in "${@:-kafka rabbitmq registry}"; do
  for b in $broker; do
    case "$b" in
      kafka) stop_kafka ;; rabbitmq) stop_rabbitmq ;; registry) stop_registry ;;
      *) die "unknown broker $b (kafka, rabbitmq, registry)" ;;
    esac
  done
done
