#!/usr/bin/env bash
# Installs the tools the manifest tests need that pip cannot: a pinned standalone kustomize, built
# from the Go module proxy into .stack/bin (gitignored). kubectl's embedded kustomize is not used on
# purpose: kubectl here comes with the machine image, not from a registry a fresh machine reaches.
# Idempotent: returns at once when the pinned version is already there.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1

root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.stack/bin"
kustomize="$bin/kustomize"

if [ -x "$kustomize" ] && [ "$("$kustomize" version 2>/dev/null)" = "$KUSTOMIZE_VERSION" ]; then
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "tests/k8s/tools.sh: 'go' not found; install Go >= 1.24 to build kustomize $KUSTOMIZE_VERSION" >&2
    exit 1
fi
mkdir -p "$bin"
echo "tests/k8s/tools.sh: building kustomize $KUSTOMIZE_VERSION into $bin" >&2
GOBIN="$bin" GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
"$kustomize" version >&2
