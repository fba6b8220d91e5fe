#!/usr/bin/env bash
# The test suite, as CI runs it: prepares what the tests need (idempotent), starts the
# loopback Hub, runs `cargo test --workspace`, stops the Hub.
#
#   scripts/test.sh [extra cargo test args...]
#
# Needs: cargo, python3 (>= 3.10, with venv), g++, git, and PyPI on the first run (the
# pinned apache-tvm-ffi wheel and olah are installed into git-ignored virtualenvs, the pinned
# torch wheel's headers into .cache/).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# tvm-ffi: headers, tvm-ffi-config and libtvm_ffi.so from the pinned wheel.
# shellcheck source=scripts/tvm-ffi-env.sh
source scripts/tvm-ffi-env.sh
export KERNELS_TVM_FFI_LIB="$TVM_FFI_LIB"
export KERNELS_TEST_REQUIRE_TVM_FFI=1

# The C++ example kernel, in the Hub layout the tests load; checked through tvm-ffi's own Python API too.
bash scripts/check-cpp-kernel.sh

# The torch stable-ABI example kernels, compiled against the pinned torch headers (no libtorch)
# and checked with readelf/nm, for the tests of the pre-load check and of #[kernelize] layers
# served through the runtime's own (cargo-built) host (torch_stable_abi_dispatch).
bash scripts/build-stable-abi-kernel.sh >/dev/null
# The stable-ABI host and its stand-ins with libtorch's sonames (target/torch-host/), which
# load those kernels without libtorch in kernels-runtime's torch_stable_abi_host test.
bash scripts/build-torch-host.sh >/dev/null
export KERNELS_TEST_REQUIRE_STABLE_ABI=1

# The CUDA example kernels, compiled with nvcc from PyPI (no GPU needed) and checked: layout,
# digests, the archs in the fat binary, and argument errors through the C ABI.
bash scripts/check-cuda-kernel.sh
# The torch stable-ABI CUDA example kernel, built the same way (nvcc, shared libcudart.so.13,
# libtorch stand-ins; no GPU needed), for the pre-load check's test in torch_stable_abi and
# the no-GPU load and error paths in torch_stable_abi_cuda.
KERNELS_TEST_STABLE_ABI_CUDA="$(bash scripts/build-stable-abi-cuda-kernel.sh | tail -n 1)"
export KERNELS_TEST_STABLE_ABI_CUDA
# The pinned wheel's shared CUDA runtime (libcudart.so.13), which kernels-runtime's
# cuda_runtime tests load as an embedded copy and by KERNELS_CUDART_LIB (no GPU needed).
cuda_home="$(source scripts/cuda-env.sh >/dev/null && echo "$CUDA_HOME")"
KERNELS_TEST_CUDART="$cuda_home/lib/libcudart.so.13"
[ -f "$KERNELS_TEST_CUDART" ] || { echo "test.sh: $KERNELS_TEST_CUDART is missing" >&2; exit 1; }
export KERNELS_TEST_CUDART

# Python's own `kernels` package (pinned, no PyTorch), which must load and run what
# `cargo kernels package` writes (kernels-tests --test cli).
KERNELS_TEST_PYTHON_KERNELS="$(bash scripts/python-kernels-env.sh | tail -n 1)"
export KERNELS_TEST_PYTHON_KERNELS

# The loopback Hub.
export KERNELS_HUB_DIR="${KERNELS_HUB_DIR:-$repo/target/loopback-hub}"
endpoint="$(bash scripts/hub/start-olah.sh)"
export "${endpoint?}"
trap 'bash scripts/hub/stop-olah.sh >/dev/null 2>&1 || true' EXIT
export KERNELS_TEST_HF_ENDPOINT="$HF_ENDPOINT"
unset HF_ENDPOINT

cargo test --workspace --locked "$@"
