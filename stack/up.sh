#!/usr/bin/env bash
# Start the local Kafka (KRaft, 127.0.0.1:9092) and RabbitMQ (127.0.0.1:5672, guest/guest), and
# the schema registry (Apicurio, 127.0.0.1:8081) when asked for or when AVRO_FRAMING=registry.
# Idempotent: a broker already listening on its port is reused and left alone by down.sh,
# which stops only what this script started (recorded in .stack/*.pid). A reused broker keeps the
# TLS material and passwords of the stack that started it (owner.sh finds them): this says whose.
# Usage: up.sh [kafka] [rabbitmq] [registry]   (kafka and rabbitmq when none is named)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

kafka_jars() {
  if [ ! -f "$STACK/lib/.complete" ] || [ "$STACK/pom.xml" -nt "$STACK/lib/.complete" ]; then
    command -v mvn >/dev/null || die "Maven is needed to fetch the Kafka jars (apt-get install maven)"
    say "fetching Kafka jars from Maven Central"
    rm -rf "$STACK/lib"
    mvn -B -q -Dstyle.color=never -f "$STACK/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$STACK/lib"
    touch "$STACK/lib/.complete"
  fi
}

# SCRAM credentials live in the cluster metadata, so they are added once the broker runs.
add_scram_user() {
  local cp="$1" dir="$2" user pw mech
  user="$(cat "$TLS/kafka-user")"; pw="$(cat "$TLS/kafka-password")"
  for mech in SCRAM-SHA-512 SCRAM-SHA-256; do   # one mechanism per request, Kafka refuses two
    java -Xmx128m -Dlog4j2.configurationFile="$STACK/tools-log4j2.properties" -cp "$cp" kafka.admin.ConfigCommand \
         --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter --entity-type users --entity-name "$user" \
         --add-config "$mech=[password=$pw]" >"$dir/logs/scram.log" 2>&1 \
      || { sed "s/$pw/***/g" "$dir/logs/scram.log" | tail -5; die "could not add the $mech user"; }
  done
  rm -f "$dir/logs/scram.log"
}

# A reused broker: when its TLS listener is not this stack's, say whose it is, or why none is found.
reused() {
  local owner
  if owner="$(bash "$STACK/owner.sh" "$1" 2>&1)"; then
    [ "$owner" = "$STATE" ] || say "$2: started by another $(where "$owner"), with its certificates and passwords" \
      "($owner/tls), which the tests use; for this checkout's: \`make down\` there, then \`make up\` here"
  else
    say "$2: warning, the TLS tests will fail: ${owner#"[stack] error: "}"
  fi
}

start_kafka() {
  if listening "$KAFKA_PORT"; then
    say "Kafka: something already listens on 127.0.0.1:$KAFKA_PORT, reusing it"; reused kafka Kafka; return
  fi
  command -v java >/dev/null || die "Java 17 is needed for Kafka"
  kafka_jars
  local dir="$STATE/kafka" cp="$STACK/lib/*"
  mkdir -p "$dir/logs"
  sed -e "s#@DATA_DIR@#$dir/data#" -e "s#@KAFKA_PORT@#$KAFKA_PORT#g" \
      -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" -e "s#@SECURE_PORT@#$KAFKA_SECURE_PORT#g" \
      -e "s#@TLS_DIR@#$TLS#g" -e "s#@SASL_USER@#$(cat "$TLS/kafka-user")#g" \
      -e "s#@SASL_PASSWORD@#$(cat "$TLS/kafka-password")#g" \
      "$STACK/server.properties.in" > "$dir/server.properties"
  chmod 0600 "$dir/server.properties"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local tools="-Dlog4j2.configurationFile=$STACK/tools-log4j2.properties" id
    id="$(java $tools -cp "$cp" kafka.tools.StorageTool random-uuid)"
    java -Xmx256m $tools -cp "$cp" kafka.tools.StorageTool format --standalone \
         -t "$id" -c "$dir/server.properties" --ignore-formatted >"$dir/logs/format.log" 2>&1 \
      || { cat "$dir/logs/format.log"; die "Kafka storage format failed"; }
  fi
  say "Kafka: starting (log: $dir/logs/broker.log)"
  : >"$dir/logs/broker.log"
  setsid java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
       -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
       -Dlog4j2.configurationFile="$STACK/log4j2.properties" -Dkafka.logs.dir="$dir/logs" \
       -cp "$cp" kafka.Kafka "$dir/server.properties" >>"$dir/logs/broker.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$STATE/kafka.pid"
  remember kafka "$KAFKA_PORT"
  for _ in $(seq 1 240); do
    if grep -q "Kafka Server started" "$dir/logs/broker.log" && listening "$KAFKA_PORT"; then
      add_scram_user "$cp" "$dir"
      say "Kafka: ready on 127.0.0.1:$KAFKA_PORT, SASL_SSL on 127.0.0.1:$KAFKA_SECURE_PORT (pid $pid)"; return
    fi
    kill -0 "$pid" 2>/dev/null || { tail -40 "$dir/logs/broker.log"; rm -f "$STATE/kafka.pid"; die "Kafka exited during start"; }
    sleep 0.5
  done
  tail -40 "$dir/logs/broker.log"; die "Kafka did not become ready in 120 s"
}

