#!/usr/bin/env bash
# On the GPU machine: the same tvm-ffi CUDA kernels through Python `kernels` and PyTorch, beside
# the Rust figures (benches/python/kernels_python.py says what it measures).
#
#   scripts/python-wheels.sh                                    # here, once: .cache/py312-wheels
#   bash scripts/python-latency.sh .device.tar.xz .cache/py312-wheels   # there
#
# Installs the carried wheels (kernels, apache-tvm-ffi, tomlkit) into a private folder on
# PYTHONPATH (the machine's python3 has torch and the other dependencies), then runs the
# per-call table and the first-call comparison with the folder's kernels-demo.
set -euo pipefail
dir="${1:?usage: python-latency.sh DEVICE_DIR_OR_TAR WHEELS_DIR}"
wheels="${2:?usage: python-latency.sh DEVICE_DIR_OR_TAR WHEELS_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -f "$dir" ]; then
    out="$(mktemp -d)"
    tar -xJf "$dir" -C "$out"
    dir="$(find "$out" -maxdepth 2 -name MANIFEST -printf '%h\n' | head -1)"
fi
site="$(mktemp -d)"
python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --target "$site" "$wheels"/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KERNELS_TVM_FFI_LIB="$dir/lib/libtvm_ffi.so"
export KERNELS_RS_CACHE="$(mktemp -d)"
echo "== Python kernels and PyTorch: host us per call"
python3 "$here/benches/python/kernels_python.py" percall "$dir/kernel"
echo "== first call: spawn to exit, separate processes, interleaved"
python3 "$here/benches/python/kernels_python.py" firstcall "$dir/kernel" "$dir/kernels-demo" "${ROUNDS:-7}"
