#!/usr/bin/env bash
# Build the torch stable-ABI CUDA example kernel into the Kernel Hub layout, without libtorch
# and without a GPU. Also reached as `scripts/build-stable-abi-kernel.sh --cuda [OUTDIR]`.
#
#   scripts/build-stable-abi-cuda-kernel.sh [OUTDIR]      (default OUTDIR: <repo>/build-out)
#
# Produces, holding <id>.abi3.so, __init__.py, _ops.py and metadata.json (backend "cuda" with
# its archs, and digests):
#   OUTDIR/stable-abi-cuda/build/torch-stable-abi<MM>-cu<CUDA>-<arch>-linux/
# for each target of STABLE_ABI_CUDA_TARGETS (default 2.11 -> torch-stable-abi211-cu130-...).
# Sources: examples/kernels/stable-abi-cuda/ops.cpp (the torch::stable binding) and
# examples/kernels/cuda/ops.cu (the device code the tvm-ffi example runs too), compiled the
# way the Hub's kernel-builder compiles a CUDA stable-ABI kernel: nvcc 13.0 from PyPI
# (scripts/cuda-env.sh) for the .cu, the host compiler for the .cpp, both with -DUSE_CUDA=1
# -DCUDA_KERNEL -DTORCH_TARGET_VERSION=<hex> -DTORCH_EXTENSION_NAME=<id>, C++17, PIC and
# -fno-gnu-unique, against the pinned torch headers (scripts/torch-headers.sh); linked with the
# *shared* CUDA runtime (DT_NEEDED libcudart.so.13) and empty stand-ins with libtorch's sonames
# (libtorch.so, libtorch_cpu.so, libtorch_cuda.so, libc10.so, libc10_cuda.so), no RPATH, as an
# abi3 module _stable_abi_cuda_cuda_<rev>.abi3.so. Checks the result with readelf/nm (DT_NEEDED,
# no RPATH, every aoti_torch_*/torch_* import in the runtime's SHIM_FUNCTIONS, no C++ symbol
# of c10::/at::/torch:: other than torch::stable::, the fatbin's archs) and prints the variant
# directories.
#
# Objects are cached in OUTDIR/stable-abi-cuda/.cache by a hash of sources, flags and compiler
# versions, so a repeated build only links and lays out.
#
# Knobs:
#   STABLE_ABI_CUDA_TARGETS  stable-ABI targets, space-separated (default "2.11"; "2.10 2.11")
#   CUDA_ARCHS               archs in kernel-builder's notation (default "8.0;9.0+PTX": SASS for
#                            sm_80 and sm_90, PTX for compute_90); written to metadata.json as is
#   CXX                      host compiler for nvcc and the binding (default g++)
#   NVCC_THREADS             nvcc --threads (default: number of CPUs)
#   CUDA_KERNEL_NOCACHE      set to 1 to recompile everything
#   plus those of scripts/cuda-env.sh and scripts/torch-headers.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kernels="$repo/examples/kernels"
src="$kernels/stable-abi-cuda"
cuda_src="$kernels/cuda"
out="${1:-$repo/build-out}"
cxx="${CXX:-g++}"
archs="${CUDA_ARCHS:-8.0;9.0+PTX}"
targets="${STABLE_ABI_CUDA_TARGETS:-2.11}"
name="stable-abi-cuda"
hub_layout=(python3 "$repo/scripts/hub_layout.py")
provided="$repo/kernels-runtime/src/torch_stable_abi/provided.rs"

die() {
    echo "build-stable-abi-cuda-kernel: $*" >&2
    exit 1
}

command -v "$cxx" >/dev/null 2>&1 || die "host compiler '$cxx' not found (install g++ or set CXX)"
include="$(bash "$repo/scripts/torch-headers.sh" | tail -n 1)"
include_real="$(cd "$include" && pwd -P)"  # what the compiler records for -isystem paths
eval "$("$repo/scripts/cuda-env.sh")"
threads="${NVCC_THREADS:-$(nproc 2>/dev/null || echo 1)}"
cudart="$CUDA_LIBDIR/libcudart.so.13"
[ -f "$cudart" ] || die "$cudart is missing (nvidia-cuda-runtime from scripts/cuda-env.sh)"

