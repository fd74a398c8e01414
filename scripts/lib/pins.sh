# Sourced by the install scripts.

# pins_installed PYTHON REQUIREMENTS: succeeds when every `name==version`
# line of REQUIREMENTS is installed at exactly that version in PYTHON.
pins_installed() {
    "$1" - "$2" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    try:
        if version(name.strip()) != pinned.strip():
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}
