// A deliberately unsupported stable-ABI kernel, for tests of the pre-load check: it calls an
// ATen op that a host without libtorch does not implement (aten::matmul, through the
// dispatcher), and its shape check lives in full_abi.cpp, compiled against PyTorch's full C++
// headers, so the library also needs libc10's C++ ABI. Built by
// scripts/build-stable-abi-kernel.sh into a variant of its own.
//
//   matmul_checked(Tensor a, Tensor b) -> Tensor

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#ifndef TORCH_EXTENSION_NAME
#error "define TORCH_EXTENSION_NAME as the library's file stem"
#endif

// In full_abi.cpp.
void check_matrices(int64_t a_dim, int64_t b_dim);

namespace {

torch::stable::Tensor matmul_checked(const torch::stable::Tensor& a, const torch::stable::Tensor& b) {
  check_matrices(a.dim(), b.dim());
  return torch::stable::matmul(a, b);
}

}  // namespace

#define UNSUPPORTED_LIBRARY(ns, m) STABLE_TORCH_LIBRARY(ns, m)
#define UNSUPPORTED_LIBRARY_IMPL(ns, k, m) STABLE_TORCH_LIBRARY_IMPL(ns, k, m)

UNSUPPORTED_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("matmul_checked(Tensor a, Tensor b) -> Tensor");
}

UNSUPPORTED_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CPU, m) {
  m.impl("matmul_checked", TORCH_BOX(&matmul_checked));
}

#include "python_module.h"
