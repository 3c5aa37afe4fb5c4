#!/usr/bin/env bash
# `make image`: builds the product's image from the repository's Dockerfile, the one a user builds
# with `docker build`. With a working Docker engine it is just that. Without one (a machine with only
# package registries, no Docker engine, no container registry) it uses Debian's podman/buildah and a
# local stand-in for the Dockerfile's base image:
#  - podman needs, as root in a microVM: runc (crun refuses cgroup v1 controllers beside a cgroup2
#    tree), the cgroupfs manager and lower ulimits (root lacks CAP_SYS_RESOURCE, podman's default
#    nofile of 1048576 fails with EPERM): stack/containers.conf, named by CONTAINERS_CONF;
#  - the base `python:3.11-slim-bookworm` cannot be pulled, so mmdebstrap makes a Debian bookworm
#    minbase with Debian's Python 3.11 (python, venv) from Debian's package mirror, imported and
#    tagged under the base's name so that the unchanged FROM resolves locally (--pull=never). It is
#    labelled as the stand-in it is; a Docker engine never sees it;
#  - pip inside the build reaches the package index through whatever CA the host trusts: the host's
#    CA bundle and a pip.conf naming it are mounted for the build only (mounts are not in the image).
# Idempotent: an existing stand-in base is reused and podman's layer cache rebuilds only what changed.
# Prints the image's name on stdout. IMAGE overrides the name.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
image="${IMAGE:-localhost/openstack-notification-pipeline:dev}"
base=docker.io/library/python:3.11-slim-bookworm
# bumped when the stand-in's recipe below changes, so that an older stand-in is made again
BASE_RECIPE=2
say() { echo "stack/image.sh: $*" >&2; }
die() { say "$*"; exit 1; }
started=$SECONDS

if [[ -z ${PIPELINE_IMAGE_ENGINE:-} ]] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    say "building $image with Docker"
    docker build -t "$image" "$root" >&2
    echo "$image"
    exit 0
fi

bash "$root/stack/debs.sh" podman buildah runc fuse-overlayfs uidmap mmdebstrap containernetworking-plugins
export CONTAINERS_CONF="$root/stack/containers.conf"
ulimits=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

recipe=$(podman image inspect --format '{{index .Labels "pipeline.stand-in-recipe"}}' "$base" 2>/dev/null || true)
if [[ -n $recipe && $recipe != "$BASE_RECIPE" ]]; then
    say "the stand-in base is of an older recipe ($recipe): making it again"
    podman rmi -f "$base" >/dev/null
fi
if ! podman image exists "$base"; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    say "making the stand-in base $base with mmdebstrap (Debian bookworm, python3.11)"
    mirror=http://deb.debian.org/debian
    mmdebstrap --quiet --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
        --aptopt='Acquire::Retries "3"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
        bookworm "$work/base.tar" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main" >&2 \
        || die "mmdebstrap could not make the base from Debian's mirror"
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL org.opencontainers.image.description="local stand-in for python:3.11-slim-bookworm: Debian bookworm minbase with Debian python3.11 (stack/image.sh)"' \
        --change "LABEL pipeline.stand-in-recipe=$BASE_RECIPE" \
        --change 'CMD ["python3"]' \
        "$work/base.tar" "$base" >/dev/null
    say "base ready ($((SECONDS - started)) s)"
fi

# The host's trust for pip in the build: its CA bundle (PIP_CERT, pip's `cert`, else Debian's).
ca=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
ca=${ca:-/etc/ssl/certs/ca-certificates.crt}
build_mounts=()
if [[ -f $ca ]]; then
    conf_dir=$(mktemp -d)
    trap 'rm -rf "$conf_dir" "${work:-}"' EXIT
    printf '[global]\ncert = /etc/ssl/certs/host-ca-bundle.crt\n' >"$conf_dir/pip.conf"
    build_mounts=(-v "$ca:/etc/ssl/certs/host-ca-bundle.crt:ro" -v "$conf_dir/pip.conf:/etc/pip.conf:ro")
fi
say "building $image from $root/Dockerfile"
build_started=$(date +%s)
podman build --pull=never --network host "${ulimits[@]}" "${build_mounts[@]}" \
    --layers -t "$image" -f "$root/Dockerfile" "$root" >&2 \
    || die "podman build failed (above)"
# the images earlier builds left untagged (the last image and its build stage): this build's
# layers stay, as the cache of the next
podman image prune -f --filter "until=$build_started" >/dev/null
say "$image: $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}') in $((SECONDS - started)) s"
echo "$image"
