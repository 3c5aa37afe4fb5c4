#!/usr/bin/env bash
# Installs what the monitoring tests need, idempotently:
# - promtool (`promtool check rules|test rules|check metrics`), from Debian's `prometheus` package;
# - the prometheus-operator's CustomResourceDefinitions for PrometheusRule, PodMonitor and
#   ServiceMonitor, written into .stack/k8s-crds/ (K8S_CRDS_DIR) next to Strimzi's. They are
#   generated the way the prometheus-operator generates its own: controller-gen (Go module
#   sigs.k8s.io/controller-tools) run over the operator's API types (Go module
#   github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring), both from the Go
#   module proxy at pinned versions.
set -euo pipefail

PROMETHEUS_OPERATOR_VERSION=v0.95.2
CONTROLLER_TOOLS_VERSION=v0.20.1

root=$(cd "$(dirname "$0")/../.." && pwd)
out="${K8S_CRDS_DIR:-$root/.stack/k8s-crds}"
die() { echo "tests/monitoring/tools.sh: $*" >&2; exit 1; }

# --- promtool -----------------------------------------------------------------------------------
if ! command -v promtool >/dev/null; then
    command -v apt-get >/dev/null || die "promtool is missing and apt-get is not available: install Prometheus' promtool"
    as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "promtool is missing: run 'apt-get install -y prometheus' as root"
        as_root=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    # a fresh machine has no package lists; update only when the candidate is unknown
    if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        "${as_root[@]}" apt-get update -qq
    fi
    # only the package's files: Debian starts no daemon without an init system, and none is needed
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    echo "tests/monitoring/tools.sh: $(promtool --version 2>&1 | head -1)" >&2
fi

# --- prometheus-operator CRDs -------------------------------------------------------------------
stamp="$out/.prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
[ -f "$stamp" ] && exit 0
command -v go >/dev/null || die "'go' not found; Go >= 1.24 is needed to generate the prometheus-operator CRDs"
gen="$root/.stack/prometheus-operator-crds"
rm -rf "$gen"
mkdir -p "$gen/bin" "$gen/crds" "$out"
echo "tests/monitoring/tools.sh: generating the prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs into $out" >&2
GOBIN="$gen/bin" GOFLAGS=-buildvcs=false go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
api=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
cat >"$gen/go.mod" <<GOMOD
module pipeline/prometheus-operator-crds

go 1.24

require $api $PROMETHEUS_OPERATOR_VERSION
GOMOD
printf 'package crds\n\nimport _ "%s/v1"\n' "$api" >"$gen/tools.go"
(cd "$gen" && GOFLAGS=-mod=mod go mod tidy >&2 \
    && ./bin/controller-gen crd:crdVersions=v1,maxDescLen=0,allowDangerousTypes=true \
        paths="$api/v1" output:crd:dir=crds >&2)
for kind in prometheusrules podmonitors servicemonitors; do
    src="$gen/crds/monitoring.coreos.com_$kind.yaml"
    grep -q '^kind: CustomResourceDefinition' "$src" || die "controller-gen wrote no CRD for $kind"
    cp "$src" "$out/prometheus-operator-$kind-crd.yaml"
done
touch "$stamp"
