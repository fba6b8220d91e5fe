// CUDA kernels behind PyTorch's stable ABI (`torch::stable`): the library imports only the C
// functions `aoti_torch_*` / `torch_*` from libtorch's sonames, plus the shared CUDA runtime.
//
// Ops, in the namespace TORCH_EXTENSION_NAME (the library's file stem), CUDA dispatch key:
//   silu_and_mul(Tensor! out, Tensor input) -> ()
//       input [..., 2d], out [..., d]:  out = silu(input[..., :d]) * input[..., d:]
//   rms_norm(Tensor! out, Tensor input, Tensor weight, float eps) -> ()
//       input, out [..., h], weight [h]:  out = input / sqrt(mean(input^2, -1) + eps) * weight
//   add_rms_norm(Tensor! out, Tensor! residual_out, Tensor input, Tensor residual, Tensor weight,
//                float eps) -> ()
//       residual_out = input + residual (rounded to the dtype), out = rms_norm(residual_out)
//   silu_and_mul_new(Tensor input) -> Tensor
//       silu_and_mul into an output it allocates with aten::new_empty, returned
//   fail_on_purpose(Tensor! out, Tensor input) -> ()
//       checks that `input` is a CUDA tensor, then always throws kFailOnPurposeMessage
//
// Tensors are contiguous CUDA tensors on one device, all of one dtype: float32, float16 or
// bfloat16 (computed in float32). The device code is examples/kernels/cuda/ops.cu, the same
// that the tvm-ffi example runs; this file only checks arguments and picks the stream. As in
// stable-ABI kernels built for PyTorch, a call makes the input's device current with a
// torch::stable::accelerator::DeviceGuard, enqueues one kernel on the stream the caller made
// current for that device (aoti_torch_get_current_cuda_stream) and returns without
// synchronising. Bad arguments and failed launches throw std::runtime_error (STD_TORCH_CHECK).
// Build: scripts/build-stable-abi-cuda-kernel.sh.

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include "../cuda/ops.h"

#ifndef TORCH_EXTENSION_NAME
#error "define TORCH_EXTENSION_NAME as the library's file stem"
#endif
#ifndef USE_CUDA
#error "define USE_CUDA: aoti_torch_get_current_cuda_stream is declared only for CUDA builds"
#endif
#ifndef CUDA_OPS_ARCHS
#define CUDA_OPS_ARCHS "unknown"
#endif

namespace stable_abi_cuda {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// What fail_on_purpose throws, after STD_TORCH_CHECK's "<function>, <file>:<line>, " prefix.
constexpr const char* kFailOnPurposeMessage =
    "fail_on_purpose: this op always fails; it tests how a CUDA kernel's error reaches the caller";

// ---- argument checks --------------------------------------------------------

void check_cuda_contiguous(const char* op, const char* arg, const Tensor& t) {
  STD_TORCH_CHECK(t.is_cuda(), op, ": `", arg, "` must be a CUDA tensor");
  STD_TORCH_CHECK(t.dim() >= 1, op, ": `", arg, "` must have at least one dimension");
  STD_TORCH_CHECK(t.is_contiguous(), op, ": `", arg,
                  "` must be contiguous (row-major); make a contiguous copy first");
  STD_TORCH_CHECK(t.numel() == 0 || t.data_ptr() != nullptr, op, ": `", arg,
                  "` has a null data pointer");
}

void check_same_device(const char* op, const char* a, const Tensor& ta, const char* b,
                       const Tensor& tb) {
  STD_TORCH_CHECK(ta.get_device_index() == tb.get_device_index(), op,
                  ": all tensors must be on one device, but `", a, "` is on cuda:",
                  ta.get_device_index(), " and `", b, "` on cuda:", tb.get_device_index());
}

const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float:
      return "float32";
    case ScalarType::Half:
      return "float16";
    case ScalarType::BFloat16:
      return "bfloat16";
    case ScalarType::Double:
      return "float64";
    default:
      return "an unsupported dtype";
  }
}

cuda_ops::DType dtype_of(const char* op, const char* arg, const Tensor& t) {
  switch (t.scalar_type()) {
    case ScalarType::Float:
      return cuda_ops::DType::kF32;
    case ScalarType::Half:
      return cuda_ops::DType::kF16;
    case ScalarType::BFloat16:
      return cuda_ops::DType::kBf16;
    default:
      break;
  }
  STD_TORCH_CHECK(false, op, ": `", arg, "` must be float32, float16 or bfloat16, got ",
                  dtype_name(t.scalar_type()));
  return cuda_ops::DType::kF32;  // not reached
}

