#!/usr/bin/env bash
# Build the C++ CPU example kernel and check it end to end (layout, digest, ELF,
# results against numpy, error messages, raw C ABI through ctypes).
#
#   scripts/check-cpp-kernel.sh [OUTDIR]     (default OUTDIR: <repo>/build-out/cpp-cpu)
#
# Installs numpy (pinned) into the tvm-ffi virtualenv on first use.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
numpy_pin="2.3.5"

# shellcheck source=scripts/tvm-ffi-env.sh
source "$repo/scripts/tvm-ffi-env.sh"
if [ "$("$TVM_FFI_PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)" != "$numpy_pin" ]; then
    echo "check-cpp-kernel: installing numpy==$numpy_pin into the tvm-ffi virtualenv" >&2
    "$TVM_FFI_PYTHON" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "numpy==$numpy_pin" >&2
fi

variant="$(bash "$repo/scripts/build-cpp-kernel.sh" "$@")"
lib="$(ls "$variant"/_*.so)"

echo "== readelf -d $(basename "$lib")"
readelf -d "$lib" | grep -E 'NEEDED|SONAME|RPATH|RUNPATH'
echo "== exported tvm-ffi functions"
nm -D --defined-only "$lib" | awk '$3 ~ /^__tvm_ffi_/ {print $3}'
echo "== digest"
python3 "$repo/scripts/hub_layout.py" verify "$variant"
echo "== calls"
TVM_FFI_LIB="$TVM_FFI_LIB" "$TVM_FFI_PYTHON" "$repo/examples/kernels/cpp-cpu/check.py" "$variant"
