"""CUDA ops of a torch stable-ABI kernel, registered with torch.ops on import."""

from ._ops import ops


def silu_and_mul(out, x):
    """out = silu(x[..., :d]) * x[..., d:], with x of shape [..., 2d]; returns out."""
    ops.silu_and_mul(out, x)
    return out


def rms_norm(out, x, weight, eps=1e-6):
    """out = x / sqrt(mean(x^2, -1) + eps) * weight, with weight of shape [x.shape[-1]]; returns out."""
    ops.rms_norm(out, x, weight, eps)
    return out


def fail_on_purpose(out, x):
    """Always raises RuntimeError (a test of the kernel's error path)."""
    ops.fail_on_purpose(out, x)


__all__ = ["fail_on_purpose", "rms_norm", "silu_and_mul"]