void check_same_dtype(const char* op, const char* a, const Tensor& ta, const char* b,
                      const Tensor& tb) {
  STD_TORCH_CHECK(ta.scalar_type() == tb.scalar_type(), op, ": `", a, "` and `", b,
                  "` must have the same dtype, got ", dtype_name(ta.scalar_type()), " and ",
                  dtype_name(tb.scalar_type()));
}

void check_same_shape(const char* op, const char* a, const Tensor& ta, const char* b,
                      const Tensor& tb) {
  STD_TORCH_CHECK(ta.dim() == tb.dim(), op, ": `", a, "` and `", b,
                  "` must have the same shape, got ranks ", ta.dim(), " and ", tb.dim());
  for (int64_t i = 0; i < ta.dim(); ++i) {
    STD_TORCH_CHECK(ta.size(i) == tb.size(i), op, ": `", a, "` and `", b,
                    "` must have the same shape; dimension ", i, " is ", ta.size(i), " and ",
                    tb.size(i));
  }
}

// Rows longer than this would overflow the kernels' 32-bit in-row indices.
constexpr int64_t kMaxLastDim = int64_t{1} << 30;

int64_t checked_last_dim(const char* op, const char* arg, int64_t n) {
  STD_TORCH_CHECK(n <= kMaxLastDim, op, ": the last dimension of `", arg, "` is ", n,
                  ", more than the supported ", kMaxLastDim, " elements");
  return n;
}

// Byte range [begin, end) of a contiguous tensor of a checked dtype.
struct Span {
  uintptr_t begin;
  uintptr_t end;
};

Span span_of(const Tensor& t) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uint64_t element = t.scalar_type() == ScalarType::Float ? 4 : 2;
  return Span{begin, begin + static_cast<uint64_t>(t.numel()) * element};
}

enum class Alias { kForbidden, kIdenticalOk };

// An output may be the very same buffer as an input (in place), never a partial overlap.
void check_overlap(const char* op, const char* a, const Tensor& ta, const char* b,
                   const Tensor& tb, Alias alias) {
  const Span sa = span_of(ta);
  const Span sb = span_of(tb);
  if (sa.begin == sa.end || sb.begin == sb.end) return;
  if (sa.begin >= sb.end || sb.begin >= sa.end) return;
  if (alias == Alias::kIdenticalOk && sa.begin == sb.begin && sa.end == sb.end) return;
  STD_TORCH_CHECK(alias == Alias::kForbidden, op, ": `", a, "` and `", b,
                  "` partially overlap in memory; pass the same buffer (in place) or disjoint "
                  "buffers");
  STD_TORCH_CHECK(false, op, ": `", a, "` and `", b,
                  "` overlap in memory; they must be disjoint buffers");
}

// ---- launching --------------------------------------------------------------

// Makes `device`'s current stream the launch stream of `launch(stream)` while a DeviceGuard
// holds `device` current, as PyTorch's own CUDA ops do. The launch status is checked after
// the guard is gone, so the error path never throws while the guard is alive.
template <typename Launch>
void launch_on_current_stream(const char* op, int32_t device, const Launch& launch) {
  cudaError_t err;
  {
    const torch::stable::accelerator::DeviceGuard guard(device);
    void* stream = nullptr;
    TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device, &stream));
    err = launch(static_cast<cudaStream_t>(stream));
  }
  STD_TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed on cuda:", device, ": ",
                  cudaGetErrorName(err), " (", static_cast<int>(err),
                  "): ", cudaGetErrorString(err),
                  " [this library carries code for CUDA archs " CUDA_OPS_ARCHS "]");
}

// ---- ops --------------------------------------------------------------------

