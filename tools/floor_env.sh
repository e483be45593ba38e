#!/usr/bin/env bash
# Build a venv at the declared minimum versions (tools/floor_requirements.txt, exact pins)
# and run the fast tests in it, so the floors in setup.cfg and environment.yml are ones the
# suite has passed on.
#
#   tools/floor_env.sh                 # venv in $FLOOR_VENV (default /tmp/fghash-floor-venv)
#   FLOOR_LOCK=/tmp/fghash-cpu.lock nice -n 15 tools/floor_env.sh   # pytest under flock
#   tools/floor_env.sh -k test_codes   # extra arguments go to pytest
#
# The default registry's torch wheels for Linux are the CUDA build (a few GB with the
# nvidia-* wheels); the tests run on the CPU either way. fghash itself is not installed:
# the tests import it from the working tree (PYTHONPATH), as pytest's pythonpath does.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FLOOR_VENV:-/tmp/fghash-floor-venv}"
python="${PYTHON:-python3.11}"
pins="$repo/tools/floor_requirements.txt"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$pins"
# pip must not have moved a pin (a dependency asking for more would show here)
"$venv/bin/python" - "$pins" <<'PY'
import sys
from importlib.metadata import version

bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        got = version(name)
        if got != want:
            bad.append(f"{name}: pinned {want}, installed {got}")
if bad:
    sys.exit("floor venv drifted from its pins:\n  " + "\n  ".join(bad))
print("floor venv:", ", ".join(l.split("#")[0].strip() for l in open(sys.argv[1]) if l.split("#")[0].strip()))
PY

cd "$repo"
lock=()
if [[ -n "${FLOOR_LOCK:-}" ]]; then
    lock=(flock "$FLOOR_LOCK")
fi
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "${lock[@]}" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" "$@"
