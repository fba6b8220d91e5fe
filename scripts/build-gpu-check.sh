#!/usr/bin/env bash
# Build everything the GPU suite needs into one folder, on a machine without a GPU; the
# GPU machine then only runs scripts/gpu-check.sh on that folder (no cargo, no network there).
#
#   scripts/build-gpu-check.sh [OUTDIR]        (default OUTDIR: <repo>/.device)
#
# OUTDIR afterwards holds:
#   gpu-check          starts anywhere: platform, variant selection, loading, host-memory check;
#                      runs gpu-check-cuda when a CUDA device is present
#   gpu-check-cuda     the suite on candle's CUDA backend (correctness, errors, benchmarks)
#   cargo-kernels      the CLI, for `cargo-kernels platform` (the capability check)
#   kernel/build/tvm-ffi01-cu130-x86_64-linux/   the CUDA example kernels (scripts/build-cuda-kernel.sh)
#   stable-abi-cuda/build/torch-stable-abi211-cu130-x86_64-linux/   the same device code behind
#                      torch's stable ABI (scripts/build-stable-abi-cuda-kernel.sh)
#   lib/libtvm_ffi.so  the tvm-ffi runtime of the pinned wheel (scripts/tvm-ffi-env.sh)
#   lib/libcudart.so.13  the CUDA runtime from PyPI, which candle-kernels and the stable-ABI
#                      kernel link
#   latency-cpu        the CPU latency table (benches/benches/latency_cpu.rs), on cpu-kernel/,
#                      the Rust example kernel laid out by `cargo kernels package`
#   MANIFEST           sha256 and size of every file
# and OUTDIR.tar.xz, the folder packed for the trip (scripts/gpu-check.sh takes either).
# Binaries are release builds with debug info stripped.
#
# Building candle's CUDA backend here (see gpu-check/BUILD.md): nvcc 13.0 from PyPI
# (scripts/cuda-env.sh) compiles candle-kernels' PTX and MoE kernels for CUDA_COMPUTE_CAP
# (default 90, the H100); the CUDA libraries candle links dynamically (libcuda, cuBLAS,
# cuRAND, NVRTC) are stood in for at link time by generated stubs with the real sonames
# (gpu-check/cuda_link_stubs.py), so the binary needs the real ones only where it runs.
#
# Knobs: CUDA_COMPUTE_CAP (default 90), CARGO (default cargo), plus those of
# scripts/build-cuda-kernel.sh, scripts/cuda-env.sh and scripts/tvm-ffi-env.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/.device}"
cargo="${CARGO:-cargo}"
limit_mib=60

die() {
    echo "build-gpu-check: $*" >&2
    exit 1
}
step() {
    echo "build-gpu-check: $*" >&2
}

cd "$repo"

step "CUDA example kernels"
variant_dir="$(bash scripts/build-cuda-kernel.sh | tail -n 1)"
[ -f "$variant_dir/metadata.json" ] || die "scripts/build-cuda-kernel.sh did not produce a variant ($variant_dir)"
variant="$(basename "$variant_dir")"

step "CUDA torch stable-ABI example kernel"
stable_abi_dir="$(bash scripts/build-stable-abi-cuda-kernel.sh | tail -n 1)"
[ -f "$stable_abi_dir/metadata.json" ] ||
    die "scripts/build-stable-abi-cuda-kernel.sh did not produce a variant ($stable_abi_dir)"
stable_abi_variant="$(basename "$stable_abi_dir")"

# shellcheck source=scripts/tvm-ffi-env.sh
source scripts/tvm-ffi-env.sh
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
cudart="$CUDA_LIBDIR/libcudart.so.13"
[ -f "$cudart" ] || die "$cudart is missing (nvidia-cuda-runtime from scripts/cuda-env.sh)"

step "link-time stand-ins for the CUDA libraries candle links"
cudarc_dir="$("$cargo" metadata --format-version 1 --locked --features kernels-gpu-check/cuda | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
for node in meta["resolve"]["nodes"]:
    if packages[node["id"]]["name"] == "candle-core":
        for dep in node["deps"]:
            if dep["name"] == "cudarc":
                print(os.path.dirname(packages[dep["pkg"]]["manifest_path"]))
                sys.exit(0)
