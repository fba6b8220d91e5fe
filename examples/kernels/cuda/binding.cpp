// CUDA kernels exported through the TVM-FFI stable C ABI.
//
//   rms_norm(out, x, weight, eps)
//       x, out: [..., h], weight: [h]
//       out = x / sqrt(mean(x^2, -1) + eps) * weight
//   add_rms_norm(out, residual_out, x, residual, weight, eps)
//       x, residual, out, residual_out: [..., h], weight: [h]
//       residual_out = x + residual;  out = rms_norm(residual_out, weight, eps)
//   silu_and_mul(out, x)
//       x: [..., 2d], out: [..., d]
//       out = silu(x[..., :d]) * x[..., d:]
//
// Tensors are contiguous CUDA tensors on one device, all of one dtype: float32,
// float16 or bfloat16 (computed in float32). Each call enqueues one kernel on
// the stream the caller set for that device with TVMFFIEnvSetStream (the
// legacy default stream when none is set) and returns without synchronising.
// Bad arguments raise TypeError / ValueError, a failed launch RuntimeError,
// through the TVM-FFI error channel; nothing aborts.

#include <cuda_runtime_api.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/tvm_ffi.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "ops.h"

#ifndef CUDA_OPS_ARCHS
#define CUDA_OPS_ARCHS "unknown"
#endif

namespace {

using tvm::ffi::TensorView;

// ---- argument checks --------------------------------------------------------

const char* device_name(int32_t t) {
  switch (t) {
    case kDLCPU:
      return "cpu";
    case kDLCUDA:
      return "cuda";
    case kDLCUDAHost:
      return "cuda_host (pinned host memory)";
    case kDLCUDAManaged:
      return "cuda_managed";
    case kDLROCM:
      return "rocm";
    case kDLMetal:
      return "metal";
    case kDLOneAPI:
      return "oneapi";
    default:
      return "non-cuda";
  }
}

void check_cuda_contiguous(const char* fn, const char* arg, const TensorView& t) {
  const DLDevice dev = t.device();
  if (dev.device_type != kDLCUDA) {
    TVM_FFI_THROW(ValueError) << fn << ": `" << arg << "` must be a CUDA device tensor, got a "
                              << device_name(dev.device_type) << " tensor (DLPack device type "
                              << dev.device_type << ")";
  }
  if (t.ndim() < 1) {
    TVM_FFI_THROW(ValueError) << fn << ": `" << arg << "` must have at least one dimension";
  }
  if (!t.IsContiguous()) {
    TVM_FFI_THROW(ValueError) << fn << ": `" << arg
                              << "` must be contiguous (row-major); make a contiguous copy first";
  }
  if (t.numel() > 0 && t.data_ptr() == nullptr) {
    TVM_FFI_THROW(ValueError) << fn << ": `" << arg << "` has a null data pointer";
  }
}

void check_same_device(const char* fn, const char* a, const TensorView& ta, const char* b,
                       const TensorView& tb) {
  if (ta.device().device_id != tb.device().device_id) {
    TVM_FFI_THROW(ValueError) << fn << ": all tensors must be on one device, but `" << a
                              << "` is on cuda:" << ta.device().device_id << " and `" << b
                              << "` on cuda:" << tb.device().device_id;
  }
}

cuda_ops::DType dtype_of(const char* fn, const char* arg, const TensorView& t) {
  const DLDataType dt = t.dtype();
  if (dt.lanes == 1) {
    if (dt.code == kDLFloat && dt.bits == 32) return cuda_ops::DType::kF32;
    if (dt.code == kDLFloat && dt.bits == 16) return cuda_ops::DType::kF16;
    if (dt.code == kDLBfloat && dt.bits == 16) return cuda_ops::DType::kBf16;
  }
  TVM_FFI_THROW(TypeError) << fn << ": `" << arg
                           << "` must be float32, float16 or bfloat16, got " << dt;
  return cuda_ops::DType::kF32;  // not reached
}

void check_same_dtype(const char* fn, const char* a, const TensorView& ta, const char* b,
                      const TensorView& tb) {
  const DLDataType da = ta.dtype();
  const DLDataType db = tb.dtype();
  if (da.code != db.code || da.bits != db.bits || da.lanes != db.lanes) {
    TVM_FFI_THROW(TypeError) << fn << ": `" << a << "` and `" << b
                             << "` must have the same dtype, got " << da << " and " << db;
  }
}

void check_same_shape(const char* fn, const char* a, const TensorView& ta, const char* b,
                      const TensorView& tb) {
  if (ta.ndim() != tb.ndim()) {
    TVM_FFI_THROW(ValueError) << fn << ": `" << a << "` and `" << b
                              << "` must have the same shape, got ranks " << ta.ndim() << " and "
                              << tb.ndim();
  }
  for (int32_t i = 0; i < ta.ndim(); ++i) {
    if (ta.size(i) != tb.size(i)) {
      TVM_FFI_THROW(ValueError) << fn << ": `" << a << "` and `" << b
                                << "` must have the same shape; dimension " << i << " is "
                                << ta.size(i) << " and " << tb.size(i);
    }
  }
}

void* address_of(const TensorView& t) {
  return static_cast<char*>(t.data_ptr()) + t.byte_offset();
}

// Byte range [begin, end) of a contiguous tensor.
struct Span {
  uintptr_t begin;
  uintptr_t end;
};

Span span_of(const TensorView& t) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(address_of(t));
  const uint64_t bytes = static_cast<uint64_t>(t.numel()) * ((t.dtype().bits + 7) / 8);
  return Span{begin, begin + bytes};
}

