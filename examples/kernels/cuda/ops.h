// Launchers of the CUDA kernels in ops.cu, called by the TVM-FFI binding in
// binding.cpp. They take raw device pointers that the binding has already
// checked (dtype, shapes, device, contiguity, overlap), pick the vectorised or
// the scalar form of a kernel from the pointers' alignment, enqueue exactly one
// kernel on `stream`, and return the launch status (cudaGetLastError). They do
// not synchronise.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace cuda_ops {

enum class DType { kF32, kF16, kBf16 };

// out[r, :] = normed[r, :] * weight, normed[r, :] = v[r, :] / sqrt(mean(v[r, :]^2) + eps),
// where v = x, or (fused add) v = residual_out = x + residual (rounded to the element type).
struct RmsNormArgs {
  void* out;
  void* residual_out;    // null unless fused add
  const void* x;
  const void* residual;  // null unless fused add
  const void* weight;
  int64_t rows;    // > 0
  int64_t hidden;  // > 0, <= 2^30
  float eps;
};

cudaError_t launch_rms_norm(DType dtype, const RmsNormArgs& args, cudaStream_t stream);

// out[r, c] = silu(x[r, c]) * x[r, d + c] for x of shape [rows, 2d], out [rows, d].
// rows > 0, 0 < d <= 2^30; out must not overlap x.
cudaError_t launch_silu_and_mul(DType dtype, void* out, const void* x, int64_t rows, int64_t d,
                                cudaStream_t stream);

}  // namespace cuda_ops