# A password user and a vhost besides guest@/ , for the TLS and credentials tests.
add_amqp_user() {
  local ctl=(as_root rabbitmqctl -n "$1" -q) user pw
  user="$(cat "$TLS/amqp-user")"; pw="$(cat "$TLS/amqp-password")"
  "${ctl[@]}" add_user "$user" "$pw" >/dev/null 2>&1 || "${ctl[@]}" change_password "$user" "$pw" >/dev/null
  "${ctl[@]}" add_vhost openstack >/dev/null 2>&1 || true
  for vhost in / openstack; do "${ctl[@]}" set_permissions -p "$vhost" "$user" '.*' '.*' '.*' >/dev/null; done
}

start_rabbitmq() {
  if listening "$AMQP_PORT"; then
    say "RabbitMQ: something already listens on 127.0.0.1:$AMQP_PORT, reusing it"; reused rabbitmq RabbitMQ; return
  fi
  if ! command -v rabbitmq-server >/dev/null; then
    say "RabbitMQ: installing Debian's rabbitmq-server"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >"$STATE/apt.log" 2>&1 \
      || { as_root apt-get update -q >>"$STATE/apt.log" 2>&1 \
           && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >>"$STATE/apt.log" 2>&1; } \
      || { tail -20 "$STATE/apt.log"; die "could not install rabbitmq-server"; }
  fi
  say "RabbitMQ: starting"
  local node="${RABBITMQ_NODENAME:-rabbit@localhost}" conf
  # RabbitMQ runs as its own user, which may not read our state dir (pytest's tmp dirs are 0700):
  # its config and TLS files go to its home.
  conf="$(getent passwd rabbitmq | cut -d: -f6)/pipeline/$node"
  as_root mkdir -p "$conf"
  as_root cp "$TLS/ca.pem" "$TLS/server.pem" "$TLS/server.key" "$conf/"
  as_root tee "$conf/rabbitmq.conf" >/dev/null <<CONF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
listeners.ssl.default = 127.0.0.1:$AMQP_TLS_PORT
ssl_options.cacertfile = $conf/ca.pem
ssl_options.certfile = $conf/server.pem
ssl_options.keyfile = $conf/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
CONF
  as_root chown -R rabbitmq: "$conf"; as_root chmod 0600 "$conf/server.key"
  as_root env RABBITMQ_CONFIG_FILE="$conf/rabbitmq.conf" RABBITMQ_DIST_PORT="$RABBITMQ_DIST_PORT" \
      RABBITMQ_NODENAME="$node" rabbitmq-server -detached >"$STATE/rabbitmq.out" 2>&1
  echo "${RABBITMQ_NODENAME:-rabbit@localhost}" >"$STATE/rabbitmq.node"
  remember rabbitmq "$AMQP_PORT"
  for _ in $(seq 1 240); do
    if listening "$AMQP_PORT" && as_root rabbitmqctl -n "$(cat "$STATE/rabbitmq.node")" -q await_startup >/dev/null 2>&1; then
      as_root rabbitmqctl -n "$(cat "$STATE/rabbitmq.node")" eval 'list_to_integer(os:getpid()).' >"$STATE/rabbitmq.pid" 2>/dev/null || true
      add_amqp_user "$(cat "$STATE/rabbitmq.node")"
      say "RabbitMQ: ready on 127.0.0.1:$AMQP_PORT ($(as_root rabbitmqctl -n "$(cat "$STATE/rabbitmq.node")" -q version 2>/dev/null | tr -cd "0-9."))"
      return
    fi
    sleep 0.5
  done
  cat "$STATE/rabbitmq.out"; tail -20 "/var/log/rabbitmq/$(cat "$STATE/rabbitmq.node").log" 2>/dev/null
  die "RabbitMQ did not become ready in 120 s"
}