void silu_and_mul(Tensor& out, const Tensor& input) {
  constexpr const char* op = "silu_and_mul";
  check_cuda_contiguous(op, "input", input);
  check_cuda_contiguous(op, "out", out);
  check_same_device(op, "input", input, "out", out);
  const cuda_ops::DType dtype = dtype_of(op, "input", input);
  check_same_dtype(op, "input", input, "out", out);
  const int64_t dim = input.dim();
  STD_TORCH_CHECK(out.dim() == dim, op, ": `input` and `out` must have the same rank, got ", dim,
                  " and ", out.dim());
  for (int64_t i = 0; i + 1 < dim; ++i) {
    STD_TORCH_CHECK(input.size(i) == out.size(i), op, ": leading dimension ", i,
                    " differs: `input` has ", input.size(i), ", `out` has ", out.size(i));
  }
  const int64_t d = checked_last_dim(op, "out", out.size(-1));
  STD_TORCH_CHECK(input.size(-1) == 2 * d, op,
                  ": the last dimension of `input` must be twice that of `out`, got ",
                  input.size(-1), " and ", d);
  check_overlap(op, "out", out, "input", input, Alias::kForbidden);

  const int64_t numel = out.numel();
  if (numel == 0) return;
  void* y = out.data_ptr();
  const void* x = input.data_ptr();
  const int64_t rows = numel / d;
  launch_on_current_stream(op, input.get_device_index(), [&](cudaStream_t stream) {
    return cuda_ops::launch_silu_and_mul(dtype, y, x, rows, d, stream);
  });
}

void rms_norm(Tensor& out, const Tensor& input, const Tensor& weight, double eps) {
  constexpr const char* op = "rms_norm";
  check_cuda_contiguous(op, "input", input);
  check_cuda_contiguous(op, "weight", weight);
  check_cuda_contiguous(op, "out", out);
  check_same_device(op, "input", input, "weight", weight);
  check_same_device(op, "input", input, "out", out);
  const cuda_ops::DType dtype = dtype_of(op, "input", input);
  check_same_dtype(op, "input", input, "weight", weight);
  check_same_dtype(op, "input", input, "out", out);
  check_same_shape(op, "input", input, "out", out);
  const int64_t h = checked_last_dim(op, "input", input.size(-1));
  STD_TORCH_CHECK(weight.dim() == 1 && weight.size(0) == h, op,
                  ": `weight` must be 1-D with length ", h,
                  " (the last dimension of `input`), got ", weight.dim() == 1 ? "length " : "rank ",
                  weight.dim() == 1 ? weight.size(0) : weight.dim());
  STD_TORCH_CHECK(eps >= 0.0 && std::isfinite(eps), op,
                  ": `eps` must be a finite non-negative number, got ", eps);
  check_overlap(op, "out", out, "input", input, Alias::kIdenticalOk);
  check_overlap(op, "out", out, "weight", weight, Alias::kForbidden);

  const int64_t numel = input.numel();
  if (numel == 0) return;
  cuda_ops::RmsNormArgs args{};
  args.out = out.data_ptr();
  args.x = input.data_ptr();
  args.weight = weight.data_ptr();
  args.rows = numel / h;
  args.hidden = h;
  args.eps = static_cast<float>(eps);
  launch_on_current_stream(op, input.get_device_index(), [&](cudaStream_t stream) {
    return cuda_ops::launch_rms_norm(dtype, args, stream);
  });
}

