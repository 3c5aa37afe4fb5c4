#!/usr/bin/env bash
# Builds the Kubernetes binaries the test cluster runs (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, and the kubectl the tests drive it with) and its sandbox ("pause") image's program from the Go module proxy, into
# ~/.cache/pipeline-k8s/<version>/bin (K8S_CACHE_DIR). No Kubernetes release binaries or images are
# fetched: those come from hosts a machine with only package registries does not reach.
#
# `go install k8s.io/kubernetes/cmd/...` fails on the replace directives of kubernetes' own go.mod
# (its staging modules are `./staging/...`), so a main module of our own requires k8s.io/kubernetes
# and replaces each staging module by its published v0.<minor>.<patch> tag. Some of those tags are
# missing from the module mirror at times (it answers 403 "not available", and which ones varies):
# such a module falls back to the next of FALLBACKS, versions of the same minor that were seen to
# compile with the rest, and the build stops with one clear line when none is there. The sample-*
# modules, which no command imports, are replaced by empty local modules.
#
# Cold: about 7.5 minutes on 2 idle cores (1.8 GB memory at peak, 0.6 GB of modules, 2.8 GB of Go
# build cache); warm (Go's build cache in ~/.cache/go-build): seconds. Idempotent: does nothing when
# the binaries of this script's version are there. Prints the bin directory on stdout.
set -euo pipefail

K8S_VERSION=v1.32.13
# the staging modules' own tag first, then versions of the same minor known to build with it
FALLBACKS=(v0.32.13 v0.32.12 v0.32.3)
STAGING=(
    api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
    cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
    kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
    mount-utils pod-security-admission
)
UNUSED=(sample-apiserver sample-cli-plugin sample-controller)
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

say() { echo "tests/k8s/cluster/build.sh: $*" >&2; }
die() { say "$*"; exit 1; }

cache="${K8S_CACHE_DIR:-$HOME/.cache/pipeline-k8s}/$K8S_VERSION"
bin="$cache/bin"
stamp="$bin/.built-$(sha256sum "$0" | cut -c1-12)"
if [[ -f "$stamp" ]]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null || die "'go' not found: Go >= 1.23 is needed to build Kubernetes $K8S_VERSION"

src="$cache/src"
rm -rf "$src" "$bin"
mkdir -p "$src/pause" "$bin"
cd "$src"
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
started=$SECONDS
declare -A CHOSEN=()
for name in "${STAGING[@]}"; do
    for version in "${FALLBACKS[@]}"; do
        if go mod download "k8s.io/$name@$version" 2>/dev/null; then
            CHOSEN[$name]=$version
            [[ $version == "${FALLBACKS[0]}" ]] || say "k8s.io/$name: ${FALLBACKS[0]} is not on the module proxy; using $version"
            break
        fi
    done
    [[ -n ${CHOSEN[$name]:-} ]] || die "k8s.io/$name: none of ${FALLBACKS[*]} is on the Go module proxy ($(go env GOPROXY)); add a published version to FALLBACKS"
done
for name in "${UNUSED[@]}"; do
    mkdir -p "unused/$name"
    printf 'module k8s.io/%s\n\ngo 1.23\n' "$name" >"unused/$name/go.mod"
done
{
    echo "module pipeline/k8s-test-cluster"
    echo
    echo "go 1.23"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    for name in "${STAGING[@]}"; do echo "replace k8s.io/$name => k8s.io/$name ${CHOSEN[$name]}"; done
    for name in "${UNUSED[@]}"; do echo "replace k8s.io/$name => ./unused/$name"; done
} >"$src/go.mod"
{
    echo "package tools"
    echo
    for command in "${COMMANDS[@]}"; do echo "import _ \"k8s.io/kubernetes/cmd/$command\""; done
} >"$src/tools.go"
sed -i 's/^package tools$/\/\/go:build tools\n\npackage tools/' "$src/tools.go"

# The sandbox image's program: holds the pod's namespaces and waits to be stopped.
cat >"$src/pause/main.go" <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
GO

say "resolving k8s.io/kubernetes $K8S_VERSION and its modules"
go mod tidy 2>&1 | { grep -v '^go: downloading' || true; } >&2
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=32"
for command in "${COMMANDS[@]}"; do
    say "building $command ($((SECONDS - started)) s so far)"
    go build -trimpath -ldflags "$ldflags" -o "$bin/$command" "k8s.io/kubernetes/cmd/$command"
done
go build -trimpath -ldflags "-s -w" -o "$bin/pause" ./pause
"$bin/kube-apiserver" --version >&2
touch "$stamp"
say "built in $((SECONDS - started)) s into $bin"
echo "$bin"
