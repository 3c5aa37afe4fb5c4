#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet (apt-get, as root
# or through sudo). Idempotent and quiet when everything is there. Used by the image and cluster
# scripts; Debian's policy-rc.d (or the lack of an init system) keeps daemons such as containerd
# from starting on install: the scripts that need them start them themselves.
set -euo pipefail
missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
command -v apt-get >/dev/null || { echo "stack/debs.sh: missing ${missing[*]} and apt-get is not available: install them" >&2; exit 1; }
as_root=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "stack/debs.sh: run 'apt-get install ${missing[*]}' as root" >&2; exit 1; }
    as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists; update only when a candidate is unknown.
for package in "${missing[@]}"; do
    if ! apt-cache policy "$package" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        "${as_root[@]}" apt-get update -qq -o DPkg::Lock::Timeout=600
        break
    fi
done
echo "stack/debs.sh: installing ${missing[*]}" >&2
"${as_root[@]}" apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
