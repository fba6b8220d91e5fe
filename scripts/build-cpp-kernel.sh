#!/usr/bin/env bash
# Build the C++ CPU example kernel into the Kernel Hub layout.
#
#   scripts/build-cpp-kernel.sh [OUTDIR]      (default OUTDIR: <repo>/build-out/cpp-cpu)
#
# Produces OUTDIR/build/tvm-ffi<MM>-cpu-<arch>-linux/ holding <id>.so, __init__.py,
# _ops.py and metadata.json (with digests), the way the Hub's kernel-builder lays out
# a tvm-ffi variant. The library links libtvm_ffi.so from the pinned apache-tvm-ffi
# wheel (installed by scripts/tvm-ffi-env.sh) without an rpath, so DT_NEEDED is
# `libtvm_ffi.so` and the loader must provide it. The same sources and compiler give
# the same bytes. Prints the variant directory on stdout.
#
# Knobs: CXX (default g++), plus those of scripts/tvm-ffi-env.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/examples/kernels/cpp-cpu"
out="${1:-$repo/build-out/cpp-cpu}"
cxx="${CXX:-g++}"
name="cpp-cpu-ops"
hub_layout=(python3 "$repo/scripts/hub_layout.py")

# shellcheck source=scripts/tvm-ffi-env.sh
source "$repo/scripts/tvm-ffi-env.sh"

if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "build-cpp-kernel: C++ compiler '$cxx' not found (install g++ or set CXX)" >&2
    exit 1
fi

# Variant name: tvm-ffi major+minor, backend, CPU arch, OS.
IFS=. read -r ffi_major ffi_minor _ <<<"$TVM_FFI_VERSION"
case "$(uname -m)" in
    x86_64 | amd64) arch=x86_64 ;;
    aarch64 | arm64) arch=aarch64 ;;
    *) echo "build-cpp-kernel: unsupported CPU architecture $(uname -m)" >&2; exit 1 ;;
esac
case "$(uname -s)" in
    Linux) os=linux ;;
    *) echo "build-cpp-kernel: only Linux is supported, not $(uname -s)" >&2; exit 1 ;;
esac
variant="tvm-ffi${ffi_major}${ffi_minor}-cpu-${arch}-${os}"

sources=("$src/ops.cpp" "$src/python/__init__.py" "$src/python/_ops.py.in")
rev="$("${hub_layout[@]}" source-rev --root "$src" "${sources[@]}")"
id="$("${hub_layout[@]}" kernel-id --name "$name" --backend cpu --rev "$rev")"

mkdir -p "$out/build"
out="$(cd "$out" && pwd)"
dest="$out/build/$variant"
stage="$(mktemp -d "$out/build/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# Flags as kernel-builder's CMake build gives them for a CPU tvm-ffi kernel
# (Release, C++17, PIC, CPU_KERNEL, TVM_FFI_EXTENSION_NAME, -fno-gnu-unique,
# soname = file name, no rpath); the prefix maps keep checkout paths out of
# the binary (__FILE__ in error locations).
"$cxx" -std=c++17 -O3 -DNDEBUG -fPIC -fno-gnu-unique \
    -DCPU_KERNEL "-DTVM_FFI_EXTENSION_NAME=$id" \
    "-ffile-prefix-map=$repo/=" "-ffile-prefix-map=$TVM_FFI_INCLUDE=tvm_ffi/include" \
    -I"$TVM_FFI_INCLUDE" -I"$TVM_FFI_DLPACK_INCLUDE" \
    -shared -Wl,-soname,"$id.so" \
    -o "$stage/$id.so" "$src/ops.cpp" \
    -L"$TVM_FFI_LIBDIR" -ltvm_ffi

cp "$src/python/__init__.py" "$stage/__init__.py"
sed "s/@OPS_ID@/$id/g" "$src/python/_ops.py.in" >"$stage/_ops.py"
chmod 644 "$stage/__init__.py" "$stage/_ops.py"
chmod 755 "$stage/$id.so"

if command -v readelf >/dev/null 2>&1; then
    dyn="$(readelf -d "$stage/$id.so")"
    if ! grep -q 'NEEDED.*\[libtvm_ffi\.so\]' <<<"$dyn"; then
        echo "build-cpp-kernel: $id.so does not list libtvm_ffi.so as NEEDED" >&2
        exit 1
    fi
    if grep -qE '\((RPATH|RUNPATH)\)' <<<"$dyn"; then
        echo "build-cpp-kernel: $id.so has an RPATH/RUNPATH; Hub kernels carry none" >&2
        exit 1
    fi
fi

"${hub_layout[@]}" write-metadata "$stage" --name "$name" --id "$id" --backend cpu
"${hub_layout[@]}" verify "$stage" >/dev/null

# Replace the whole variant so no stale file survives into the digest.
rm -rf "$dest"
mv "$stage" "$dest"
chmod 755 "$dest"
trap - EXIT
echo "$dest"
