"""Activation ops of a torch stable-ABI CPU kernel, registered with torch.ops on import."""

from ._ops import ops


def silu_and_mul(out, x):
    """out = silu(x[..., :d]) * x[..., d:], with x of shape [..., 2d]; returns out."""
    ops.silu_and_mul(out, x)
    return out


def gelu_tanh_and_mul(out, x):
    """out = gelu_tanh(x[..., :d]) * x[..., d:], with x of shape [..., 2d]; returns out."""
    ops.gelu_tanh_and_mul(out, x)
    return out


def gelu_tanh(x):
    """A new tensor holding gelu_tanh(x)."""
    return ops.gelu_tanh(x)


__all__ = ["gelu_tanh", "gelu_tanh_and_mul", "silu_and_mul"]
