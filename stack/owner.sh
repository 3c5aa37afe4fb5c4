#!/usr/bin/env bash
# Whose TLS material a running broker uses. A reused broker may have been started by another
# checkout, with that checkout's CA and passwords: the tests of the secure listeners ask here, and
# up.sh says so when it reuses one. Prints the state dir whose tls/ signs the broker's TLS listener:
# this stack's, the one recorded when up.sh started the broker, or (Kafka) the one the running
# broker's configuration names. Otherwise one line on stderr naming the cause and the fix; exit 1.
# Usage: owner.sh kafka|rabbitmq
set -euo pipefail
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  kafka) name=Kafka port="$KAFKA_PORT" tls_port="$KAFKA_SECURE_PORT" ;;
  rabbitmq) name=RabbitMQ port="$AMQP_PORT" tls_port="$AMQP_TLS_PORT" ;;
  *) die "usage: owner.sh kafka|rabbitmq" ;;
esac
brokers="$name on 127.0.0.1:$port and $tls_port"
listening "$port" || die "$name is not listening on 127.0.0.1:$port: run \`make up\`"

listening "$tls_port" || die "$name on 127.0.0.1:$port has no TLS listener on $tls_port, so it was not started by stack/up.sh: stop it, then \`make up\`"
signed_by "$tls_port" "$TLS" && { echo "$STATE"; exit 0; }

recorded="$(cat "$(record "$1" "$port")" 2>/dev/null || true)"
if [ "$1" = kafka ]; then
  configured="$(kafka_state_in_config "$port")"
else   # no record (an older up.sh): the checkout that started Kafka most likely started RabbitMQ too
  configured="$(bash "$0" kafka 2>/dev/null || true)"
fi
for state in "$recorded" "$configured"; do
  if [ -n "$state" ] && signed_by "$tls_port" "$state/tls"; then echo "$state"; exit 0; fi
done

starter="$recorded"   # who started it, as far as anyone knows
[ -n "$starter" ] || [ "$1" != kafka ] || starter="$configured"
if [ -z "$starter" ]; then
  die "$brokers has no record of a stack/up.sh starting it (in ${TMPDIR:-/tmp}) and its certificate is not of this checkout's CA ($TLS): stop it (\`make down\` in the checkout that started it), then \`make up\` here"
elif [ "$starter" = "$STATE" ]; then
  die "$brokers was started by this checkout before its TLS material ($TLS) was made anew: \`make down\`, then \`make up\`"
else
  die "$brokers was started by another $(where "$starter"), whose TLS material ($starter/tls) is gone, unreadable or not the broker's: \`make down\` there, then \`make up\` here"
fi
