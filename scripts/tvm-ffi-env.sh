#!/usr/bin/env bash
# Install the pinned apache-tvm-ffi wheel into a private virtualenv and describe it.
#
#   eval "$(scripts/tvm-ffi-env.sh)"     # or: source scripts/tvm-ffi-env.sh
#
# Installs once (later runs only check the installed version) and exports:
#   TVM_FFI_VERSION          the pinned wheel version
#   TVM_FFI_PYTHON           python of the virtualenv (has `import tvm_ffi`)
#   TVM_FFI_CONFIG           the wheel's `tvm-ffi-config` executable
#   TVM_FFI_INCLUDE          C++ headers (tvm/ffi/...)
#   TVM_FFI_DLPACK_INCLUDE   DLPack headers (dlpack/dlpack.h)
#   TVM_FFI_LIBDIR           directory holding libtvm_ffi.so
#   TVM_FFI_LIB              absolute path of libtvm_ffi.so
#
# Knobs: TVM_FFI_VENV (default <repo>/.venv/tvm-ffi), PYTHON (default python3).
# Run as a program it prints `export NAME=value` lines (shell-quoted) on stdout (progress goes
# to stderr); sourced, it exports them into the calling shell.

__tvm_ffi_env() {
    local pin="0.1.15.post2"
    local repo
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    local venv="${TVM_FFI_VENV:-$repo/.venv/tvm-ffi}"
    local python="${PYTHON:-python3}"
    local vpy="$venv/bin/python"

    local have=""
    if [ -x "$vpy" ]; then
        have="$("$vpy" -c 'import importlib.metadata as m; print(m.version("apache-tvm-ffi"))' 2>/dev/null || true)"
    fi
    if [ "$have" != "$pin" ]; then
        echo "tvm-ffi-env: installing apache-tvm-ffi==$pin into $venv" >&2
        if [ ! -x "$vpy" ]; then
            "$python" -m venv "$venv" >&2 || {
                echo "tvm-ffi-env: cannot create a virtualenv with '$python' (set PYTHON to a python3 that has the venv module)" >&2
                return 1
            }
        fi
        "$vpy" -m pip install --quiet --disable-pip-version-check \
            --only-binary=:all: "apache-tvm-ffi==$pin" >&2 || {
            echo "tvm-ffi-env: pip could not install apache-tvm-ffi==$pin (needs PyPI or a wheel in pip's find-links)" >&2
            return 1
        }
    fi

    local config="$venv/bin/tvm-ffi-config"
    if [ ! -x "$config" ]; then
        echo "tvm-ffi-env: $config is missing; delete $venv and run again" >&2
        return 1
    fi
    local include dlpack libdir lib
    include="$("$config" --includedir)" || return 1
    dlpack="$("$config" --dlpack-includedir)" || return 1
    libdir="$("$config" --libdir)" || return 1
    lib="$("$config" --libfiles)" || return 1
    if [ ! -f "$include/tvm/ffi/tvm_ffi.h" ] || [ ! -f "$lib" ]; then
        echo "tvm-ffi-env: the wheel in $venv lacks headers or libtvm_ffi.so; delete $venv and run again" >&2
        return 1
    fi

    TVM_FFI_VERSION="$pin"
    TVM_FFI_PYTHON="$vpy"
    TVM_FFI_CONFIG="$config"
    TVM_FFI_INCLUDE="$include"
    TVM_FFI_DLPACK_INCLUDE="$dlpack"
    TVM_FFI_LIBDIR="$libdir"
    TVM_FFI_LIB="$lib"
    export TVM_FFI_VERSION TVM_FFI_PYTHON TVM_FFI_CONFIG TVM_FFI_INCLUDE \
        TVM_FFI_DLPACK_INCLUDE TVM_FFI_LIBDIR TVM_FFI_LIB
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    __tvm_ffi_env
    for __name in TVM_FFI_VERSION TVM_FFI_PYTHON TVM_FFI_CONFIG TVM_FFI_INCLUDE \
        TVM_FFI_DLPACK_INCLUDE TVM_FFI_LIBDIR TVM_FFI_LIB; do
        printf "export %s=%q\n" "$__name" "${!__name}"
    done
else
    __tvm_ffi_env
fi
