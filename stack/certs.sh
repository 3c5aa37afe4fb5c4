#!/usr/bin/env bash
# Test certificates and credentials for the secure listeners of the local stack, made on each
# machine and never committed: a CA, a server certificate for 127.0.0.1 and broker.pipeline.test
# (deliberately not `localhost`, so a client that dials `localhost` fails hostname verification),
# a client certificate, and random passwords for the SCRAM and AMQP users.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TLS="$STATE/tls"
[ -f "$TLS/.complete" ] && exit 0
command -v openssl >/dev/null || die "openssl is needed to make the test certificates"
rm -rf "$TLS"; mkdir -p "$TLS"; cd "$TLS"
q() { "$@" >/dev/null 2>&1 || die "openssl failed: $*"; }

q openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=pipeline test CA" \
  -keyout ca.key -out ca.pem
for who in server client; do
  q openssl req -newkey rsa:2048 -nodes -subj "/CN=pipeline-$who" -keyout "$who.key.rsa" -out "$who.csr"
  printf 'subjectAltName=IP:127.0.0.1,DNS:broker.pipeline.test\nextendedKeyUsage=serverAuth,clientAuth\n' >"$who.ext"
  q openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$who.ext" -out "$who.pem"
  q openssl pkcs8 -topk8 -nocrypt -in "$who.key.rsa" -out "$who.key"   # Kafka's PEM store wants PKCS#8
  cat "$who.key" "$who.pem" >"$who.keystore.pem"
  rm -f "$who.csr" "$who.ext" "$who.key.rsa"
done
# A CA nobody trusts, for the "untrusted CA" test.
q openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=some other CA" \
  -keyout other-ca.key -out other-ca.pem

# Credentials: files, the way Kubernetes mounts Secrets.
head -c 18 /dev/urandom | base64 | tr -d '/+=' >kafka-password
head -c 18 /dev/urandom | base64 | tr -d '/+=' >amqp-password
echo "pipeline" >kafka-user
echo "pipeline" >amqp-user
chmod 0600 ./*.key ./*password ./*.keystore.pem   # up.sh hands RabbitMQ its own copies
touch .complete
say "test certificates and credentials in $TLS"
