#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine: the real backend
# servers the testkit starts (Redis, etcd, PostgreSQL), Chromium for the live
# view's browser test, and the official Dapr SDKs the compatibility tests
# drive. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# What to install, and when, is listed in scripts/lib/test-packages.txt, which
# .ci/run's package guard also reads.
need=()
while IFS= read -r line; do
    line="${line%%#*}"
    [[ "$line" == *:* ]] || continue
    what="${line%%:*}"
    read -r -a packages <<<"${line#*:}"
    if [[ "$what" == /* ]]; then
        [ -e "$what" ] && continue
    else
        command -v "$what" >/dev/null && continue
    fi
    need+=("${packages[@]}")
done <scripts/lib/test-packages.txt
if [ ${#need[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -x scripts/install-sdk-deps.sh ]; then
    scripts/install-sdk-deps.sh
fi
if [ -x scripts/install-safety-deps.sh ]; then
    scripts/install-safety-deps.sh
fi
