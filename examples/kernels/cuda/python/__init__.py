"""RMSNorm, fused residual-add RMSNorm and SiLU-and-multiply CUDA kernels (tvm-ffi).

Each function takes DLPack-capable CUDA arrays (torch, cupy, ...) of one dtype
(float32, float16 or bfloat16), writes the result into the output arrays and
returns them. The kernel runs on the stream tvm-ffi holds for the device
(`TVMFFIEnvSetStream`), the legacy default stream when none was set; it is not
synchronised.
"""

import tvm_ffi

from ._ops import ops


def rms_norm(x, weight, eps, out):
    """out = x / sqrt(mean(x**2, axis=-1) + eps) * weight."""
    ops.rms_norm(
        tvm_ffi.from_dlpack(out),
        tvm_ffi.from_dlpack(x),
        tvm_ffi.from_dlpack(weight),
        float(eps),
    )
    return out


def add_rms_norm(x, residual, weight, eps, out, residual_out):
    """residual_out = x + residual; out = rms_norm(residual_out, weight, eps)."""
    ops.add_rms_norm(
        tvm_ffi.from_dlpack(out),
        tvm_ffi.from_dlpack(residual_out),
        tvm_ffi.from_dlpack(x),
        tvm_ffi.from_dlpack(residual),
        tvm_ffi.from_dlpack(weight),
        float(eps),
    )
    return out, residual_out


def silu_and_mul(x, out):
    """out = silu(x[..., :d]) * x[..., d:], with x of shape [..., 2d]."""
    ops.silu_and_mul(tvm_ffi.from_dlpack(out), tvm_ffi.from_dlpack(x))
    return out


__all__ = ["add_rms_norm", "rms_norm", "silu_and_mul"]
