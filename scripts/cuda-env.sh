#!/usr/bin/env bash
# Install nvcc 13.0 from PyPI into a private virtualenv and describe it. No GPU or
# system CUDA needed: this is enough to compile CUDA kernels (sm_80/sm_90 + PTX)
# linked with `-cudart static`.
#
#   eval "$(scripts/cuda-env.sh)"     # or: source scripts/cuda-env.sh
#
# Installs once (later runs only check the installed versions) and exports:
#   CUDA_HOME / CUDA_PATH / CUDA_ROOT   the toolkit root (<site-packages>/nvidia/cu13)
#   NVCC                                the nvcc executable
#   CUDA_INCLUDE                        CUDA headers (cuda_runtime.h, cuda_bf16.h, cccl/)
#   CUDA_LIBDIR                         libcudart_static.a, libcudadevrt.a
#   PATH                                with the toolkit's bin/ in front
#
# Compile with: "$NVCC" ... -cudart static -L"$CUDA_LIBDIR"
# Knobs: CUDA_VENV (default <repo>/.venv/cuda), PYTHON (default python3).

__cuda_env() {
    # nvcc, its cicc/libdevice (nvvm), crt stubs and the runtime as pinned by the
    # project; cccl supplies <nv/target>, which cuda_fp16.h / cuda_bf16.h include.
    local pins=(
        "nvidia-cuda-nvcc==13.0.88"
        "nvidia-cuda-runtime==13.0.96"
        "nvidia-cuda-crt==13.0.88"
        "nvidia-nvvm==13.0.88"
        "nvidia-cuda-cccl==13.0.85"
    )
    local repo
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    local venv="${CUDA_VENV:-$repo/.venv/cuda}"
    local python="${PYTHON:-python3}"
    local vpy="$venv/bin/python"

    local want have=""
    want="$(printf '%s\n' "${pins[@]}" | sort)"
    if [ -x "$vpy" ]; then
        have="$("$vpy" - "${pins[@]}" 2>/dev/null <<'PY' || true
import importlib.metadata as m, sys
out = []
for pin in sys.argv[1:]:
    name = pin.split("==")[0]
    try:
        out.append(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        pass
print("\n".join(sorted(out)))
PY
)"
    fi
    if [ "$have" != "$want" ]; then
        echo "cuda-env: installing ${pins[*]} into $venv" >&2
        if [ ! -x "$vpy" ]; then
            "$python" -m venv "$venv" >&2 || {
                echo "cuda-env: cannot create a virtualenv with '$python' (set PYTHON to a python3 that has the venv module)" >&2
                return 1
            }
        fi
        "$vpy" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "${pins[@]}" >&2 || {
            echo "cuda-env: pip could not install ${pins[*]} (needs PyPI or the wheels in pip's find-links)" >&2
            return 1
        }
    fi

    local root
    root="$("$vpy" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')" || return 1
    if [ ! -x "$root/bin/nvcc" ] || [ ! -f "$root/lib/libcudart_static.a" ] || [ ! -f "$root/include/nv/target" ]; then
        echo "cuda-env: $root lacks nvcc, libcudart_static.a or <nv/target>; delete $venv and run again" >&2
        return 1
    fi

    CUDA_HOME="$root"
    CUDA_PATH="$root"
    CUDA_ROOT="$root"
    NVCC="$root/bin/nvcc"
    CUDA_INCLUDE="$root/include"
    CUDA_LIBDIR="$root/lib"
    case ":$PATH:" in
        *":$root/bin:"*) ;;
        *) PATH="$root/bin:$PATH" ;;
    esac
    export CUDA_HOME CUDA_PATH CUDA_ROOT NVCC CUDA_INCLUDE CUDA_LIBDIR PATH
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    __cuda_env
    for __name in CUDA_HOME CUDA_PATH CUDA_ROOT NVCC CUDA_INCLUDE CUDA_LIBDIR PATH; do
        printf "export %s=%q\n" "$__name" "${!__name}"
    done
else
    __cuda_env
fi
