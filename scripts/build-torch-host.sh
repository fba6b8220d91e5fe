#!/usr/bin/env bash
# Build the torch stable-ABI host: the C++ implementation of the shim functions that
# stable-ABI kernels import, and stand-ins carrying libtorch's sonames.
#
#   scripts/build-torch-host.sh [OUTDIR]      (default OUTDIR: <repo>/target/torch-host)
#
# Produces, in OUTDIR:
#   libkernels_torch_host.so   the host (kernels-runtime/host/torch-stable/*.cpp): every shim
#                              function and the host's own kernels_torch_host_* interface; the
#                              only symbols it exports are those (-fvisibility=hidden,
#                              KT_EXPORT on each)
#   libtorch.so, libtorch_cpu.so, libtorch_cuda.so, libc10.so, libc10_cuda.so
#                              empty libraries with those sonames, each DT_NEEDED
#                              libkernels_torch_host.so (RUNPATH $ORIGIN)
# A kernel's DT_NEEDED libtorch*.so resolve to the stand-ins, and through them its imports
# resolve to the host, with everything opened RTLD_LOCAL: load libkernels_torch_host.so, then
# the stand-ins, by full path, then the kernel. glibc matches each DT_NEEDED name against the
# sonames of libraries already loaded, and binds a library's imports within its own
# dependency scope. So this also works when every file is opened from a memfd
# (/proc/self/fd/N), where $ORIGIN finds nothing. Nothing is added to the global scope:
# dlsym(RTLD_DEFAULT, "aoti_torch_abi_version") stays null.
#
# Then builds and runs check/self_check.cpp against the host.
#
# Knobs: CXX (default g++), CXXFLAGS (appended). One compiler call per file, as the `cc` crate
# would make them from a build script.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/kernels-runtime/host/torch-stable"
out="${1:-$repo/target/torch-host}"
cxx="${CXX:-g++}"

if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "build-torch-host: C++ compiler '$cxx' not found (install g++ or set CXX)" >&2
    exit 1
fi
case "$(uname -s)" in
    Linux) ;;
    *) echo "build-torch-host: only Linux is supported, not $(uname -s)" >&2; exit 1 ;;
esac

mkdir -p "$out/obj"
out="$(cd "$out" && pwd)"
# shellcheck disable=SC2206
flags=(-std=c++17 -O2 -fPIC -fvisibility=hidden -fvisibility-inlines-hidden -Wall -Wextra -Werror
    -fno-gnu-unique "-ffile-prefix-map=$repo/=" ${CXXFLAGS:-})
objects=()
for file in "$src"/*.cpp; do
    obj="$out/obj/$(basename "${file%.cpp}").o"
    "$cxx" "${flags[@]}" -c -o "$obj" "$file"
    objects+=("$obj")
done

# Template instances of libstdc++ keep default visibility; the version script hides them.
cat >"$out/exports.map" <<'MAP'
{
  global: aoti_torch_*; torch_*; kernels_torch_host_*; PyModule_Create2;
  local: *;
};
MAP
# Built in a staging name and moved, so a process loading the old library never sees half a file.
"$cxx" -shared -Wl,-soname,libkernels_torch_host.so -Wl,--no-undefined -Wl,-z,now -pthread \
    -Wl,--version-script,"$out/exports.map" \
    -o "$out/.libkernels_torch_host.so.tmp" "${objects[@]}"
mv -f "$out/.libkernels_torch_host.so.tmp" "$out/libkernels_torch_host.so"

for name in torch torch_cpu torch_cuda c10 c10_cuda; do
    "$cxx" -x c++ -shared -fPIC -nostdlib -Wl,-soname,"lib$name.so" -Wl,-rpath,'$ORIGIN' \
        -Wl,--no-as-needed -L"$out" -lkernels_torch_host -o "$out/.lib$name.so.tmp" /dev/null
    mv -f "$out/.lib$name.so.tmp" "$out/lib$name.so"
done

# Exports: only the shim functions, PyModule_Create2 and the host's own interface.
if command -v nm >/dev/null 2>&1; then
    stray="$(nm -D --defined-only "$out/libkernels_torch_host.so" | awk '{print $NF}' |
        grep -vE '^(aoti_torch_|torch_|kernels_torch_host_|PyModule_Create2$)' || true)"
    if [ -n "$stray" ]; then
        echo "build-torch-host: libkernels_torch_host.so exports more than the shim: $stray" >&2
        exit 1
    fi
fi
# What a kernel cannot reach: exceptions in parallel_for chunks, the dispatcher's ownership of
# its arguments, half-type fills, registration problems.
"$cxx" -std=c++17 -O1 -Wall -Wextra -Werror -pthread -o "$out/self_check" "$src/check/self_check.cpp" \
    -L"$out" -lkernels_torch_host -Wl,-rpath,"$out"
"$out/self_check" >/dev/null
echo "$out"
