#!/usr/bin/env bash
# Writes the Strimzi CustomResourceDefinitions the manifest checks validate against into
# .stack/k8s-crds/ (gitignored): Strimzi's CRD generator run over Strimzi's API classes, both from
# Maven Central (tests/k8s/strimzi-crds/pom.xml). Idempotent: does nothing when the pinned version
# is already there. The generator is compiled for Java 21, so this looks for a Java 21+ runtime.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
pom="$root/tests/k8s/strimzi-crds/pom.xml"
out="${K8S_CRDS_DIR:-$root/.stack/k8s-crds}"
version=$(sed -n 's:.*<strimzi.version>\(.*\)</strimzi.version>.*:\1:p' "$pom")
stamp="$out/.strimzi-$version"
[ -f "$stamp" ] && exit 0

die() { echo "tests/k8s/strimzi-crds.sh: $*" >&2; exit 1; }

java21() {
    local candidate
    for candidate in ${JAVA21_HOME:+"$JAVA21_HOME/bin/java"} ${JAVA_HOME:+"$JAVA_HOME/bin/java"} \
        /usr/lib/jvm/temurin-25-jdk-amd64/bin/java /usr/lib/jvm/*/bin/java "$(command -v java || true)"; do
        [ -x "$candidate" ] || continue
        local major
        major=$("$candidate" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
        if [ "${major:-0}" -ge 21 ] 2>/dev/null; then echo "$candidate"; return; fi
    done
    die "Strimzi's CRD generator needs Java 21 or newer (none found; set JAVA21_HOME)"
}

command -v mvn >/dev/null || die "Maven is needed to fetch Strimzi's CRD generator (apt-get install maven)"
java=$(java21)
lib="$root/.stack/strimzi-crds-lib"
echo "tests/k8s/strimzi-crds.sh: generating Strimzi $version CRDs into $out" >&2
rm -rf "$lib"
mvn -B -q -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$lib" >&2
mkdir -p "$out"
# The kinds the manifests use, served as kafka.strimzi.io/v1 only, as Strimzi 1.x publishes them.
"$java" -cp "$lib/*" io.strimzi.crdgenerator.CrdGenerator --yaml --api-versions v1 --storage-version v1 \
    io.strimzi.api.kafka.model.topic.KafkaTopic="$out/strimzi-kafkatopic-crd.yaml" \
    io.strimzi.api.kafka.model.user.KafkaUser="$out/strimzi-kafkauser-crd.yaml" >&2
for f in "$out/strimzi-kafkatopic-crd.yaml" "$out/strimzi-kafkauser-crd.yaml"; do
    grep -q '^kind: CustomResourceDefinition' "$f" || die "the generator wrote no CRD to $f"
done
touch "$stamp"
