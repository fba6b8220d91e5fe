"""A deliberately unsupported torch stable-ABI kernel (see unsupported.cpp)."""

from ._ops import ops


def matmul_checked(a, b):
    """a @ b through aten::matmul."""
    return ops.matmul_checked(a, b)


__all__ = ["matmul_checked"]
