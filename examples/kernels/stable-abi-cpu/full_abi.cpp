// Part of the unsupported kernel (see unsupported.cpp): compiled without TORCH_TARGET_VERSION
// against PyTorch's full C++ headers, so TORCH_CHECK's failure path is libc10's
// c10::detail::torchCheckFail, a C++ symbol no stable-ABI host provides.

#include <cstdint>

#include <c10/util/Exception.h>

void check_matrices(int64_t a_dim, int64_t b_dim) {
  TORCH_CHECK(a_dim == 2 && b_dim == 2, "matmul_checked: `a` and `b` must be matrices");
}
