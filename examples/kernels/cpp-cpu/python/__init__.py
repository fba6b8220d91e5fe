"""SiLU-and-multiply and RMSNorm CPU kernels (tvm-ffi).

Each function takes DLPack-capable arrays (numpy, torch, ...) and writes the
result into `out`, which it also returns.
"""

import tvm_ffi

from ._ops import ops


def silu_and_mul(x, out):
    """out[..., :d] = silu(x[..., :d]) * x[..., d:], with x of shape [..., 2d]."""
    ops.silu_and_mul(tvm_ffi.from_dlpack(out), tvm_ffi.from_dlpack(x))
    return out


def rms_norm(x, weight, eps, out):
    """out = x / sqrt(mean(x**2, axis=-1) + eps) * weight."""
    ops.rms_norm(
        tvm_ffi.from_dlpack(out),
        tvm_ffi.from_dlpack(x),
        tvm_ffi.from_dlpack(weight),
        float(eps),
    )
    return out


__all__ = ["rms_norm", "silu_and_mul"]
