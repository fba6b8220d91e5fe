#!/usr/bin/env bash
# Build the CUDA example kernels into the Kernel Hub layout. Needs no GPU.
#
#   scripts/build-cuda-kernel.sh [--compile-only] [OUTDIR]   (default OUTDIR: <repo>/build-out/cuda)
#
# Compiles examples/kernels/cuda with nvcc 13.0 from PyPI (scripts/cuda-env.sh) and the
# pinned apache-tvm-ffi wheel (scripts/tvm-ffi-env.sh) into
# OUTDIR/build/tvm-ffi<MM>-cu<CUDA>-<arch>-linux/ holding <id>.so, __init__.py, _ops.py and
# metadata.json (backend "cuda" with its archs, and digests), the way the Hub's
# kernel-builder lays out a tvm-ffi CUDA variant. The library carries the CUDA runtime
# statically (it loads libcuda.so.1 from the driver when first used) and links
# libtvm_ffi.so without an rpath, so its only non-system DT_NEEDED is `libtvm_ffi.so`.
# The same sources, flags and toolchain give the same bytes. Prints the variant directory.
#
# Objects are cached in OUTDIR/.cache by a hash of sources, flags and compiler versions, so
# a repeated build only links and lays out (about a second); the virtualenvs are installed
# once. --compile-only stops after compiling (and ptxas-checking) the objects and prints
# their paths.
#
# Knobs:
#   CUDA_ARCHS          archs in kernel-builder's notation (default "8.0;9.0+PTX": SASS for
#                       sm_80 and sm_90, PTX for compute_90); written to metadata.json as is
#   CXX                 host compiler for nvcc and the binding (default g++)
#   NVCC_THREADS        nvcc --threads (default: number of CPUs)
#   CUDA_KERNEL_NOCACHE set to 1 to recompile everything
#   plus those of scripts/tvm-ffi-env.sh and scripts/cuda-env.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/examples/kernels/cuda"
compile_only=0
if [ "${1:-}" = "--compile-only" ]; then
    compile_only=1
    shift
fi
out="${1:-$repo/build-out/cuda}"
cxx="${CXX:-g++}"
archs="${CUDA_ARCHS:-8.0;9.0+PTX}"
name="cuda-ops"
hub_layout=(python3 "$repo/scripts/hub_layout.py")

die() {
    echo "build-cuda-kernel: $*" >&2
    exit 1
}

# shellcheck source=scripts/tvm-ffi-env.sh
source "$repo/scripts/tvm-ffi-env.sh"
# shellcheck source=scripts/cuda-env.sh
source "$repo/scripts/cuda-env.sh"

command -v "$cxx" >/dev/null 2>&1 || die "host compiler '$cxx' not found (install g++ or set CXX)"
threads="${NVCC_THREADS:-$(nproc 2>/dev/null || echo 1)}"

# Variant name: tvm-ffi major+minor, CUDA major+minor (from nvcc), CPU arch, OS.
IFS=. read -r ffi_major ffi_minor _ <<<"$TVM_FFI_VERSION"
nvcc_version="$("$NVCC" --version)"
cuda_release="$(sed -n 's/.*release \([0-9][0-9]*\)\.\([0-9][0-9]*\),.*/\1.\2/p' <<<"$nvcc_version")"
[ -n "$cuda_release" ] || die "cannot read the CUDA release from '$NVCC --version'"
case "$(uname -m)" in
    x86_64 | amd64) cpu=x86_64 ;;
    aarch64 | arm64) cpu=aarch64 ;;
    *) die "unsupported CPU architecture $(uname -m)" ;;
esac
[ "$(uname -s)" = Linux ] || die "only Linux is supported, not $(uname -s)"
variant="tvm-ffi${ffi_major}${ffi_minor}-cu${cuda_release/./}-${cpu}-linux"