void add_rms_norm(Tensor& out, Tensor& residual_out, const Tensor& input, const Tensor& residual,
                  const Tensor& weight, double eps) {
  constexpr const char* op = "add_rms_norm";
  check_cuda_contiguous(op, "input", input);
  check_cuda_contiguous(op, "residual", residual);
  check_cuda_contiguous(op, "weight", weight);
  check_cuda_contiguous(op, "out", out);
  check_cuda_contiguous(op, "residual_out", residual_out);
  check_same_device(op, "input", input, "residual", residual);
  check_same_device(op, "input", input, "weight", weight);
  check_same_device(op, "input", input, "out", out);
  check_same_device(op, "input", input, "residual_out", residual_out);
  const cuda_ops::DType dtype = dtype_of(op, "input", input);
  check_same_dtype(op, "input", input, "residual", residual);
  check_same_dtype(op, "input", input, "weight", weight);
  check_same_dtype(op, "input", input, "out", out);
  check_same_dtype(op, "input", input, "residual_out", residual_out);
  check_same_shape(op, "input", input, "residual", residual);
  check_same_shape(op, "input", input, "out", out);
  check_same_shape(op, "input", input, "residual_out", residual_out);
  const int64_t h = checked_last_dim(op, "input", input.size(-1));
  STD_TORCH_CHECK(weight.dim() == 1 && weight.size(0) == h, op,
                  ": `weight` must be 1-D with length ", h,
                  " (the last dimension of `input`), got ", weight.dim() == 1 ? "length " : "rank ",
                  weight.dim() == 1 ? weight.size(0) : weight.dim());
  STD_TORCH_CHECK(eps >= 0.0 && std::isfinite(eps), op,
                  ": `eps` must be a finite non-negative number, got ", eps);
  // Each output may be one of the inputs (in place); the two outputs never share memory.
  check_overlap(op, "out", out, "residual_out", residual_out, Alias::kForbidden);
  check_overlap(op, "out", out, "input", input, Alias::kIdenticalOk);
  check_overlap(op, "out", out, "residual", residual, Alias::kIdenticalOk);
  check_overlap(op, "residual_out", residual_out, "input", input, Alias::kIdenticalOk);
  check_overlap(op, "residual_out", residual_out, "residual", residual, Alias::kIdenticalOk);
  check_overlap(op, "out", out, "weight", weight, Alias::kForbidden);
  check_overlap(op, "residual_out", residual_out, "weight", weight, Alias::kForbidden);

  const int64_t numel = input.numel();
  if (numel == 0) return;
  cuda_ops::RmsNormArgs args{};
  args.out = out.data_ptr();
  args.residual_out = residual_out.data_ptr();
  args.x = input.data_ptr();
  args.residual = residual.data_ptr();
  args.weight = weight.data_ptr();
  args.rows = numel / h;
  args.hidden = h;
  args.eps = static_cast<float>(eps);
  launch_on_current_stream(op, input.get_device_index(), [&](cudaStream_t stream) {
    return cuda_ops::launch_rms_norm(dtype, args, stream);
  });
}

// silu_and_mul with its output allocated here, through the dispatcher (`aten::new_empty`, so by
// the host's allocator on the input's device and current stream), and returned.
Tensor silu_and_mul_new(const Tensor& input) {
  constexpr const char* op = "silu_and_mul_new";
  check_cuda_contiguous(op, "input", input);
  (void)dtype_of(op, "input", input);
  const int64_t dim = input.dim();
  STD_TORCH_CHECK(input.size(-1) % 2 == 0, op, ": the last dimension of `input` must be even, got ",
                  input.size(-1));
  std::vector<int64_t> sizes(static_cast<size_t>(dim));
  for (int64_t i = 0; i < dim; ++i) sizes[static_cast<size_t>(i)] = input.size(i);
  sizes.back() /= 2;
  Tensor out = torch::stable::new_empty(input, sizes);
  silu_and_mul(out, input);
  return out;
}

void fail_on_purpose(Tensor& out, const Tensor& input) {
  (void)out;
  STD_TORCH_CHECK(input.is_cuda(), "fail_on_purpose: `input` must be a CUDA tensor");
  STD_TORCH_CHECK(false, kFailOnPurposeMessage);
}

}  // namespace stable_abi_cuda

// One level of expansion, so the namespace is the value of TORCH_EXTENSION_NAME.
#define STABLE_ABI_CUDA_LIBRARY(ns, m) STABLE_TORCH_LIBRARY(ns, m)
#define STABLE_ABI_CUDA_LIBRARY_IMPL(ns, k, m) STABLE_TORCH_LIBRARY_IMPL(ns, k, m)

STABLE_ABI_CUDA_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("silu_and_mul(Tensor! out, Tensor input) -> ()");
  m.def("rms_norm(Tensor! out, Tensor input, Tensor weight, float eps) -> ()");
  m.def(
      "add_rms_norm(Tensor! out, Tensor! residual_out, Tensor input, Tensor residual, Tensor weight, "
      "float eps) -> ()");
  m.def("silu_and_mul_new(Tensor input) -> Tensor");
  m.def("fail_on_purpose(Tensor! out, Tensor input) -> ()");
}

STABLE_ABI_CUDA_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CUDA, m) {
  m.impl("silu_and_mul", TORCH_BOX(&stable_abi_cuda::silu_and_mul));
  m.impl("rms_norm", TORCH_BOX(&stable_abi_cuda::rms_norm));
  m.impl("add_rms_norm", TORCH_BOX(&stable_abi_cuda::add_rms_norm));
  m.impl("silu_and_mul_new", TORCH_BOX(&stable_abi_cuda::silu_and_mul_new));
  m.impl("fail_on_purpose", TORCH_BOX(&stable_abi_cuda::fail_on_purpose));
}

#include "../stable-abi-cpu/python_module.h"
