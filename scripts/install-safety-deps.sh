#!/usr/bin/env bash
# Installs what the safety crate's tests need beyond the backend servers
# (scripts/install-test-deps.sh installs those):
#   - schemathesis, pinned in tests/api/requirements.txt, into a virtual
#     environment of its own (LEASEHOLD_API_VENV, by default
#     ~/.cache/leasehold/api-venv), where crates/leasehold-safety/tests/schemathesis.rs
#     looks first: its dependencies conflict with the Dapr SDK's pins
#     (typing-extensions) in the interpreter the SDK tests use;
#   - with --fuzz, cargo-fuzz (the fuzz/ workspace).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/pins.sh
source scripts/lib/pins.sh

requirements=tests/api/requirements.txt
VENV="${LEASEHOLD_API_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/leasehold/api-venv}"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "schemathesis: creating the virtual environment $VENV"
    "${LEASEHOLD_PYTHON:-python3}" -m venv "$VENV"
fi
PYTHON="$VENV/bin/python"

if pins_installed "$PYTHON" "$requirements" 2>/dev/null; then
    echo "schemathesis: already installed in $VENV ($requirements)"
else
    echo "schemathesis: installing $requirements into $VENV"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
fi

if [[ "${1:-}" == "--fuzz" ]]; then
    if cargo fuzz --version >/dev/null 2>&1; then
        echo "cargo-fuzz: already installed"
    else
        echo "cargo-fuzz: installing"
        cargo install --locked cargo-fuzz
    fi
fi
