// Activation kernels for the CPU, written against PyTorch's stable ABI (`torch::stable`), so
// the library imports only the C functions `aoti_torch_*` / `torch_*` from libtorch's sonames.
//
// Ops, in the namespace TORCH_EXTENSION_NAME (the library's file stem):
//   silu_and_mul(Tensor! out, Tensor input) -> ()       out = silu(x[..., :d]) * x[..., d:]
//   gelu_tanh_and_mul(Tensor! out, Tensor input) -> ()  out = gelu_tanh(x[..., :d]) * x[..., d:]
//   gelu_tanh(Tensor input) -> Tensor                   a new tensor from aten::empty_like
//
// Tensors are contiguous float32 or float64 CPU tensors; anything else throws with a message
// naming the op and the argument. Build: scripts/build-stable-abi-kernel.sh.

#include <cmath>
#include <cstdint>
#include <string>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#ifndef TORCH_EXTENSION_NAME
#error "define TORCH_EXTENSION_NAME as the library's file stem"
#endif

namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

template <typename T>
T silu(T x) {
  return x / (T(1) + std::exp(-x));
}

template <typename T>
T gelu_tanh(T x) {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  const T k = T(0.7978845608028654);
  return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
}

void check_cpu_contiguous(const char* op, const char* arg, const Tensor& t) {
  STD_TORCH_CHECK(t.is_cpu(), op, ": `", arg, "` must be a CPU tensor");
  STD_TORCH_CHECK(t.is_contiguous(), op, ": `", arg, "` must be contiguous");
  const ScalarType dtype = t.scalar_type();
  STD_TORCH_CHECK(
      dtype == ScalarType::Float || dtype == ScalarType::Double,
      op, ": `", arg, "` must be float32 or float64");
}

// Runs body(begin, end) over [0, n) rows: split over torch's threads where the target has
// torch_parallel_for (2.10), else on the calling thread.
template <typename F>
void for_rows(int64_t n, int64_t row_len, const F& body) {
#if TORCH_FEATURE_VERSION >= TORCH_VERSION_2_10_0
  const int64_t grain = row_len >= 4096 ? 1 : 4096 / (row_len > 0 ? row_len : 1);
  torch::stable::parallel_for(0, n, grain, body);
#else
  (void)row_len;
  body(0, n);
#endif
}

// out[r, i] = act(x[r, i]) * x[r, d + i], x of shape [..., 2d], out of shape [..., d].
template <typename T, T (*Act)(T)>
void gated(const Tensor& out, const Tensor& input) {
  const int64_t d = out.size(-1);
  const int64_t rows = d == 0 ? 0 : out.numel() / d;
  const T* x = static_cast<const T*>(input.data_ptr());
  T* y = static_cast<T*>(out.data_ptr());
  for_rows(rows, d, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * 2 * d;
      T* yr = y + r * d;
      for (int64_t i = 0; i < d; ++i) {
        yr[i] = Act(xr[i]) * xr[d + i];
      }
    }
  });
}

template <float (*ActF)(float), double (*ActD)(double)>
void gated_op(const char* op, Tensor& out, const Tensor& input) {
  check_cpu_contiguous(op, "out", out);
  check_cpu_contiguous(op, "input", input);
  STD_TORCH_CHECK(out.scalar_type() == input.scalar_type(), op, ": `out` and `input` must have one dtype");
  const int64_t dim = input.dim();
  STD_TORCH_CHECK(dim >= 1 && out.dim() == dim, op, ": `out` and `input` must have the same rank, at least 1");
  for (int64_t i = 0; i + 1 < dim; ++i) {
    STD_TORCH_CHECK(out.size(i) == input.size(i), op, ": `out` and `input` differ in dimension ", i);
  }
  STD_TORCH_CHECK(
      input.size(-1) == 2 * out.size(-1),
      op, ": the last dimension of `input` (", input.size(-1), ") must be twice that of `out` (",
      out.size(-1), ")");
  if (input.scalar_type() == ScalarType::Float) {
    gated<float, ActF>(out, input);
  } else {
    gated<double, ActD>(out, input);
  }
}

void silu_and_mul(Tensor& out, const Tensor& input) {
  gated_op<silu<float>, silu<double>>("silu_and_mul", out, input);
}

void gelu_tanh_and_mul(Tensor& out, const Tensor& input) {
  gated_op<gelu_tanh<float>, gelu_tanh<double>>("gelu_tanh_and_mul", out, input);
}

template <typename T>
void elementwise_gelu_tanh(const Tensor& out, const Tensor& input) {
  const T* x = static_cast<const T*>(input.data_ptr());
  T* y = static_cast<T*>(out.data_ptr());
  for_rows(input.numel(), 1, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      y[i] = gelu_tanh<T>(x[i]);
    }
  });
}

// The output comes from the dispatcher (aten::empty_like), so the host allocates it.
Tensor gelu_tanh_op(const Tensor& input) {
  check_cpu_contiguous("gelu_tanh", "input", input);
  Tensor out = torch::stable::empty_like(input);
  if (input.scalar_type() == ScalarType::Float) {
    elementwise_gelu_tanh<float>(out, input);
  } else {
    elementwise_gelu_tanh<double>(out, input);
  }
  return out;
}

}  // namespace

// One level of expansion, so the namespace is the value of TORCH_EXTENSION_NAME.
#define STABLE_ABI_CPU_LIBRARY(ns, m) STABLE_TORCH_LIBRARY(ns, m)
#define STABLE_ABI_CPU_LIBRARY_IMPL(ns, k, m) STABLE_TORCH_LIBRARY_IMPL(ns, k, m)

STABLE_ABI_CPU_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("silu_and_mul(Tensor! out, Tensor input) -> ()");
  m.def("gelu_tanh_and_mul(Tensor! out, Tensor input) -> ()");
  m.def("gelu_tanh(Tensor input) -> Tensor");
}

STABLE_ABI_CPU_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CPU, m) {
  m.impl("silu_and_mul", TORCH_BOX(&silu_and_mul));
  m.impl("gelu_tanh_and_mul", TORCH_BOX(&gelu_tanh_and_mul));
  m.impl("gelu_tanh", TORCH_BOX(&gelu_tanh_op));
}

#include "python_module.h"
