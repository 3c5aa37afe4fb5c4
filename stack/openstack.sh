#!/usr/bin/env bash
# A real Ironic (and Glance) from PyPI for the reconciler's integration tests, in a virtualenv of
# its own (their pins clash with ours: oslo.*, SQLAlchemy, eventlet) cached under ~/.cache, so a
# second run only checks the stamp. Usage: stack/openstack.sh [ironic|glance|all]; prints the venv.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
CACHE=${PIPELINE_OPENSTACK_CACHE:-$HOME/.cache/pipeline-openstack}
IRONIC_VERSION=39.0.0
GLANCE_VERSION=33.0.0

install() {  # name version
    local venv="$CACHE/$1-$2"
    if [[ -f "$venv/.installed" ]]; then echo "$venv"; return; fi
    echo "installing $1 $2 into $venv (once; cached)" >&2
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q "$1==$2" >&2
    touch "$venv/.installed"
    echo "$venv"
}

case "${1:-ironic}" in
    ironic) install ironic "$IRONIC_VERSION" ;;
    glance) install glance "$GLANCE_VERSION" ;;
    all) install ironic "$IRONIC_VERSION"; install glance "$GLANCE_VERSION" ;;
    *) echo "usage: $0 [ironic|glance|all]" >&2; exit 2 ;;
esac
