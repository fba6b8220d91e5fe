"""Check a built cpp-cpu variant directory end to end.

    TVM_FFI_LIB=/path/to/libtvm_ffi.so python check.py <variant-dir>

Two independent paths call the kernel:

1. the variant's own Python package (its `__init__.py` / `_ops.py`, through the
   tvm_ffi wheel's `load_module`), on numpy arrays via DLPack;
2. the raw C ABI through ctypes, the way a non-Python host calls it: preload
   libtvm_ffi.so with RTLD_GLOBAL, dlopen `<id>.so`, call `__tvm_ffi_<name>` with
   hand-built `TVMFFIAny` / `DLTensor` values, and fetch raised errors with
   `TVMFFIErrorMoveFromRaised`.

Results are compared with numpy references; wrong dtype, shape and device must
come back as errors carrying the kernel's message. Needs numpy and the
apache-tvm-ffi wheel. Exits non-zero on the first failure.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

EPS = 1e-6
RTOL_F32, ATOL_F32 = 1e-5, 1e-6
RTOL_HALF, ATOL_HALF = 1e-2, 1e-3

passed = 0


def ok(what: str) -> None:
    global passed
    passed += 1
    print(f"ok   {what}")


def ref_silu_and_mul(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    d = x.shape[-1] // 2
    g, u = x[..., :d], x[..., d:]
    return g / (1.0 + np.exp(-g)) * u


def ref_rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w.astype(np.float64)


def expect_error(fn, kind: str, needle: str, what: str) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - any raised kind is inspected below
        msg = str(e)
        if type(e).__name__ != kind or needle not in msg:
            raise AssertionError(f"{what}: expected {kind} containing {needle!r}, got {type(e).__name__}: {msg}")
        ok(f"{what} -> {kind}: {msg.splitlines()[0]}")
        return
    raise AssertionError(f"{what}: no error raised")


# ---------------------------------------------------------------- python path


def load_package(variant: Path):
    spec = importlib.util.spec_from_file_location(
        "cpp_cpu_variant", variant / "__init__.py", submodule_search_locations=[str(variant)]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def check_python(variant: Path) -> None:
    k = load_package(variant)
    rng = np.random.default_rng(0)

    for dtype, rtol, atol in ((np.float32, RTOL_F32, ATOL_F32), (np.float16, RTOL_HALF, ATOL_HALF)):
        x = rng.standard_normal((3, 5, 2 * 67)).astype(dtype)
        out = np.zeros((3, 5, 67), dtype=dtype)
        k.silu_and_mul(x, out)
        np.testing.assert_allclose(out.astype(np.float64), ref_silu_and_mul(x), rtol=rtol, atol=atol)
        ok(f"python: silu_and_mul {np.dtype(dtype).name} [3,5,134] matches numpy")

        x = rng.standard_normal((7, 1000)).astype(dtype)
        w = rng.standard_normal(1000).astype(dtype)
        out = np.zeros_like(x)
        k.rms_norm(x, w, EPS, out)
        np.testing.assert_allclose(out.astype(np.float64), ref_rms_norm(x, w, EPS), rtol=rtol, atol=atol)
        ok(f"python: rms_norm {np.dtype(dtype).name} [7,1000] matches numpy")

    # A view that starts inside a larger buffer.
    base = rng.standard_normal((6, 64)).astype(np.float32)
    x = base[2:]
    w = np.ones(64, dtype=np.float32)
    out = np.zeros_like(x)
    k.rms_norm(x, w, EPS, out)
    np.testing.assert_allclose(out, ref_rms_norm(x, w, EPS), rtol=RTOL_F32, atol=ATOL_F32)
    ok("python: rms_norm on an offset view")

    xi = np.ones((2, 8), dtype=np.int32)
    oi = np.zeros((2, 4), dtype=np.int32)
    expect_error(lambda: k.silu_and_mul(xi, oi), "TypeError", "must be float32, float16 or bfloat16, got int32",
                 "python: silu_and_mul int32")
    x = np.ones((2, 8), dtype=np.float32)
    expect_error(lambda: k.silu_and_mul(x, np.zeros((2, 5), np.float32)), "ValueError",
                 "last dimension of `x` must be twice", "python: silu_and_mul bad shape")
    expect_error(lambda: k.silu_and_mul(x, np.zeros((2, 4), np.float16)), "TypeError",
                 "must have the same dtype", "python: silu_and_mul mixed dtypes")
    expect_error(lambda: k.rms_norm(x, np.ones(7, np.float32), EPS, np.zeros_like(x)), "ValueError",
                 "`weight` must have length 8", "python: rms_norm bad weight")
    expect_error(lambda: k.rms_norm(x, np.ones(8, np.float32), -1.0, np.zeros_like(x)), "ValueError",
                 "`eps` must be a finite non-negative number", "python: rms_norm negative eps")
    expect_error(lambda: k.rms_norm(x[:, ::2], np.ones(4, np.float32), EPS, np.zeros((2, 4), np.float32)),
                 "ValueError", "must be contiguous", "python: rms_norm strided input")


# ---------------------------------------------------------------- raw C ABI

K_DL_CPU, K_DL_CUDA = 1, 2
K_DL_FLOAT, K_DL_BFLOAT = 2, 4
K_INT, K_FLOAT, K_DLTENSOR_PTR = 1, 3, 7


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


class TVMFFIAny(ctypes.Structure):
    _fields_ = [("type_index", ctypes.c_int32), ("zero_padding", ctypes.c_uint32), ("value", AnyValue)]


class ByteArray(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class ErrorObject(ctypes.Structure):
    # TVMFFIObject header (24 bytes) followed by TVMFFIErrorCell's kind and message.
    _fields_ = [
        ("combined_ref_count", ctypes.c_uint64),
        ("type_index", ctypes.c_int32),
        ("padding", ctypes.c_uint32),
        ("deleter", ctypes.c_void_p),
        ("kind", ByteArray),
        ("message", ByteArray),
    ]


class KernelError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class RawKernel:
    def __init__(self, variant: Path, libtvm_ffi: str):
        meta = json.loads((variant / "metadata.json").read_bytes())
        self.ffi = ctypes.CDLL(libtvm_ffi, mode=ctypes.RTLD_GLOBAL)
        self.ffi.TVMFFIErrorMoveFromRaised.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.ffi.TVMFFIObjectDecRef.argtypes = [ctypes.c_void_p]
        self.lib = ctypes.CDLL(str(variant / f"{meta['id']}.so"), mode=ctypes.RTLD_LOCAL)
        self._keep: list = []

    def tensor(self, arr: np.ndarray, code: int, bits: int, device_type: int = K_DL_CPU) -> TVMFFIAny:
        shape = (ctypes.c_int64 * arr.ndim)(*arr.shape)
        t = DLTensor(arr.ctypes.data, DLDevice(device_type, 0), arr.ndim, DLDataType(code, bits, 1), shape, None, 0)
        self._keep += [shape, t, arr]
        a = TVMFFIAny(K_DLTENSOR_PTR, 0)
        a.value.v_ptr = ctypes.addressof(t)
        return a

    @staticmethod
    def float_(v: float) -> TVMFFIAny:
        a = TVMFFIAny(K_FLOAT, 0)
        a.value.v_float64 = v
        return a

    def call(self, name: str, *args: TVMFFIAny) -> None:
        fn = getattr(self.lib, f"__tvm_ffi_{name}")
        fn.restype = ctypes.c_int32
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(TVMFFIAny), ctypes.c_int32, ctypes.POINTER(TVMFFIAny)]
        argv = (TVMFFIAny * len(args))(*args)
        result = TVMFFIAny(0, 0)
        rc = fn(None, argv, len(args), ctypes.byref(result))
        self._keep.clear()
        if rc == 0:
            return
        err = ctypes.c_void_p()
        self.ffi.TVMFFIErrorMoveFromRaised(ctypes.byref(err))
        obj = ErrorObject.from_address(err.value)
        kind = ctypes.string_at(obj.kind.data, obj.kind.size).decode()
        message = ctypes.string_at(obj.message.data, obj.message.size).decode()
        self.ffi.TVMFFIObjectDecRef(err)
        raise KernelError(kind, message)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_value(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def check_raw(variant: Path, libtvm_ffi: str) -> None:
    k = RawKernel(variant, libtvm_ffi)
    rng = np.random.default_rng(1)

    x = rng.standard_normal((4, 2 * 33)).astype(np.float32)
    out = np.zeros((4, 33), np.float32)
    k.call("silu_and_mul", k.tensor(out, K_DL_FLOAT, 32), k.tensor(x, K_DL_FLOAT, 32))
    np.testing.assert_allclose(out, ref_silu_and_mul(x), rtol=RTOL_F32, atol=ATOL_F32)
    ok("ctypes: silu_and_mul float32 matches numpy")

    x = rng.standard_normal((5, 256)).astype(np.float32)
    w = rng.standard_normal(256).astype(np.float32)
    out = np.zeros_like(x)
    k.call("rms_norm", k.tensor(out, K_DL_FLOAT, 32), k.tensor(x, K_DL_FLOAT, 32), k.tensor(w, K_DL_FLOAT, 32),
           k.float_(EPS))
    np.testing.assert_allclose(out, ref_rms_norm(x, w, EPS), rtol=RTOL_F32, atol=ATOL_F32)
    ok("ctypes: rms_norm float32 matches numpy")

    xb, wb = bf16_bits(x), bf16_bits(w)
    outb = np.zeros_like(xb)
    k.call("rms_norm", k.tensor(outb, K_DL_BFLOAT, 16), k.tensor(xb, K_DL_BFLOAT, 16), k.tensor(wb, K_DL_BFLOAT, 16),
           k.float_(EPS))
    np.testing.assert_allclose(bf16_value(outb), ref_rms_norm(bf16_value(xb), bf16_value(wb), EPS), rtol=1e-2,
                               atol=1e-2)
    ok("ctypes: rms_norm bfloat16 matches numpy within 1e-2")

    xi = np.ones((2, 8), np.int32)
    expect_error(lambda: k.call("silu_and_mul", k.tensor(np.zeros((2, 4), np.int32), 0, 32), k.tensor(xi, 0, 32)),
                 "KernelError", "TypeError: silu_and_mul: `x` must be float32, float16 or bfloat16, got int32",
                 "ctypes: silu_and_mul int32")
    xf = np.ones((2, 8), np.float32)
    expect_error(lambda: k.call("silu_and_mul", k.tensor(np.zeros((2, 4), np.float32), K_DL_FLOAT, 32),
                                k.tensor(xf, K_DL_FLOAT, 32, device_type=K_DL_CUDA)),
                 "KernelError", "ValueError: silu_and_mul: `x` must be a CPU tensor, got a cuda tensor",
                 "ctypes: silu_and_mul on a cuda tensor")
    expect_error(lambda: k.call("rms_norm", k.tensor(xf, K_DL_FLOAT, 32)), "KernelError", "TypeError",
                 "ctypes: rms_norm with one argument")


def main() -> int:
    variant = Path(sys.argv[1]).resolve()
    libtvm_ffi = os.environ.get("TVM_FFI_LIB")
    if not libtvm_ffi:
        print("set TVM_FFI_LIB to the path of libtvm_ffi.so (scripts/tvm-ffi-env.sh exports it)", file=sys.stderr)
        return 2
    # The raw ABI goes first, before the tvm_ffi Python package is imported at all.
    check_raw(variant, libtvm_ffi)
    check_python(variant)
    print(f"{passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
