#!/usr/bin/env python3
"""Link-time stand-ins for the CUDA libraries that candle's CUDA backend links.

candle-core enables cudarc's `dynamic-linking` feature, so a binary using candle's CUDA
backend is linked with -lcuda -lnvrtc -lcurand -lcublas -lcublasLt (and candle-kernels adds
-lcudart). The PyPI CUDA wheels used to build here ship no libcuda.so at all (it comes with the
driver) and no unversioned .so names to link against. NVIDIA's toolkit solves the first half
with lib64/stubs/libcuda.so; this script does the same for every library: a shared object with
the real soname (libcuda.so.1, libcublas.so.13, ...) that defines every function cudarc declares
for it, so the linker records `NEEDED <soname>` and the real library is found at run time.

The stand-ins are for the linker only: they are never installed or shipped, and each function
traps if one is ever called. The symbol lists come from cudarc's own bindings (the names it
loads in its `dynamic-loading` mode, one list per library, every CUDA version), so they cover
whatever the binary references.

    cuda_link_stubs.py --cudarc CUDARC_SRC_DIR --out DIR [--cc CC] [--cudart LIBCUDART_SO]

With --cudart, DIR/libcudart.so links to that real runtime instead of a stand-in.
"""

import argparse
import os
import re
import subprocess
import sys

# cudarc module -> (library name for -l, soname of the CUDA 13 library).
LIBRARIES = [
    ("driver", "cuda", "libcuda.so.1"),
    ("nvrtc", "nvrtc", "libnvrtc.so.13"),
    ("curand", "curand", "libcurand.so.10"),
    ("cublas", "cublas", "libcublas.so.13"),
    ("cublaslt", "cublasLt", "libcublasLt.so.13"),
]

NAME = re.compile(r'load::<_F>\("([A-Za-z_][A-Za-z0-9_]*)"\)')


def symbols(cudarc, module):
    sys_dir = os.path.join(cudarc, "src", module, "sys")
    names = set()
    for entry in sorted(os.listdir(sys_dir)):
        if entry.endswith(".rs"):
            with open(os.path.join(sys_dir, entry), encoding="utf-8") as f:
                names.update(NAME.findall(f.read()))
    if not names:
        sys.exit(f"cuda_link_stubs: no function names found under {sys_dir}; has cudarc's layout changed?")
    return sorted(names)


def build(cc, out, lib, soname, names):
    source = os.path.join(out, f"{lib}.c")
    with open(source, "w", encoding="utf-8") as f:
        f.write(f"/* Link-time stand-in for {soname}: every function traps. Never shipped. */\n")
        for name in names:
            f.write(f"void {name}(void) {{ __builtin_trap(); }}\n")
    target = os.path.join(out, f"lib{lib}.so")
    subprocess.run(
        [cc, "-shared", "-fPIC", "-nostdlib", f"-Wl,-soname,{soname}", "-o", target, source],
        check=True,
    )
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cudarc", required=True, help="cudarc's source directory (holding src/)")
    parser.add_argument("--out", required=True, help="directory to write the stand-ins to")
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"))
    parser.add_argument("--cudart", help="the real libcudart.so.<N> to link against")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    for module, lib, soname in LIBRARIES:
        names = symbols(args.cudarc, module)
        target = build(args.cc, args.out, lib, soname, names)
        print(f"{target}: {soname}, {len(names)} functions")
    if args.cudart:
        link = os.path.join(args.out, "libcudart.so")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.abspath(args.cudart), link)
        print(f"{link} -> {args.cudart}")


if __name__ == "__main__":
    main()
