#!/usr/bin/env bash
# Build the torch stable-ABI CPU example kernels into the Kernel Hub layout, without libtorch.
#
#   scripts/build-stable-abi-kernel.sh [OUTDIR]          (default OUTDIR: <repo>/build-out)
#   scripts/build-stable-abi-kernel.sh --cuda [OUTDIR]   the CUDA example instead, with nvcc:
#                                                        scripts/build-stable-abi-cuda-kernel.sh
#
# Produces, each holding <id>.abi3.so, __init__.py, _ops.py and metadata.json (with digests):
#   OUTDIR/stable-abi-cpu/build/torch-stable-abi29-cpu-<arch>-linux/     target torch 2.9
#   OUTDIR/stable-abi-cpu/build/torch-stable-abi211-cpu-<arch>-linux/    target torch 2.11
#   OUTDIR/stable-abi-cpu-unsupported/build/torch-stable-abi211-cpu-<arch>-linux/
# The first two are examples/kernels/stable-abi-cpu/ops.cpp; the last is unsupported.cpp +
# full_abi.cpp, which call aten::matmul and need libc10's C++ ABI (for tests that must
# reject it). Compiled the way the Hub's kernel-builder compiles a CPU stable-ABI kernel,
# against the pinned torch headers (scripts/torch-headers.sh): -DTORCH_TARGET_VERSION,
# -DCPU_KERNEL, C++17, -fno-gnu-unique, -DTORCH_EXTENSION_NAME=<id>, an abi3 module name and
# no RPATH. libtorch is not needed: the link uses empty stand-ins with libtorch's sonames, so
# DT_NEEDED lists libtorch.so, libtorch_cpu.so and libc10.so as in a real build. Checks the
# result with readelf/nm and prints the three variant directories on stdout.
#
# Knobs: CXX (default g++), plus those of scripts/torch-headers.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = "--cuda" ]; then
    shift
    exec bash "$repo/scripts/build-stable-abi-cuda-kernel.sh" "$@"
fi
src="$repo/examples/kernels/stable-abi-cpu"
out="${1:-$repo/build-out}"
cxx="${CXX:-g++}"
hub_layout=(python3 "$repo/scripts/hub_layout.py")

if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "build-stable-abi-kernel: C++ compiler '$cxx' not found (install g++ or set CXX)" >&2
    exit 1
fi
include="$(bash "$repo/scripts/torch-headers.sh" | tail -n 1)"

case "$(uname -m)" in
    x86_64 | amd64) arch=x86_64 ;;
    aarch64 | arm64) arch=aarch64 ;;
    *) echo "build-stable-abi-kernel: unsupported CPU architecture $(uname -m)" >&2; exit 1 ;;
esac
case "$(uname -s)" in
    Linux) os=linux ;;
    *) echo "build-stable-abi-kernel: only Linux is supported, not $(uname -s)" >&2; exit 1 ;;
esac

mkdir -p "$out"
out="$(cd "$out" && pwd)"
tmp="$(mktemp -d)"
stage=""
trap 'rm -rf "$tmp" ${stage:+"$stage"}' EXIT

# Empty stand-ins for libtorch's libraries: linking against them records their sonames in
# DT_NEEDED and nothing else (the shim calls stay undefined, to be bound at load time, as
# when linking against libtorch).
standins=(torch torch_cpu c10)
for lib in "${standins[@]}"; do
    "$cxx" -x c++ -shared -fPIC -nostdlib -Wl,-soname,"lib$lib.so" -o "$tmp/lib$lib.so" /dev/null
done

# target_version MAJOR.MINOR: TORCH_TARGET_VERSION as kernel-builder passes it,
# (major << 56) | (minor << 48) in hex (2.10 -> 0x020a000000000000).
target_version() {
    local major minor
    IFS=. read -r major minor <<<"$1"
    printf '0x%02x%02x000000000000' "$major" "$minor"
}
# kernel-builder's flags for a CPU stable-ABI kernel with headers older than 2.12 (C++17);
# the prefix maps keep checkout paths out of the binary (__FILE__ in registrations).
common_flags=(-std=c++17 -O3 -DNDEBUG -fPIC -fno-gnu-unique -DCPU_KERNEL
    "-ffile-prefix-map=$repo/=" "-ffile-prefix-map=$include=torch/include" -isystem "$include")
link_flags=(-L"$tmp" -Wl,--no-as-needed "${standins[@]/#/-l}" -Wl,--as-needed)