nvcc_version="$("$NVCC" --version)"
cuda_release="$(sed -n 's/.*release \([0-9][0-9]*\)\.\([0-9][0-9]*\),.*/\1.\2/p' <<<"$nvcc_version")"
[ -n "$cuda_release" ] || die "cannot read the CUDA release from '$NVCC --version'"
case "$(uname -m)" in
    x86_64 | amd64) cpu=x86_64 ;;
    aarch64 | arm64) cpu=aarch64 ;;
    *) die "unsupported CPU architecture $(uname -m)" ;;
esac
[ "$(uname -s)" = Linux ] || die "only Linux is supported, not $(uname -s)"

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

# The kernel id (file stem and op namespace) from every source that shapes the variant.
sources=(stable-abi-cuda/ops.cpp stable-abi-cuda/python/__init__.py stable-abi-cuda/python/_ops.py.in
    stable-abi-cpu/python_module.h cuda/ops.cu cuda/ops.h)
rev="$("${hub_layout[@]}" source-rev --root "$kernels" "${sources[@]/#/$kernels/}")"
id="$("${hub_layout[@]}" kernel-id --name "$name" --backend cuda --rev "$rev")"

mkdir -p "$out/$name/build" "$out/$name/.cache"
out="$(cd "$out" && pwd)"
root="$out/$name"
cache="$root/.cache"
tmp="$(mktemp -d)"
stage=""
trap 'rm -rf "$tmp" ${stage:+"$stage"}' EXIT

# Link-time only: empty stand-ins with libtorch's sonames (linking records them in DT_NEEDED
# and nothing else; the shim calls stay undefined, bound at load time as with libtorch), and
# libcudart.so -> the wheel's libcudart.so.13, which the wheel does not ship as a dev link.
standins=(torch torch_cpu torch_cuda c10 c10_cuda)
for lib in "${standins[@]}"; do
    "$cxx" -x c++ -shared -fPIC -nostdlib -Wl,-soname,"lib$lib.so" -o "$tmp/lib$lib.so" /dev/null
done
ln -s "$cudart" "$tmp/libcudart.so"

# target_version MAJOR.MINOR: TORCH_TARGET_VERSION as kernel-builder passes it,
# (major << 56) | (minor << 48) in hex (2.11 -> 0x020b000000000000).
target_version() {
    local major minor
    IFS=. read -r major minor <<<"$1"
    printf '0x%02x%02x000000000000' "$major" "$minor"
}

cxx_version="$("$cxx" --version | head -n1)"

# object_key <tool version> <flags...> -- <files...>: a hash of everything that shapes an
# object. --threads only changes how fast nvcc runs, so it is left out.
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
            printf '%s\n' "${f#"$kernels"/}"
            sha256sum <"$f"
        done
    } | sha256sum | cut -c1-16
}

# compile <dir> <object> <name> <command...>: unless the cached object exists, run the
# command in <dir>, writing <name> in a scratch directory (a fixed name, so nvcc's
# intermediate file names and thus the object's bytes do not vary), and move it to the cache.
compile() {
    local dir="$1" obj="$2" oname="$3"
    shift 3
    if [ -f "$obj" ] && [ "${CUDA_KERNEL_NOCACHE:-0}" != 1 ]; then
        echo "build-stable-abi-cuda-kernel: cached $(basename "$obj")" >&2
        return 0
    fi
    local scratch start=$SECONDS
    scratch="$(mktemp -d "$cache/.compile.XXXXXX")"
    (cd "$dir" && "$@" -o "$scratch/$oname") || {
        rm -rf "$scratch"
        die "compiling $oname failed"
    }
    mv "$scratch/$oname" "$obj"
    rm -rf "$scratch"
    echo "build-stable-abi-cuda-kernel: compiled $oname in $((SECONDS - start)) s" >&2
}

