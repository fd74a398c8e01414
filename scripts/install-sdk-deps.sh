#!/usr/bin/env bash
# Installs the official Dapr SDKs that the compatibility tests drive
# (tests/sdk/, run by crates/leasehold-cli/tests/sdk.rs), at the versions
# pinned there:
#   - Python: tests/sdk/python/requirements.txt (the `dapr` package, its
#     dependencies and pytest) into the interpreter that `python3` names;
#   - JavaScript: `npm ci` in tests/sdk/js (from package-lock.json).
# Safe to run again: each step is skipped when what it would install is
# already there.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/pins.sh
source scripts/lib/pins.sh

PYTHON="${LEASEHOLD_PYTHON:-python3}"
requirements=tests/sdk/python/requirements.txt

if pins_installed "$PYTHON" "$requirements" 2>/dev/null; then
    echo "Python SDK: already installed ($requirements)"
else
    echo "Python SDK: installing $requirements"
    pip_install=("$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements")
    if ! pip_output="$("${pip_install[@]}" 2>&1)"; then
        if grep -q "externally-managed-environment" <<<"$pip_output"; then
            "${pip_install[@]}" --break-system-packages
        else
            printf '%s\n' "$pip_output" >&2
            exit 1
        fi
    fi
    pins_installed "$PYTHON" "$requirements" || { echo "Python SDK: installed versions do not match $requirements" >&2; exit 1; }
fi

js_ready() {
    # The installed tree matches the lock file when npm would change nothing.
    [ -f tests/sdk/js/node_modules/@dapr/dapr/package.json ] &&
        [ -f tests/sdk/js/node_modules/.package-lock.json ] &&
        cmp -s <(node -e 'const l=require("./tests/sdk/js/package-lock.json");console.log(JSON.stringify(Object.keys(l.packages).filter(k=>k).sort().map(k=>[k,l.packages[k].version])))') \
               <(node -e 'const l=require("./tests/sdk/js/node_modules/.package-lock.json");console.log(JSON.stringify(Object.keys(l.packages).filter(k=>k).sort().map(k=>[k,l.packages[k].version])))')
}

if js_ready 2>/dev/null; then
    echo "JavaScript SDK: already installed (tests/sdk/js/package-lock.json)"
else
    echo "JavaScript SDK: npm ci in tests/sdk/js"
    (cd tests/sdk/js && npm ci --no-audit --no-fund --loglevel=error)
fi
