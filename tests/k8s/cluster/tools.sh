#!/usr/bin/env bash
# What the image and cluster tests need (`make tools`): Debian's podman, buildah, runc and
# mmdebstrap for the image, etcd, containerd, iptables and the CNI plugins for the node, and the
# Kubernetes binaries build.sh makes from the Go module proxy (cached in ~/.cache). On a machine
# that cannot run them (not root, no apt-get, no Go) it says so in one line and leaves the tests to
# skip with that reason: those are not the project's failures.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
say() { echo "tests/k8s/cluster/tools.sh: $*" >&2; }
if [[ $(uname -s) != Linux || $(id -u) -ne 0 ]] || ! command -v go >/dev/null \
        || ! { command -v apt-get >/dev/null || command -v podman >/dev/null; }; then
    say "not installing the image and cluster tools (needs Linux, root, Go and apt-get or podman): their tests will skip"
    exit 0
fi
bash "$root/stack/debs.sh" podman buildah runc fuse-overlayfs uidmap mmdebstrap containernetworking-plugins \
    etcd-server containerd iptables conntrack openssl curl
bash "$here/build.sh" >/dev/null
