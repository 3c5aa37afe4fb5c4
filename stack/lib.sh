# Shared by up.sh and down.sh: where the local stack keeps its state, and small helpers.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="$ROOT/stack"
STATE="${PIPELINE_STACK_DIR:-$ROOT/.stack}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd -P)"   # absolute: it is recorded for other checkouts to find
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
AMQP_PORT="${AMQP_PORT:-5672}"
KAFKA_SECURE_PORT="${KAFKA_SECURE_PORT:-$((KAFKA_PORT + 2))}"
AMQP_TLS_PORT="${AMQP_TLS_PORT:-$((AMQP_PORT - 1))}"
RABBITMQ_DIST_PORT="${RABBITMQ_DIST_PORT:-$((AMQP_PORT + 20000))}"
REGISTRY_PORT="${REGISTRY_PORT:-8081}"
REGISTRY_MANAGEMENT_PORT="${REGISTRY_MANAGEMENT_PORT:-$((REGISTRY_PORT + 1))}"
APICURIO_VERSION=3.3.3
APICURIO_DIR="$STACK/apicurio"
TLS="$STATE/tls"

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }
# Under `set -e` a failing command ends a script without a word, and a test that started it can only
# report empty output: say which command failed, where, and with what status (-E: in functions too).
set -E
trap '_rc=$?; printf "[stack] error: %s line %s: \`%s\` exited %s\n" "${0##*/}" "$LINENO" "$BASH_COMMAND" "$_rc" >&2' ERR

# True when something accepts TCP connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when 127.0.0.1:$1 answers GET $2 with 200 (bash only: a fresh machine may lack curl).
http_ok() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3 \
    && head -1 <&3 | grep -q ' 200 ') 2>/dev/null
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Who started a broker: up.sh records its state dir for each broker it starts (down.sh removes the
# record), so that a checkout reusing the broker, and its tests, find the TLS material and passwords
# the broker was set up with. Args: broker, its plain port.
record() { echo "${TMPDIR:-/tmp}/pipeline-stack.$1-$2"; }
remember() { echo "$STATE" 2>/dev/null >"$(record "$1" "$2")" || say "could not write $(record "$1" "$2")"; }

# How a message names a state dir: a checkout by its own .stack, else the dir.
where() { case "$1" in */.stack) echo "checkout at ${1%/.stack}" ;; *) echo "stack with its state in $1" ;; esac; }

# True when the TLS listener on 127.0.0.1:$1 presents a certificate signed by $2/ca.pem.
signed_by() {
  [ -r "$2/ca.pem" ] && timeout 10 openssl s_client -connect "127.0.0.1:$1" -CAfile "$2/ca.pem" \
    -verify_return_error </dev/null >/dev/null 2>&1
}

# The state dir named by the configuration of the Kafka listening on 127.0.0.1:$1, for a broker
# started by an up.sh that left no record; empty when none is found or readable.
kafka_state_in_config() {
  local cmdline props
  for cmdline in $(grep -lzx kafka.Kafka /proc/[0-9]*/cmdline 2>/dev/null); do
    props="$(tr '\0' '\n' <"$cmdline" 2>/dev/null | tail -1)"
    grep -q "^listeners=.*//127.0.0.1:$1," "$props" 2>/dev/null || continue
    props="$(sed -n 's#^ssl.truststore.location=##p' "$props")"
    echo "${props%/tls/ca.pem}"; return
  done
}
