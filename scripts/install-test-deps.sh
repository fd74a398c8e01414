#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine: the real backend
# servers the testkit starts (Redis, etcd, PostgreSQL), Chromium for the live
# view's browser test, and the official Dapr SDKs the compatibility tests
# drive. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v etcd >/dev/null || need+=(etcd-server)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v node >/dev/null || need+=(nodejs npm)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# The TLS tests make certificates with openssl and call the sidecar with curl.
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
# The live view is tested in a real headless browser.
command -v chromium >/dev/null || need+=(chromium fonts-dejavu-core)
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