# check_library LIB: what a Hub CUDA stable-ABI library must (not) need.
check_library() {
    local lib="$1" base dyn undefined shims cxx_torch missing
    base="$(basename "$lib")"
    command -v readelf >/dev/null 2>&1 || return 0
    dyn="$(readelf -d "$lib" | tr -s ' ')"
    for soname in libtorch.so libtorch_cpu.so libtorch_cuda.so libc10.so libc10_cuda.so libcudart.so.13; do
        grep -qF "NEEDED) Shared library: [$soname]" <<<"$dyn" || die "$base does not list $soname as NEEDED"
    done
    if grep -qE '\((RPATH|RUNPATH)\)' <<<"$dyn"; then
        die "$base has an RPATH/RUNPATH; Hub kernels carry none"
    fi
    undefined="$(nm -D --undefined-only "$lib" | awk '{print $NF}' | sed 's/@.*//')"
    # SHIM_FUNCTIONS of the runtime's host: the quoted names in that list.
    shims="$(sed -n '/^pub const SHIM_FUNCTIONS/,/^];/p' "$provided" | grep -oE '"[A-Za-z0-9_]+"' | tr -d '"' | sort -u)"
    [ -n "$shims" ] || die "cannot read SHIM_FUNCTIONS from $provided"
    missing="$(grep -E '^(aoti_torch|torch)_' <<<"$undefined" | sort -u | comm -23 - <(printf '%s\n' "$shims") || true)"
    [ -z "$missing" ] || die "$base imports shim functions the runtime does not provide: $missing"
    cxx_torch="$(grep -E '^_ZN(K?)(3c10|2at|5torch)' <<<"$undefined" | grep -vE '^_ZNK?5torch6stable' || true)"
    [ -z "$cxx_torch" ] || die "$base needs PyTorch's C++ ABI: $(c++filt <<<"$cxx_torch" | tr '\n' ' ')"
    if command -v c++filt >/dev/null 2>&1; then
        cxx_torch="$(c++filt <<<"$undefined" | grep -E '(^|[^A-Za-z0-9_:])(c10|at|torch)::' | grep -vE '(^|[^A-Za-z0-9_:])torch::stable::' || true)"
        [ -z "$cxx_torch" ] || die "$base needs PyTorch's C++ ABI: $cxx_torch"
    fi
    nm -D --defined-only "$lib" | grep -qE " T PyInit_$id\$" || die "$base does not export PyInit_$id"
    # The GPU code in .nv_fatbin is exactly what CUDA_ARCHS asks for (read as the tvm-ffi
    # example's check reads it).
    python3 - "$cuda_src/check_nogpu.py" "$lib" "$archs" <<'PY' || die "$base does not carry the GPU code of CUDA_ARCHS=$archs"
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("check_nogpu", sys.argv[1])
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)
have = check.fatbin_code(Path(sys.argv[2]))
want = check.expected_code([a for a in sys.argv[3].split(";") if a])
if have != want:
    sys.exit(f"fatbin holds {sorted(have)}, expected {sorted(want)}")
PY
}