# Apicurio Registry is a Quarkus fast-jar; its release is on Maven Central as a tar.gz. The
# fetched version is recorded, so changing APICURIO_VERSION in lib.sh fetches the new one.
registry_app() {
  [ "$(cat "$APICURIO_DIR/.complete" 2>/dev/null)" = "$APICURIO_VERSION" ] && return
  command -v mvn >/dev/null || die "Maven is needed to fetch Apicurio Registry (apt-get install maven)"
  say "fetching Apicurio Registry $APICURIO_VERSION from Maven Central"
  rm -rf "$APICURIO_DIR"; mkdir -p "$APICURIO_DIR"
  mvn -B -q -Dstyle.color=never dependency:copy -Dmdep.useBaseVersion=true \
      -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" -DoutputDirectory="$APICURIO_DIR" \
    || die "could not fetch io.apicurio:apicurio-registry-app:$APICURIO_VERSION"
  tar -xzf "$APICURIO_DIR"/apicurio-registry-app-*.tar.gz -C "$APICURIO_DIR" && rm -f "$APICURIO_DIR"/*.tar.gz
  echo "$APICURIO_VERSION" >"$APICURIO_DIR/.complete"
}

# Apicurio 3 is built for Java 21 (class file 65); the default java may be 17 (Kafka's).
registry_java() {
  local candidate major
  for candidate in ${REGISTRY_JAVA:-} java /usr/lib/jvm/temurin-25-jdk-amd64/bin/java /usr/lib/jvm/*/bin/java; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    major="$("$candidate" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    [ "${major%%.*}" -ge 21 ] 2>/dev/null && { echo "$candidate"; return; }
  done
  die "Apicurio Registry needs Java 21 or newer (none found; set REGISTRY_JAVA to its java)"
}

start_registry() {
  if listening "$REGISTRY_PORT"; then
    say "schema registry: something already listens on 127.0.0.1:$REGISTRY_PORT, reusing it"; return
  fi
  registry_app
  local java dir="$STATE/registry" pid
  java="$(registry_java)"
  mkdir -p "$dir"
  say "schema registry: starting Apicurio $APICURIO_VERSION (log: $dir/registry.log)"
  : >"$dir/registry.log"
  # in-memory storage: the local registry forgets its schemas when stopped, and the processes
  # register theirs again at start
  (cd "$APICURIO_DIR" && exec setsid "$java" -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
       -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
       -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$REGISTRY_MANAGEMENT_PORT" \
       -Dquarkus.log.console.color=false -jar quarkus-run.jar >>"$dir/registry.log" 2>&1 </dev/null) &
  pid=$!
  echo "$pid" >"$STATE/registry.pid"
  for _ in $(seq 1 240); do
    if http_ok "$REGISTRY_PORT" /apis/ccompat/v7/subjects; then
      say "schema registry: ready on http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7 (pid $pid)"; return
    fi
    kill -0 "$pid" 2>/dev/null || { tail -40 "$dir/registry.log"; rm -f "$STATE/registry.pid"; die "Apicurio exited during start"; }
    sleep 0.5
  done
  tail -40 "$dir/registry.log"; die "Apicurio did not become ready in 120 s"
}

default="kafka rabbitmq"
[ "${AVRO_FRAMING:-}" = registry ] && default="$default registry"
bash "$STACK/certs.sh"
kafka_jars   # also when a running broker is reused: tests start private brokers from these jars
for broker in "${@:-$default}"; do
  for b in $broker; do
    case "$b" in
      kafka) start_kafka ;; rabbitmq) start_rabbitmq ;; registry) start_registry ;;
      *) die "unknown broker $b (kafka, rabbitmq, registry)" ;;
    esac
  done
done