# CUDA_ARCHS -> -gencode flags: "X.Y" gives SASS for sm_XY, "X.Y+PTX" SASS and PTX.
gencode=()
IFS=';' read -r -a arch_list <<<"$archs"
for a in "${arch_list[@]}"; do
    [ -n "$a" ] || continue
    base="${a%+PTX}"
    [[ "$base" =~ ^[0-9]+\.[0-9]+[af]?$ ]] || die "CUDA_ARCHS entry '$a' is not like 9.0, 9.0a or 9.0+PTX"
    cc="${base/./}"
    gencode+=(-gencode "arch=compute_$cc,code=sm_$cc")
    if [ "$base" != "$a" ]; then
        gencode+=(-gencode "arch=compute_$cc,code=compute_$cc")
    fi
done
[ "${#gencode[@]}" -gt 0 ] || die "CUDA_ARCHS is empty"

sources=(ops.cu ops.h binding.cpp python/__init__.py python/_ops.py.in)
rev="$("${hub_layout[@]}" source-rev --root "$src" "${sources[@]/#/$src/}")"
id="$("${hub_layout[@]}" kernel-id --name "$name" --backend cuda --rev "$rev")"

mkdir -p "$out/build" "$out/.cache"
out="$(cd "$out" && pwd)"
cache="$out/.cache"

# Flags as kernel-builder's CMake build gives a CUDA tvm-ffi kernel (Release, C++17, PIC,
# CUDA_KERNEL, TVM_FFI_EXTENSION_NAME, -fno-gnu-unique), plus hidden visibility so only
# the __tvm_ffi_* functions are exported. No --use_fast_math: the half-type kernels call
# the fast intrinsics where their error vanishes in the final rounding, and float32 keeps
# IEEE expf, division and denormals. The prefix maps keep checkout paths out of the binary.
common=(-std=c++17 -O3 -DNDEBUG -DCUDA_KERNEL "-DTVM_FFI_EXTENSION_NAME=$id")
host=(-fPIC -fvisibility=hidden -fno-gnu-unique "-ffile-prefix-map=$repo/=")
nvcc_flags=("${common[@]}" "${gencode[@]}" --threads "$threads" -ccbin "$cxx")
for f in "${host[@]}"; do nvcc_flags+=("-Xcompiler=$f"); done
cxx_flags=("${common[@]}" "${host[@]}" "-DCUDA_OPS_ARCHS=\"$archs\""
    "-ffile-prefix-map=$TVM_FFI_INCLUDE=tvm_ffi/include"
    -I"$TVM_FFI_INCLUDE" -I"$TVM_FFI_DLPACK_INCLUDE" -I"$CUDA_INCLUDE")

cxx_version="$("$cxx" --version | head -n1)"

# key <tool version> <flags...> -- <files...>: a hash of everything that shapes an object.
# --threads only changes how fast nvcc runs, so it is left out.
object_key() {
    {
        printf '%s\n' "$1"
        shift
        while [ "$1" != "--" ]; do
            case "$1" in
                --threads) shift ;;
                *) printf '%s\n' "$1" ;;
            esac
            shift
        done
        shift
        for f in "$@"; do
            printf '%s\n' "${f#"$src"/}"
            sha256sum <"$f"
        done
    } | sha256sum | cut -c1-16
}

# compile <object> <name> <command...>: unless the cached object exists, run the command
# in a scratch directory, writing <name> there, and move it into the cache. The fixed name
# matters: nvcc -objtemp names its intermediate host file after the object, and that name
# ends up in the object (its FILE symbol), where the default tmpxft_<pid> name would make
# every build differ.
compile() {
    local obj="$1" name="$2"
    shift 2
    if [ -f "$obj" ] && [ "${CUDA_KERNEL_NOCACHE:-0}" != 1 ]; then
        echo "build-cuda-kernel: cached $(basename "$obj")" >&2
        return 0
    fi
    local scratch start=$SECONDS
    scratch="$(mktemp -d "$cache/.compile.XXXXXX")"
    "$@" -o "$scratch/$name" || {
        rm -rf "$scratch"
        die "compiling $name failed"
    }
    mv "$scratch/$name" "$obj"
    rm -rf "$scratch"
    echo "build-cuda-kernel: compiled $name in $((SECONDS - start)) s" >&2
}