sys.exit("candle-core does not depend on cudarc in this lock file")
')"
link_dir="$repo/target/gpu-check-cuda-link"
python3 gpu-check/cuda_link_stubs.py --cudarc "$cudarc_dir" --out "$link_dir" --cudart "$cudart" >&2
export GPU_CHECK_CUDA_LINK_DIR="$link_dir"

step "cargo build --release: gpu-check, gpu-check-cuda (candle CUDA), cargo-kernels"
"$cargo" build --release --locked -p kernels-gpu-check --bin gpu-check
"$cargo" build --release --locked -p kernels-gpu-check --features cuda --bin gpu-check-cuda
"$cargo" build --release --locked -p kernels-cli --bin cargo-kernels
step "cargo rustc --release: kernels-demo with candle CUDA (embeds the CUDA variants, libtvm_ffi.so and libcudart.so.13)"
KERNELS_TVM_FFI_LIB="$TVM_FFI_LIB" KERNELS_CUDART_LIB="$cudart" "$cargo" rustc --release --locked -p kernels-demo --features cuda --bin kernels-demo \
    -- -L "native=$link_dir"
step "cargo bench --no-run: latency_cpu (the CPU half of the latency table), and the Rust example kernel it calls"
latency_cpu="$("$cargo" bench --locked -p kernels-benches --bench latency_cpu --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "latency_cpu" and m.get("executable"):
        print(m["executable"])
')"
[ -x "$latency_cpu" ] || die "cargo bench --no-run built no latency_cpu executable"
cpu_kernel_layout="$repo/target/gpu-check-cpu-kernel"
rm -rf "$cpu_kernel_layout"
"$cargo" run -q --release --locked -p kernels-cli -- kernels package examples/kernels/rust-cpu --out "$cpu_kernel_layout" >&2
release="$("$cargo" metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"

step "assembling $out"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -rf "$out/gpu-check" "$out/gpu-check-cuda" "$out/cargo-kernels" "$out/kernels-demo" "$out/kernel" "$out/lib" "$out/MANIFEST" \
    "$out/gpu-check.log" "$out/stable-abi-cuda" "$out/latency-cpu" "$out/cpu-kernel"
for bin in gpu-check gpu-check-cuda cargo-kernels kernels-demo; do
    objcopy --strip-debug "$release/$bin" "$out/$bin"
done
objcopy --strip-debug "$latency_cpu" "$out/latency-cpu"
cp -r "$cpu_kernel_layout" "$out/cpu-kernel"
mkdir -p "$out/kernel/build" "$out/lib"
cp -r "$variant_dir" "$out/kernel/build/$variant"
mkdir -p "$out/stable-abi-cuda/build"
cp -r "$stable_abi_dir" "$out/stable-abi-cuda/build/$stable_abi_variant"
cp "$TVM_FFI_LIB" "$out/lib/libtvm_ffi.so"
cp "$cudart" "$out/lib/libcudart.so.13"

# The suite links exactly these CUDA libraries; anything else would need a change here and in
# scripts/gpu-check.sh.
needed="$(readelf -d "$out/gpu-check-cuda" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')"
step "gpu-check-cuda needs: $needed"
if readelf -d "$out/gpu-check" | grep -qE 'NEEDED.*\[lib(cuda|cudart|cublas|curand|nvrtc)'; then
    die "gpu-check links a CUDA library; it must start without one"
fi

(cd "$out" && find . -type f ! -name MANIFEST ! -name '*.log' -print0 | sort -z | xargs -0 sha256sum) >"$out/MANIFEST"
# What travels to the GPU machine is the xz archive of the folder (candle 0.11's CUDA kernels
# make the unpacked binaries about 115 MiB; they compress about 8x).
archive="$out.tar.xz"
tar -C "$(dirname "$out")" -cf - "$(basename "$out")" | xz -T0 -3 >"$archive.tmp"
mv "$archive.tmp" "$archive"
size_kib="$(du -sk "$archive" | cut -f1)"
[ "$size_kib" -lt $((limit_mib * 1024)) ] || die "$archive is $((size_kib / 1024)) MiB, over the $limit_mib MiB limit"
step "$out: $(($(du -sk "$out" | cut -f1) / 1024)) MiB, packed as $archive: $((size_kib / 1024)) MiB, variants $variant and $stable_abi_variant"
echo "$archive"
