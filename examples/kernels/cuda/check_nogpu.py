"""Check a built CUDA variant through its raw C ABI, on a machine without a GPU.

    python3 check_nogpu.py <variant-dir> <libtvm_ffi.so>

Standard library only. Loads libtvm_ffi.so (RTLD_GLOBAL) and the variant's
`<id>.so` (RTLD_LOCAL) with ctypes, the way a non-Python host does, and calls
the exported `__tvm_ffi_<name>` functions with hand-built `TVMFFIAny` /
`DLTensor` arguments whose data pointers are never dereferenced:

* every wrong argument (dtype, shape, rank, device, mixed devices, layout,
  overlap, eps) must come back as the documented error kind and message;
* where no CUDA driver can be loaded, a well-formed call must fail cleanly
  with a RuntimeError from the CUDA runtime instead of crashing, which shows
  the library loads and runs its checks with no driver present.

It also reads the CUDA fat binary embedded in the library (ELF section
`.nv_fatbin`) and checks that the GPU code it holds is exactly what
`backend.archs` in metadata.json promises: SASS for each "X.Y", SASS and PTX
for each "X.Y+PTX", nothing else.

Results of real launches are checked on a GPU machine, not here. Exits
non-zero on the first failure.
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys
from pathlib import Path

K_DL_CPU, K_DL_CUDA = 1, 2
K_DL_INT, K_DL_FLOAT, K_DL_BFLOAT = 0, 2, 4
K_ANY_FLOAT, K_ANY_DLTENSOR_PTR = 3, 7

# Fake, well-aligned device addresses; nothing reads them unless a kernel launches.
BASE = 0x7F0000000000

checks = 0


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class AnyValue(ctypes.Union):
    _fields_ = [("v_int64", ctypes.c_int64), ("v_float64", ctypes.c_double), ("v_ptr", ctypes.c_void_p)]


class Any(ctypes.Structure):
    _fields_ = [("type_index", ctypes.c_int32), ("padding", ctypes.c_uint32), ("value", AnyValue)]


class ByteArray(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class ErrorObject(ctypes.Structure):
    # Object header (reference count, type index, deleter), then the error cell.
    _fields_ = [
        ("ref_count", ctypes.c_uint64),
        ("type_index", ctypes.c_int32),
        ("padding", ctypes.c_uint32),
        ("deleter", ctypes.c_void_p),
        ("kind", ByteArray),
        ("message", ByteArray),
    ]


class Raised(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class Tensor:
    """A DLTensor description; `arg()` builds the TVMFFIAny that points at it."""

    def __init__(self, shape, code=K_DL_FLOAT, bits=32, device=(K_DL_CUDA, 0), data=BASE, strides=None):
        self.shape = (ctypes.c_int64 * len(shape))(*shape)
        self.strides = (ctypes.c_int64 * len(strides))(*strides) if strides else None
        self.t = DLTensor(data, DLDevice(*device), len(shape), DLDataType(code, bits, 1), self.shape,
                          self.strides, 0)

    def arg(self) -> Any:
        a = Any(K_ANY_DLTENSOR_PTR, 0)
        a.value.v_ptr = ctypes.addressof(self.t)
        return a


def number(v: float) -> Any:
    a = Any(K_ANY_FLOAT, 0)
    a.value.v_float64 = v
    return a


class Library:
    def __init__(self, variant: Path, libtvm_ffi: str):
        meta = json.loads((variant / "metadata.json").read_bytes())
        self.ffi = ctypes.CDLL(libtvm_ffi, mode=ctypes.RTLD_GLOBAL)
        self.ffi.TVMFFIErrorMoveFromRaised.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.ffi.TVMFFIObjectDecRef.argtypes = [ctypes.c_void_p]
        self.lib = ctypes.CDLL(str(variant / f"{meta['id']}.so"), mode=ctypes.RTLD_LOCAL)

    def call(self, name: str, *args) -> None:
        fn = getattr(self.lib, f"__tvm_ffi_{name}")
        fn.restype = ctypes.c_int32
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(Any), ctypes.c_int32, ctypes.POINTER(Any)]
        anys = [a.arg() if isinstance(a, Tensor) else a for a in args]
        argv = (Any * len(anys))(*anys)
        result = Any(0, 0)
        if fn(None, argv, len(anys), ctypes.byref(result)) == 0:
            return
        err = ctypes.c_void_p()
        self.ffi.TVMFFIErrorMoveFromRaised(ctypes.byref(err))
        if not err.value:
            raise AssertionError(f"{name} returned an error code but raised no error object")
        obj = ErrorObject.from_address(err.value)
        kind = ctypes.string_at(obj.kind.data, obj.kind.size).decode()
        message = ctypes.string_at(obj.message.data, obj.message.size).decode()
        self.ffi.TVMFFIObjectDecRef(err)
        raise Raised(kind, message)


def expect(lib: Library, kind: str, needle: str, name: str, *args) -> None:
    global checks
    try:
        lib.call(name, *args)
    except Raised as e:
        if e.kind != kind or needle not in e.message:
            raise AssertionError(f"{name}: expected {kind} containing {needle!r}, got {e}") from None
        checks += 1
        print(f"ok   {name}: {kind}: {e.message.splitlines()[0]}")
        return
    raise AssertionError(f"{name}: expected {kind} containing {needle!r}, but the call succeeded")


def elf_section(data: bytes, wanted: str) -> bytes:
    """Contents of a section of a little-endian ELF64 file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise AssertionError("not a little-endian ELF64 file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    for name, _type, _flags, _addr, offset, size in headers:
        end = data.index(b"\0", names_at + name)
        if data[names_at + name:end].decode() == wanted:
            return data[offset:offset + size]
    raise AssertionError(f"no {wanted} section")


def fatbin_code(library: Path) -> set[tuple[str, int]]:
    """(kind, sm) of every code entry in the library's fat binaries: ("sass"|"ptx", 90)."""
    blob = elf_section(library.read_bytes(), ".nv_fatbin")
    found = set()
    pos = 0
    while pos + 16 <= len(blob):
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", blob, pos)
        if magic == 0:  # alignment padding between fat binaries
            pos += 8
            continue
        if magic != 0xBA55ED50:
            raise AssertionError(f"unexpected fat binary magic {magic:#x} at offset {pos}")
        entry, end = pos + header_size, pos + header_size + fat_size
        while entry < end:
            kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", blob, entry)
            sm = struct.unpack_from("<I", blob, entry + 28)[0]
            if kind not in (1, 2):
                raise AssertionError(f"unknown fat binary entry kind {kind}")
            found.add(("ptx" if kind == 1 else "sass", sm))
            entry += entry_header + payload
        pos = end
    return found


def expected_code(archs: list[str]) -> set[tuple[str, int]]:
    want = set()
    for arch in archs:
        base = arch.removesuffix("+PTX")
        sm = int(base.replace(".", "").rstrip("af"))
        want.add(("sass", sm))
        if base != arch:
            want.add(("ptx", sm))
    return want


def check_archs(variant: Path) -> None:
    global checks
    meta = json.loads((variant / "metadata.json").read_bytes())
    backend = meta["backend"]
    if backend.get("type") != "cuda" or not backend.get("archs"):
        raise AssertionError(f"metadata.json backend is {backend}, expected type cuda with archs")
    have = fatbin_code(variant / f"{meta['id']}.so")
    want = expected_code(backend["archs"])
    if have != want:
        raise AssertionError(f"fat binary holds {sorted(have)}, metadata.json archs {backend['archs']} "
                             f"promise {sorted(want)}")
    checks += 1
    listed = ", ".join(f"{kind} sm_{sm}" for kind, sm in sorted(have, key=lambda c: (c[1], c[0])))
    print(f"ok   fat binary holds {listed}, as archs {backend['archs']} promise")


def driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def main(variant: Path, libtvm_ffi: str) -> None:
    check_archs(variant)
    lib = Library(variant, libtvm_ffi)
    for name in ("rms_norm", "add_rms_norm", "silu_and_mul"):
        getattr(lib.lib, f"__tvm_ffi_{name}")
    print("ok   exports __tvm_ffi_rms_norm, __tvm_ffi_add_rms_norm, __tvm_ffi_silu_and_mul")

    mib = 1 << 20
    x = Tensor([4, 64], data=BASE)
    w = Tensor([64], data=BASE + mib)
    out = Tensor([4, 64], data=BASE + 2 * mib)
    eps = number(1e-6)

    # rms_norm
    expect(lib, "ValueError", "`x` must be a CUDA device tensor, got a cpu tensor", "rms_norm",
           out, Tensor([4, 64], device=(K_DL_CPU, 0)), w, eps)
    expect(lib, "ValueError", "all tensors must be on one device, but `x` is on cuda:0 and `out` on cuda:1",
           "rms_norm", Tensor([4, 64], device=(K_DL_CUDA, 1), data=BASE + 2 * mib), x, w, eps)
    expect(lib, "TypeError", "`x` must be float32, float16 or bfloat16, got int32", "rms_norm",
           Tensor([4, 64], K_DL_INT, 32, data=BASE + 2 * mib), Tensor([4, 64], K_DL_INT, 32),
           Tensor([64], K_DL_INT, 32, data=BASE + mib), eps)
    expect(lib, "TypeError", "`x` and `weight` must have the same dtype, got float32 and bfloat16", "rms_norm",
           out, x, Tensor([64], K_DL_BFLOAT, 16, data=BASE + mib), eps)
    expect(lib, "ValueError", "`x` and `out` must have the same shape; dimension 1 is 64 and 32", "rms_norm",
           Tensor([4, 32], data=BASE + 2 * mib), x, w, eps)
    expect(lib, "ValueError", "`weight` must be 1-D with length 64 (the last dimension of `x`), got length 63",
           "rms_norm", out, x, Tensor([63], data=BASE + mib), eps)
    expect(lib, "ValueError", "`x` must be contiguous", "rms_norm",
           out, Tensor([4, 64], strides=[128, 1]), w, eps)
    expect(lib, "ValueError", "`eps` must be a finite non-negative number, got -1", "rms_norm",
           out, x, w, number(-1.0))
    expect(lib, "ValueError", "`out` and `x` partially overlap in memory", "rms_norm",
           Tensor([4, 64], data=BASE + 4), x, w, eps)
    expect(lib, "ValueError", "`out` and `weight` overlap in memory", "rms_norm",
           Tensor([4, 64], data=BASE + mib - 16), x, w, eps)

    # add_rms_norm
    res = Tensor([4, 64], data=BASE + 3 * mib)
    res_out = Tensor([4, 64], data=BASE + 4 * mib)
    expect(lib, "ValueError", "`x` and `residual` must have the same shape", "add_rms_norm",
           out, res_out, x, Tensor([4, 65], data=BASE + 3 * mib), w, eps)
    expect(lib, "TypeError", "`x` and `residual_out` must have the same dtype", "add_rms_norm",
           out, Tensor([4, 64], K_DL_FLOAT, 16, data=BASE + 4 * mib), x, res, w, eps)
    expect(lib, "ValueError", "`out` and `residual_out` overlap in memory", "add_rms_norm",
           out, out, x, res, w, eps)
    expect(lib, "ValueError", "`residual_out` must be a CUDA device tensor, got a cuda_host", "add_rms_norm",
           out, Tensor([4, 64], device=(3, 0), data=BASE + 4 * mib), x, res, w, eps)

    # silu_and_mul
    gate_up = Tensor([4, 128])
    act = Tensor([4, 64], data=BASE + 2 * mib)
    expect(lib, "ValueError", "the last dimension of `x` must be twice that of `out`, got 128 and 63",
           "silu_and_mul", Tensor([4, 63], data=BASE + 2 * mib), gate_up)
    expect(lib, "ValueError", "leading dimension 0 differs: `x` has 4, `out` has 3", "silu_and_mul",
           Tensor([3, 64], data=BASE + 2 * mib), gate_up)
    expect(lib, "ValueError", "`x` and `out` must have the same rank, got 2 and 3", "silu_and_mul",
           Tensor([1, 4, 64], data=BASE + 2 * mib), gate_up)
    expect(lib, "ValueError", "`out` and `x` overlap in memory; they must be disjoint buffers", "silu_and_mul",
           Tensor([4, 64], data=BASE + 256), gate_up)
    expect(lib, "TypeError", "`x` and `out` must have the same dtype, got float32 and float16", "silu_and_mul",
           Tensor([4, 64], K_DL_FLOAT, 16, data=BASE + 2 * mib), gate_up)

    if driver_present():
        print("skip well-formed calls: a CUDA driver is present (run them on data, on the GPU)")
    else:
        expect(lib, "RuntimeError", "rms_norm: cannot make cuda:0 current", "rms_norm", out, x, w, eps)
        expect(lib, "RuntimeError", "add_rms_norm: cannot make cuda:0 current", "add_rms_norm",
               out, res_out, x, res, w, eps)
        expect(lib, "RuntimeError", "silu_and_mul: cannot make cuda:0 current", "silu_and_mul", act, gate_up)
    # Empty inputs never reach the CUDA runtime.
    lib.call("rms_norm", Tensor([0, 64], data=BASE + 2 * mib), Tensor([0, 64]), w, eps)
    lib.call("silu_and_mul", Tensor([0, 64], data=BASE + 2 * mib), Tensor([0, 128]))
    print("ok   empty inputs return without touching the CUDA runtime")
    print(f"{checks + 2} checks passed")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2])
