#!/usr/bin/env bash
# A virtualenv with Python's own `kernels` package (and the tvm-ffi wheel and numpy it needs to
# run a tvm-ffi variant, no PyTorch), pinned, for the test that Python loads and runs what
# `cargo kernels package` writes.
#
#   bash scripts/python-kernels-env.sh        # prints the venv's python on the last line
#
# Installs once into <repo>/.venv/kernels (git-ignored); later runs only check the versions.
# Knobs: KERNELS_PY_VENV (the venv's directory), PYTHON (default python3).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KERNELS_PY_VENV:-$repo/.venv/kernels}"
python="${PYTHON:-python3}"
pins=("kernels==0.19.1" "apache-tvm-ffi==0.1.15.post2" "numpy==2.3.5")

installed() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    if m.version(name) != version:
        sys.exit(1)
PY
}

if ! installed; then
    echo "python-kernels-env: installing ${pins[*]} into $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: "${pins[@]}" >&2 || {
        echo "python-kernels-env: pip could not install ${pins[*]} (needs PyPI)" >&2
        exit 1
    }
fi
echo "$venv/bin/python"