ops_obj="$cache/ops-$(object_key "$nvcc_version $cxx_version" "${nvcc_flags[@]}" -- "$src/ops.cu" "$src/ops.h").o"
binding_obj="$cache/binding-$(object_key "$cxx_version tvm-ffi $TVM_FFI_VERSION cuda $cuda_release" "${cxx_flags[@]}" -- "$src/binding.cpp" "$src/ops.h").o"

# Run from the source directory so nvcc's host pass sees relative paths only.
(cd "$src" && compile "$ops_obj" ops.o "$NVCC" "${nvcc_flags[@]}" -objtemp -c ops.cu)
(cd "$src" && compile "$binding_obj" binding.o "$cxx" "${cxx_flags[@]}" -c binding.cpp)

# Keep only the objects of this build in the cache.
for f in "$cache"/ops-*.o "$cache"/binding-*.o; do
    [ -e "$f" ] && [ "$f" != "$ops_obj" ] && [ "$f" != "$binding_obj" ] && rm -f "$f"
done

if [ "$compile_only" = 1 ]; then
    printf '%s\n' "$ops_obj" "$binding_obj"
    exit 0
fi

stage="$(mktemp -d "$out/build/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# nvcc links the static CUDA runtime (and -ldl -lpthread -lrt); --exclude-libs keeps its
# symbols out of the dynamic symbol table; soname = file name, no rpath. -nodlink: the
# objects need no device link (no relocatable device code), and nvcc's default one would
# add an empty sm_75 cubin that records this machine's library paths.
"$NVCC" -shared -nodlink -cudart static -L"$CUDA_LIBDIR" -ccbin "$cxx" \
    -o "$stage/$id.so" "$ops_obj" "$binding_obj" \
    -Xlinker --exclude-libs,ALL -Xlinker -soname,"$id.so" \
    -L"$TVM_FFI_LIBDIR" -ltvm_ffi

cp "$src/python/__init__.py" "$stage/__init__.py"
sed "s/@OPS_ID@/$id/g" "$src/python/_ops.py.in" >"$stage/_ops.py"
chmod 644 "$stage/__init__.py" "$stage/_ops.py"
chmod 755 "$stage/$id.so"

if command -v readelf >/dev/null 2>&1; then
    dyn="$(readelf -d "$stage/$id.so")"
    grep -q 'NEEDED.*\[libtvm_ffi\.so\]' <<<"$dyn" || die "$id.so does not list libtvm_ffi.so as NEEDED"
    if grep -qE '\((RPATH|RUNPATH)\)' <<<"$dyn"; then
        die "$id.so has an RPATH/RUNPATH; Hub kernels carry none"
    fi
    if grep -qE 'NEEDED.*\[lib(cuda|cudart)\.so' <<<"$dyn"; then
        die "$id.so links libcuda/libcudart dynamically; the CUDA runtime must be static"
    fi
    syms="$(readelf --dyn-syms -W "$stage/$id.so")"
    for fn in rms_norm add_rms_norm silu_and_mul; do
        grep -qE " __tvm_ffi_${fn}\$" <<<"$syms" || die "$id.so does not export __tvm_ffi_$fn"
    done
fi

"${hub_layout[@]}" write-metadata "$stage" --name "$name" --id "$id" --backend cuda --archs "$archs"
"${hub_layout[@]}" verify "$stage" >/dev/null

# Replace the whole variant so no stale file survives into the digest.
dest="$out/build/$variant"
rm -rf "$dest"
mv "$stage" "$dest"
chmod 755 "$dest"
trap - EXIT
echo "$dest"
