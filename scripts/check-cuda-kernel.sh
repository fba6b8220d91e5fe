#!/usr/bin/env bash
# Build the CUDA example kernels and check what can be checked without a GPU: layout and
# digests, ELF dynamic section and exports, the GPU code in the fat binary against
# metadata.json's archs, argument errors through the raw C ABI, and a clean error (no
# crash) where no CUDA driver is present.
#
#   scripts/check-cuda-kernel.sh [OUTDIR]     (default OUTDIR: <repo>/build-out/cuda)
#
# Standard library Python only; the toolchains come from scripts/build-cuda-kernel.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

variant="$(bash "$repo/scripts/build-cuda-kernel.sh" "$@")"
# shellcheck source=scripts/tvm-ffi-env.sh
source "$repo/scripts/tvm-ffi-env.sh"
lib="$(ls "$variant"/_*.so)"

echo "== $variant"
ls -l "$variant"
echo "== readelf -d $(basename "$lib")"
readelf -d "$lib" | grep -E 'NEEDED|SONAME|RPATH|RUNPATH'
echo "== exported tvm-ffi functions"
nm -D --defined-only "$lib" | awk '$3 ~ /^__tvm_ffi_/ {print $3}'
echo "== digest"
python3 "$repo/scripts/hub_layout.py" verify "$variant"
echo "== code and calls"
python3 "$repo/examples/kernels/cuda/check_nogpu.py" "$variant" "$TVM_FFI_LIB"