# check_library LIB GOOD: DT_NEEDED, no RPATH, and (GOOD=1) only C symbols from libtorch.
check_library() {
    local lib="$1" good="$2" dyn undefined cxx_torch
    command -v readelf >/dev/null 2>&1 || return 0
    dyn="$(readelf -d "$lib")"
    for soname in libtorch.so libtorch_cpu.so libc10.so; do
        if ! grep -qF "NEEDED) Shared library: [$soname]" <<<"$(tr -s ' ' <<<"$dyn")"; then
            echo "build-stable-abi-kernel: $(basename "$lib") does not list $soname as NEEDED" >&2
            exit 1
        fi
    done
    if grep -qE '\((RPATH|RUNPATH)\)' <<<"$dyn"; then
        echo "build-stable-abi-kernel: $(basename "$lib") has an RPATH/RUNPATH; Hub kernels carry none" >&2
        exit 1
    fi
    undefined="$(nm -D --undefined-only "$lib" | awk '{print $NF}')"
    cxx_torch="$(grep -E '^_ZN(3c10|2at|5torch)' <<<"$undefined" | grep -vE '^_ZN5torch6stable' || true)"
    if [ "$good" = 1 ] && [ -n "$cxx_torch" ]; then
        echo "build-stable-abi-kernel: $(basename "$lib") needs PyTorch's C++ ABI: $cxx_torch" >&2
        exit 1
    fi
    if [ "$good" = 0 ] && [ -z "$cxx_torch" ]; then
        echo "build-stable-abi-kernel: $(basename "$lib") was meant to need PyTorch's C++ ABI" >&2
        exit 1
    fi
}

# build_variant NAME TARGET INIT SOURCE [FULL_ABI_SOURCE]: one Hub variant; prints its path.
build_variant() {
    local name="$1" target="$2" init="$3" source="$4" full_abi="${5:-}"
    local tv="torch-stable-abi${target/./}-cpu-${arch}-${os}"
    local sources=("$source" "$src/python_module.h" "$init" "$src/python/_ops.py.in")
    [ -n "$full_abi" ] && sources+=("$full_abi")
    local rev id
    rev="$("${hub_layout[@]}" source-rev --root "$src" "${sources[@]}")"
    id="$("${hub_layout[@]}" kernel-id --name "$name" --backend cpu --rev "$rev")"
    local root="$out/$name"
    mkdir -p "$root/build"
    local dest="$root/build/$tv"
    stage="$(mktemp -d "$root/build/.stage.XXXXXX")"
    local flags=("${common_flags[@]}" "-DTORCH_TARGET_VERSION=$(target_version "$target")"
        "-DTORCH_EXTENSION_NAME=$id")
    local objects=("$tmp/$id-$target.o")
    "$cxx" "${flags[@]}" -c -o "$tmp/$id-$target.o" "$source"
    if [ -n "$full_abi" ]; then
        # Full-ABI code: the same flags without the stable-ABI target.
        "$cxx" "${common_flags[@]}" "-DTORCH_EXTENSION_NAME=$id" -c -o "$tmp/$id-$target-full.o" "$full_abi"
        objects+=("$tmp/$id-$target-full.o")
    fi
    "$cxx" -shared -Wl,-soname,"$id.abi3.so" -o "$stage/$id.abi3.so" "${objects[@]}" "${link_flags[@]}"
    cp "$init" "$stage/__init__.py"
    sed "s/@OPS_ID@/$id/g" "$src/python/_ops.py.in" >"$stage/_ops.py"
    chmod 644 "$stage/__init__.py" "$stage/_ops.py"
    chmod 755 "$stage/$id.abi3.so"
    check_library "$stage/$id.abi3.so" "$([ -z "$full_abi" ] && echo 1 || echo 0)"
    "${hub_layout[@]}" write-metadata "$stage" --name "$name" --id "$id" --backend cpu
    "${hub_layout[@]}" verify "$stage" >/dev/null
    # Replace the whole variant so no stale file survives into the digest.
    rm -rf "$dest"
    mv "$stage" "$dest"
    chmod 755 "$dest"
    stage=""
    echo "$dest"
}

build_variant stable-abi-cpu 2.9 "$src/python/__init__.py" "$src/ops.cpp"
build_variant stable-abi-cpu 2.11 "$src/python/__init__.py" "$src/ops.cpp"
build_variant stable-abi-cpu-unsupported 2.11 "$src/python/unsupported/__init__.py" \
    "$src/unsupported.cpp" "$src/full_abi.cpp"
