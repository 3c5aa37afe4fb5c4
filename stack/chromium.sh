#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser test (tests/browser/). Idempotent: does nothing when
# a chromium binary is already installed; needs root (apt-get) otherwise.
set -euo pipefail
for candidate in "${CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
        exit 0
    fi
done
if ! command -v apt-get >/dev/null; then
    echo "chromium is missing and apt-get is not available: install Chromium and set CHROMIUM=/path/to/it" >&2
    exit 1
fi
as_root=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "chromium is missing: run 'apt-get install -y chromium' as root" >&2; exit 1; }
    as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists; update only when the candidate is unknown.
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    "${as_root[@]}" apt-get update -qq
fi
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