enum class Alias { kForbidden, kIdenticalOk };

// Outputs may be the very same buffer as an input (in place), never a partial overlap.
void check_overlap(const char* fn, const char* a, const TensorView& ta, const char* b,
                   const TensorView& tb, Alias alias) {
  const Span sa = span_of(ta);
  const Span sb = span_of(tb);
  if (sa.begin == sa.end || sb.begin == sb.end) return;
  if (sa.begin >= sb.end || sb.begin >= sa.end) return;
  if (alias == Alias::kIdenticalOk && sa.begin == sb.begin && sa.end == sb.end) return;
  if (alias == Alias::kIdenticalOk) {
    TVM_FFI_THROW(ValueError) << fn << ": `" << a << "` and `" << b
                              << "` partially overlap in memory; pass the same buffer (in place) "
                                 "or disjoint buffers";
  }
  TVM_FFI_THROW(ValueError) << fn << ": `" << a << "` and `" << b
                            << "` overlap in memory; they must be disjoint buffers";
}

// Rows longer than this would overflow the kernels' 32-bit in-row indices.
constexpr int64_t kMaxLastDim = int64_t{1} << 30;

int64_t checked_last_dim(const char* fn, const char* arg, int64_t n) {
  if (n > kMaxLastDim) {
    TVM_FFI_THROW(ValueError) << fn << ": the last dimension of `" << arg << "` is " << n
                              << ", more than the supported " << kMaxLastDim << " elements";
  }
  return n;
}

void check_eps(const char* fn, double eps) {
  if (!(eps >= 0.0) || !std::isfinite(eps)) {
    TVM_FFI_THROW(ValueError) << fn << ": `eps` must be a finite non-negative number, got " << eps;
  }
}

void check_weight(const char* fn, const TensorView& weight, int64_t h) {
  if (weight.ndim() != 1 || weight.size(0) != h) {
    const std::string got = weight.ndim() == 1 ? "length " + std::to_string(weight.size(0))
                                               : "rank " + std::to_string(weight.ndim());
    TVM_FFI_THROW(ValueError) << fn << ": `weight` must be 1-D with length " << h
                              << " (the last dimension of `x`), got " << got;
  }
}