# build_variant TARGET: one Hub variant; prints its path.
build_variant() {
    local target="$1"
    local variant="torch-stable-abi${target/./}-cu${cuda_release/./}-${cpu}-linux"
    local defines=(-DUSE_CUDA=1 -DCUDA_KERNEL "-DTORCH_TARGET_VERSION=$(target_version "$target")"
        "-DTORCH_EXTENSION_NAME=$id")
    # kernel-builder's flags for a stable-ABI kernel with headers older than 2.12 (Release,
    # C++17, PIC, -fno-gnu-unique); hidden visibility, so only PyInit_<id> is exported; the
    # prefix maps keep checkout and toolchain paths out of the binary (__FILE__ in messages).
    local common=(-std=c++17 -O3 -DNDEBUG "${defines[@]}")
    local host=(-fPIC -fvisibility=hidden -fno-gnu-unique "-ffile-prefix-map=$repo/="
        "-ffile-prefix-map=$include=torch/include" "-ffile-prefix-map=$include_real=torch/include")
    local nvcc_flags=("${common[@]}" "${gencode[@]}" --threads "$threads" -ccbin "$cxx")
    local f
    for f in "${host[@]}"; do nvcc_flags+=("-Xcompiler=$f"); done
    local cxx_flags=("${common[@]}" "${host[@]}" "-DCUDA_OPS_ARCHS=\"$archs\""
        -isystem "$include" -isystem "$CUDA_INCLUDE")

    local ops_obj binding_obj
    ops_obj="$cache/ops-$(object_key "$nvcc_version $cxx_version" "${nvcc_flags[@]}" -- "$cuda_src/ops.cu" "$cuda_src/ops.h").o"
    binding_obj="$cache/binding-$(object_key "$cxx_version torch-headers $include cuda $cuda_release" "${cxx_flags[@]}" -- \
        "$src/ops.cpp" "$cuda_src/ops.h" "$kernels/stable-abi-cpu/python_module.h").o"
    # From the source directories, so the compilers see relative paths only.
    compile "$cuda_src" "$ops_obj" ops.o "$NVCC" "${nvcc_flags[@]}" -objtemp -c ops.cu
    compile "$src" "$binding_obj" binding.o "$cxx" "${cxx_flags[@]}" -c ops.cpp
    kept+=("$ops_obj" "$binding_obj")

    local dest="$root/build/$variant"
    stage="$(mktemp -d "$root/build/.stage.XXXXXX")"
    # The shared CUDA runtime (-cudart shared, found through the libcudart.so link in $tmp);
    # the stand-ins kept in DT_NEEDED as a real link against libtorch keeps them (one -Xlinker
    # list, since nvcc moves -l options behind the linker flags); soname = file name; no
    # rpath. -nodlink: no relocatable device code, so no device link.
    "$NVCC" -shared -nodlink -cudart shared -L"$tmp" -L"$CUDA_LIBDIR" -ccbin "$cxx" \
        -o "$stage/$id.abi3.so" "$ops_obj" "$binding_obj" \
        -Xlinker -soname,"$id.abi3.so" \
        -Xlinker "--push-state,--no-as-needed,$(IFS=,; echo "${standins[*]/#/-l}"),--pop-state"
    cp "$src/python/__init__.py" "$stage/__init__.py"
    sed "s/@OPS_ID@/$id/g" "$src/python/_ops.py.in" >"$stage/_ops.py"
    chmod 644 "$stage/__init__.py" "$stage/_ops.py"
    chmod 755 "$stage/$id.abi3.so"
    check_library "$stage/$id.abi3.so"
    "${hub_layout[@]}" write-metadata "$stage" --name "$name" --id "$id" --backend cuda --archs "$archs"
    "${hub_layout[@]}" verify "$stage" >/dev/null
    # Replace the whole variant so no stale file survives into the digest.
    rm -rf "$dest"
    mv "$stage" "$dest"
    chmod 755 "$dest"
    stage=""
    echo "$dest"
}

kept=()
for target in $targets; do
    [[ "$target" =~ ^2\.([0-9]+)$ ]] || die "STABLE_ABI_CUDA_TARGETS entry '$target' is not like 2.11"
    [ "${BASH_REMATCH[1]}" -ge 9 ] || die "target $target: torch::stable registers ops from 2.9 on"
    build_variant "$target"
done

# Keep only the objects of this build in the cache.
for f in "$cache"/ops-*.o "$cache"/binding-*.o; do
    [ -e "$f" ] || continue
    keep=0
    for k in "${kept[@]}"; do [ "$f" = "$k" ] && keep=1; done
    [ "$keep" = 1 ] || rm -f "$f"
done
