#!/usr/bin/env bash
# Run the GPU suite on the GPU machine, from a folder built by scripts/build-gpu-check.sh.
# Needs no cargo and no network: it only runs the prebuilt binaries in that folder.
#
#   scripts/gpu-check.sh [DIR | DIR.tar.xz] [-- GPU_CHECK_OPTIONS...]     (default DIR: .device)
#
# Prints the GPU, the capability check of `cargo-kernels platform` over real variant names and
# arch lists, then runs DIR/gpu-check on DIR/kernel: variant selection and its trace,
# correctness on candle CUDA tensors, error handling, benchmarks; the same for DIR/stable-abi-cuda,
# the torch stable-ABI variant of the kernels, when the folder has it. Everything is also written
# to $GPU_CHECK_LOG (default DIR/gpu-check.log). Exit status: that of gpu-check (0 passed,
# 1 a check failed, 2 could not run).
#
# The suite links the CUDA driver (libcuda.so.1) and, through candle, cuBLAS and cuRAND; the
# CUDA runtime comes from DIR/lib. Libraries the loader cannot find are searched for in the
# usual places (CUDA_HOME, /usr/local/cuda*, the NVIDIA driver's folder, Python's nvidia-*
# wheels) and added to LD_LIBRARY_PATH.
set -uo pipefail

dir=.device
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    dir="$1"
    shift
fi
[ "${1:-}" = "--" ] && shift
# The packed folder (DIR.tar.xz from scripts/build-gpu-check.sh) is unpacked beside itself.
case "$dir" in
*.tar.xz)
    archive="$dir"
    dir="${archive%.tar.xz}"
    tar -C "$(dirname "$archive")" -xJf "$archive" || {
        echo "gpu-check.sh: cannot unpack $archive" >&2
        exit 2
    }
    ;;
esac
dir="$(cd "$dir" 2>/dev/null && pwd)" || {
    echo "gpu-check.sh: no such folder; build it with scripts/build-gpu-check.sh" >&2
    exit 2
}
for f in gpu-check gpu-check-cuda cargo-kernels lib/libtvm_ffi.so; do
    [ -e "$dir/$f" ] || {
        echo "gpu-check.sh: $dir/$f is missing; build the folder with scripts/build-gpu-check.sh" >&2
        exit 2
    }
done
log="${GPU_CHECK_LOG:-$dir/gpu-check.log}"
: >"$log" || {
    echo "gpu-check.sh: cannot write $log" >&2
    exit 2
}