// Makes the tensors' device current for the launch (the CUDA runtime launches
// into the current device's primary context) and restores the previous one.
// Unlike a throwing guard, restoring never raises, so an error raised while the
// guard is alive cannot turn into std::terminate.
class DeviceScope {
 public:
  DeviceScope(const char* fn, int device) {
    cudaError_t err = cudaGetDevice(&previous_);
    if (err == cudaSuccess && previous_ != device) {
      err = cudaSetDevice(device);
      if (err == cudaSuccess) restore_ = true;
    }
    if (err != cudaSuccess) {
      TVM_FFI_THROW(RuntimeError) << fn << ": cannot make cuda:" << device
                                  << " current: " << cudaGetErrorName(err) << " ("
                                  << static_cast<int>(err) << "): " << cudaGetErrorString(err);
    }
  }
  ~DeviceScope() {
    if (restore_) (void)cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
  bool restore_ = false;
};

cudaStream_t caller_stream(const TensorView& t) {
  return static_cast<cudaStream_t>(TVMFFIEnvGetStream(kDLCUDA, t.device().device_id));
}

void check_launch(const char* fn, cudaError_t err) {
  if (err == cudaSuccess) return;
  TVM_FFI_THROW(RuntimeError) << fn << ": CUDA kernel launch failed: " << cudaGetErrorName(err)
                              << " (" << static_cast<int>(err) << "): " << cudaGetErrorString(err)
                              << " [this library carries code for CUDA archs " CUDA_OPS_ARCHS "]";
}

// ---- rms_norm / add_rms_norm ------------------------------------------------

void rms_norm(TensorView out, TensorView x, TensorView weight, double eps) {
  constexpr const char* fn = "rms_norm";
  check_cuda_contiguous(fn, "x", x);
  check_cuda_contiguous(fn, "weight", weight);
  check_cuda_contiguous(fn, "out", out);
  check_same_device(fn, "x", x, "weight", weight);
  check_same_device(fn, "x", x, "out", out);
  const cuda_ops::DType dtype = dtype_of(fn, "x", x);
  check_same_dtype(fn, "x", x, "weight", weight);
  check_same_dtype(fn, "x", x, "out", out);
  check_same_shape(fn, "x", x, "out", out);
  const int64_t h = checked_last_dim(fn, "x", x.size(-1));
  check_weight(fn, weight, h);
  check_eps(fn, eps);
  check_overlap(fn, "out", out, "x", x, Alias::kIdenticalOk);
  check_overlap(fn, "out", out, "weight", weight, Alias::kForbidden);

  const int64_t numel = x.numel();
  if (numel == 0) return;
  cuda_ops::RmsNormArgs args{};
  args.out = address_of(out);
  args.x = address_of(x);
  args.weight = address_of(weight);
  args.rows = numel / h;
  args.hidden = h;
  args.eps = static_cast<float>(eps);
  DeviceScope scope(fn, x.device().device_id);
  check_launch(fn, cuda_ops::launch_rms_norm(dtype, args, caller_stream(x)));
}

void add_rms_norm(TensorView out, TensorView residual_out, TensorView x, TensorView residual,
                  TensorView weight, double eps) {
  constexpr const char* fn = "add_rms_norm";
  check_cuda_contiguous(fn, "x", x);
  check_cuda_contiguous(fn, "residual", residual);
  check_cuda_contiguous(fn, "weight", weight);
  check_cuda_contiguous(fn, "out", out);
  check_cuda_contiguous(fn, "residual_out", residual_out);
  check_same_device(fn, "x", x, "residual", residual);
  check_same_device(fn, "x", x, "weight", weight);
  check_same_device(fn, "x", x, "out", out);
  check_same_device(fn, "x", x, "residual_out", residual_out);
  const cuda_ops::DType dtype = dtype_of(fn, "x", x);
  check_same_dtype(fn, "x", x, "residual", residual);
  check_same_dtype(fn, "x", x, "weight", weight);
  check_same_dtype(fn, "x", x, "out", out);
  check_same_dtype(fn, "x", x, "residual_out", residual_out);
  check_same_shape(fn, "x", x, "residual", residual);
  check_same_shape(fn, "x", x, "out", out);
  check_same_shape(fn, "x", x, "residual_out", residual_out);
  const int64_t h = checked_last_dim(fn, "x", x.size(-1));
  check_weight(fn, weight, h);
  check_eps(fn, eps);
  check_overlap(fn, "out", out, "residual_out", residual_out, Alias::kForbidden);
  check_overlap(fn, "out", out, "x", x, Alias::kIdenticalOk);
  check_overlap(fn, "out", out, "residual", residual, Alias::kIdenticalOk);
  check_overlap(fn, "residual_out", residual_out, "x", x, Alias::kIdenticalOk);
  check_overlap(fn, "residual_out", residual_out, "residual", residual, Alias::kIdenticalOk);
  check_overlap(fn, "out", out, "weight", weight, Alias::kForbidden);
  check_overlap(fn, "residual_out", residual_out, "weight", weight, Alias::kForbidden);

  const int64_t numel = x.numel();
  if (numel == 0) return;
  cuda_ops::RmsNormArgs args{};
  args.out = address_of(out);
  args.residual_out = address_of(residual_out);
  args.x = address_of(x);
  args.residual = address_of(residual);
  args.weight = address_of(weight);
  args.rows = numel / h;
  args.hidden = h;
  args.eps = static_cast<float>(eps);
  DeviceScope scope(fn, x.device().device_id);
  check_launch(fn, cuda_ops::launch_rms_norm(dtype, args, caller_stream(x)));
}

// ---- silu_and_mul -----------------------------------------------------------

void silu_and_mul(TensorView out, TensorView x) {
  constexpr const char* fn = "silu_and_mul";
  check_cuda_contiguous(fn, "x", x);
  check_cuda_contiguous(fn, "out", out);
  check_same_device(fn, "x", x, "out", out);
  const cuda_ops::DType dtype = dtype_of(fn, "x", x);
  check_same_dtype(fn, "x", x, "out", out);
  if (x.ndim() != out.ndim()) {
    TVM_FFI_THROW(ValueError) << fn << ": `x` and `out` must have the same rank, got " << x.ndim()
                              << " and " << out.ndim();
  }
  const int32_t last = x.ndim() - 1;
  for (int32_t i = 0; i < last; ++i) {
    if (x.size(i) != out.size(i)) {
      TVM_FFI_THROW(ValueError) << fn << ": leading dimension " << i << " differs: `x` has "
                                << x.size(i) << ", `out` has " << out.size(i);
    }
  }
  const int64_t d = checked_last_dim(fn, "out", out.size(last));
  if (x.size(last) != 2 * d) {
    TVM_FFI_THROW(ValueError) << fn
                              << ": the last dimension of `x` must be twice that of `out`, got "
                              << x.size(last) << " and " << d;
  }
  check_overlap(fn, "out", out, "x", x, Alias::kForbidden);

  const int64_t numel = out.numel();
  if (numel == 0) return;
  DeviceScope scope(fn, x.device().device_id);
  check_launch(fn, cuda_ops::launch_silu_and_mul(dtype, address_of(out), address_of(x), numel / d,
                                                 d, caller_stream(x)));
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(rms_norm, rms_norm);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(add_rms_norm, add_rms_norm);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(silu_and_mul, silu_and_mul);