main() {
    echo "== gpu-check.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
    else
        echo "nvidia-smi: not found"
    fi
    (cd "$dir" && sha256sum -c --quiet MANIFEST 2>&1) && echo "folder: $dir (files match MANIFEST)" || echo "folder: $dir (MANIFEST check failed or absent)"

    # The libraries gpu-check-cuda needs, found.
    export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    missing() {
        ldd "$dir/gpu-check-cuda" 2>/dev/null | sed -n 's/^[[:space:]]*\([^ ]*\) => not found.*/\1/p'
    }
    candidate_dirs() {
        local d
        for d in ${CUDA_HOME:+"$CUDA_HOME/lib64" "$CUDA_HOME/lib"} /usr/local/cuda/lib64 \
            /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 /usr/local/nvidia/lib64 \
            /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
            [ -d "$d" ] && echo "$d"
        done
        if command -v python3 >/dev/null 2>&1; then
            python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    for root in nvidia.__path__:
        for lib in sorted(glob.glob(os.path.join(root, "*", "lib"))):
            print(lib)
except Exception:
    pass
PY
        fi
    }
    libs_missing="$(missing)"
    if [ -n "$libs_missing" ]; then
        dirs="$(candidate_dirs)"
        for name in $libs_missing; do
            found=""
            while IFS= read -r d; do
                [ -n "$d" ] && [ -e "$d/$name" ] && found="$d" && break
            done <<<"$dirs"
            if [ -z "$found" ]; then
                found="$(find /usr/local /opt /usr/lib -xdev -name "$name" -print -quit 2>/dev/null | xargs -r dirname)"
            fi
            if [ -n "$found" ]; then
                echo "library path: $name found in $found"
                case ":$LD_LIBRARY_PATH:" in
                    *":$found:"*) ;;
                    *) LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$found" ;;
                esac
            else
                echo "library path: $name not found anywhere searched"
            fi
        done
    fi
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "gpu-check-cuda resolves:"
    ldd "$dir/gpu-check-cuda" 2>&1 | grep -E 'cuda|cublas|curand|nvrtc|stdc\+\+|not found' | sed 's/^/  /'

    # Capability check over variant names and arch lists, as the CLI shows it.
    archs="$(python3 -c 'import json,sys; print(",".join(json.load(open(sys.argv[1]))["backend"]["archs"]))' "$dir"/kernel/build/*/metadata.json 2>/dev/null || echo "8.0,9.0+PTX")"
    echo
    echo "== cargo-kernels platform: variant names (the real variant offers $archs)"
    "$dir/cargo-kernels" platform "tvm-ffi01-cu130-x86_64-linux:$archs" tvm-ffi01-cu129-x86_64-linux:9.0 \
        tvm-ffi01-cu132-x86_64-linux:9.0 tvm-ffi01-cu130-aarch64-linux:9.0 tvm-ffi02-cu130-x86_64-linux:9.0 \
        tvm-ffi01-cpu-x86_64-linux torch210-cxx11-cu130-x86_64-linux
    for a in 8.0 8.0+PTX 9.0a 10.0+PTX; do
        echo "== cargo-kernels platform: capability check, archs $a"
        "$dir/cargo-kernels" platform "tvm-ffi01-cu130-x86_64-linux:$a" | sed -n '/^variant selection for cuda/,/=>/p'
    done

    echo
    echo "== gpu-check"
    export KERNELS_TVM_FFI_LIB="$dir/lib/libtvm_ffi.so"
    # Backtraces for panics, not for every error value (candle attaches one when allowed).
    export RUST_BACKTRACE=1 RUST_LIB_BACKTRACE=0
    start=$SECONDS
    local output
    output="$(mktemp)"
    "$dir/gpu-check" "$@" "$dir/kernel" | tee "$output"
    status=${PIPESTATUS[0]}

    # The lines that matter most, together at the end.
    echo
    echo "== recap"
    grep -E '^RESULT (platform|select|bench|speedup|summary)' "$output"
    grep -E '^RESULT (check|error-check|two-gpus) .*status=fail' "$output" || echo "no failed checks reported"
    rm -f "$output"
    echo "gpu-check.sh: gpu-check exited with $status after $((SECONDS - start)) s"

    # The demo block on candle CUDA tensors: every kernelized layer must pick the embedded
    # cu130 variant (strict: a fallback is an error) and match the candle forwards. Not with
    # --latency-only, which runs the latency tables (CUDA and CPU) alone.
    local latency_only=false arg
    for arg in "$@"; do [ "$arg" = --latency-only ] && latency_only=true; done
    if [ -x "$dir/kernels-demo" ] && ! $latency_only; then
        local demo_status=0 cache
        cache="$(mktemp -d)"
        echo
        echo "== kernels-demo --device cuda (f32, strict)"
        KERNELS_RS_CACHE="$cache" KERNELS_STRICT=1 "$dir/kernels-demo" --device cuda || demo_status=$?
        echo "== kernels-demo --device cuda --dtype bf16 --seq 1024 (strict)"
        KERNELS_RS_CACHE="$cache" KERNELS_STRICT=1 "$dir/kernels-demo" --device cuda --dtype bf16 --seq 1024 || demo_status=$?
        # Verify mode on candle CUDA tensors: each layer's first call also runs its candle
        # forward, and strict mode fails a kernel beyond the dtype's default tolerance.
        echo "== kernels-demo --device cuda --dtype bf16 with KERNELS_VERIFY=1 (strict)"
        KERNELS_RS_CACHE="$cache" KERNELS_STRICT=1 KERNELS_VERIFY=1 "$dir/kernels-demo" --device cuda --dtype bf16 --runs 1 || demo_status=$?
        echo "== kernels-demo --device cuda with KERNELS_VERIFY=1 (f32, report only)"
        KERNELS_RS_CACHE="$cache" KERNELS_VERIFY=1 "$dir/kernels-demo" --device cuda --runs 1 || demo_status=$?
        # The same block with its CUDA layers served by the torch stable-ABI variant of the same
        # kernels (LOCAL_KERNELS points the demo's CUDA kernel at it), through the runtime's own
        # host: strict, so each layer must choose torch-stable-abi… and match candle.
        if [ -d "$dir/stable-abi-cuda" ]; then
            local stable="LOCAL_KERNELS=../../build-out/cuda=$dir/stable-abi-cuda"
            for dtype in f32 bf16; do
                echo "== kernels-demo --device cuda --dtype $dtype, torch stable-ABI variant (strict, verify)"
                env "$stable" KERNELS_RS_CACHE="$cache" KERNELS_STRICT=1 KERNELS_VERIFY=1 \
                    "$dir/kernels-demo" --device cuda --dtype "$dtype" --runs 3 || demo_status=$?
            done
            # f16 without verify mode: its default f16 tolerance (rtol 1e-3) flags the fused
            # kernel's single rounding against the forward's two (silu, then the product); the
            # demo still compares the whole block's output with its own tolerance.
            echo "== kernels-demo --device cuda --dtype f16, torch stable-ABI variant (strict)"
            env "$stable" KERNELS_RS_CACHE="$cache" KERNELS_STRICT=1 \
                "$dir/kernels-demo" --device cuda --dtype f16 --runs 3 || demo_status=$?
        fi
        echo "== kernels-demo --device cuda with DISABLE_KERNEL_MAPPING=1"
        KERNELS_RS_CACHE="$cache" DISABLE_KERNEL_MAPPING=1 "$dir/kernels-demo" --device cuda --runs 3 || demo_status=$?
        rm -rf "$cache"
        echo "gpu-check.sh: kernels-demo exited with $demo_status"
        [ "$status" -ne 0 ] || status=$demo_status
    fi
    # The CPU half of the latency table, on this machine's (quieter, larger) CPU.
    if [ -x "$dir/latency-cpu" ]; then
        local latency_status=0
        echo "== latency-cpu (kernelized, adapter, raw, candle on the CPU)"
        "$dir/latency-cpu" --kernel-dir "$dir/cpu-kernel" || latency_status=$?
        echo "gpu-check.sh: latency-cpu exited with $latency_status"
        [ "$status" -ne 0 ] || status=$latency_status
    fi
    return "$status"
}

main "$@" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
