// CUDA kernels: RMSNorm (plain and fused with a residual add) and SiLU-and-multiply.
//
// All math is done in float32; float16 and bfloat16 are converted on load and
// rounded to nearest-even on store. Every launcher enqueues exactly one kernel.
//
// Memory access: a row is processed in "units" of U elements. When every
// pointer is 16-byte aligned and the row length is a multiple of 16 / sizeof(T),
// a unit is one 128-bit load or store (U = 8 for half types, 4 for float);
// otherwise U = 1 and the same kernels run with scalar accesses.
//
// RMSNorm keeps each row in registers, so x (and residual) are read from
// global memory exactly once. A thread holds up to 32 elements of its row
// (16 with the fused add; 8 in the scalar form), hence, for the vector form:
//   * rows of up to 1024 elements (512 fused): one warp per row, 8 rows per
//     256-thread block, reduced with warp shuffles only;
//   * rows of up to 32768 elements (16384 fused): one block per row, as few
//     threads as hold the row (256 for 8192 elements), reduced with warp
//     shuffles plus one shared-memory step;
//   * longer rows: one block per row in two passes (the second pass re-reads
//     the row, mostly from L2).
// SiLU-and-multiply is elementwise over a 2-D grid (columns x rows), one unit
// per thread and row, so no division is needed to locate a unit.

#include "ops.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace cuda_ops {
// A named namespace rather than an anonymous one: nvcc names anonymous namespaces
// after a hash of the source file's absolute path, which would make the library's
// bytes depend on where the checkout lives. Nothing here is exported anyway (hidden
// visibility).
namespace detail {

// ---- element access ---------------------------------------------------------

// U consecutive elements, aligned to their size, so that U * sizeof(T) == 16
// is one 128-bit access.
template <typename T, int U>
struct alignas(sizeof(T) * U) Unit {
  T e[U];
};

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T, int U>
__device__ __forceinline__ void unpack(const Unit<T, U>& u, float (&f)[U]) {
#pragma unroll
  for (int j = 0; j < U; ++j) f[j] = to_f32(u.e[j]);
}

// Two elements per conversion instruction for the half types.
__device__ __forceinline__ void from_f32_pair(float a, float b, float* e) {
  e[0] = a;
  e[1] = b;
}
__device__ __forceinline__ void from_f32_pair(float a, float b, __half* e) {
  const __half2 p = __floats2half2_rn(a, b);
  e[0] = __low2half(p);
  e[1] = __high2half(p);
}
__device__ __forceinline__ void from_f32_pair(float a, float b, __nv_bfloat16* e) {
  const __nv_bfloat162 p = __floats2bfloat162_rn(a, b);
  e[0] = __low2bfloat16(p);
  e[1] = __high2bfloat16(p);
}

template <typename T, int U>
__device__ __forceinline__ Unit<T, U> pack(const float (&f)[U]) {
  Unit<T, U> u;
  if constexpr (U % 2 == 0) {
#pragma unroll
    for (int j = 0; j < U; j += 2) from_f32_pair(f[j], f[j + 1], &u.e[j]);
  } else {
#pragma unroll
    for (int j = 0; j < U; ++j) u.e[j] = from_f32<T>(f[j]);
  }
  return u;
}

// ---- reductions -------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32). Every thread gets the
// same value, computed in the same order. `partial` holds 32 floats; it may be
// reused as soon as this returns.
__device__ __forceinline__ float block_sum(float v, float* partial) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();
  return v;
}

// ---- RMSNorm ----------------------------------------------------------------

constexpr int kWarpRowsPerBlock = 8;  // warp-per-row kernels run 256 threads
constexpr int kMaxBlockThreads = 1024;
constexpr int kTwoPassThreads = 512;
constexpr int64_t kMaxGrid = int64_t{1} << 30;

// Units held in registers per thread. The row is held as floats, so a thread
// holds at most 32 elements (16 with the fused add, which also holds the
// residual): the most that stays spill-free under the 64-register limit of
// 1024-thread blocks. The fewer threads a row takes, the more rows an SM keeps
// in flight (registers, not threads, bound that), so the launchers always use
// this maximum and size the block to the row.
template <int U, bool kAdd>
constexpr int kMaxVpt = ((kAdd ? 16 : 32) / U) < 8 ? ((kAdd ? 16 : 32) / U) : 8;

// Each thread holds VPT units of its row in registers. With kWarpPerRow, a warp
// owns a row; otherwise the whole block does. With kAdd, the row is
// residual_out = x + residual, stored once and then normalised. The weight is
// read after the reduction: every block reads the same row of it, so it comes
// from L1/L2.
template <typename T, int U, int VPT, bool kWarpPerRow, bool kAdd>
__global__ void __launch_bounds__(kWarpPerRow ? 32 * kWarpRowsPerBlock : kMaxBlockThreads)
    rms_norm_registers(T* out, T* residual_out, const T* x, const T* residual, const T* weight,
                       int64_t rows, int units, float inv_hidden, float eps) {
  using V = Unit<T, U>;
  __shared__ float partial[32];

  const int tid = kWarpPerRow ? (threadIdx.x & 31) : threadIdx.x;
  const int stride = kWarpPerRow ? 32 : blockDim.x;
  const int64_t rows_per_step =
      kWarpPerRow ? int64_t{gridDim.x} * (blockDim.x >> 5) : int64_t{gridDim.x};
  int64_t row = kWarpPerRow ? int64_t{blockIdx.x} * (blockDim.x >> 5) + (threadIdx.x >> 5)
                            : int64_t{blockIdx.x};
  const V* w = reinterpret_cast<const V*>(weight);

  for (; row < rows; row += rows_per_step) {
    const int64_t base = row * units;
    const V* xr = reinterpret_cast<const V*>(x) + base;
    // Issue every load of the row before using any of them.
    V v[VPT];
    V r[kAdd ? VPT : 1];
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = tid + k * stride;
      if (i < units) {
        v[k] = xr[i];
        if constexpr (kAdd) r[k] = (reinterpret_cast<const V*>(residual) + base)[i];
      }
    }

    float sum_sq = 0.0f;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = tid + k * stride;
      if (i < units) {
        float a[U];
        unpack(v[k], a);
        if constexpr (kAdd) {
          float b[U];
          unpack(r[k], b);
#pragma unroll
          for (int j = 0; j < U; ++j) a[j] += b[j];
          // Normalise the stored (rounded) sum, as an unfused add + rms_norm would.
          v[k] = pack<T, U>(a);
          (reinterpret_cast<V*>(residual_out) + base)[i] = v[k];
          unpack(v[k], a);
        }
#pragma unroll
        for (int j = 0; j < U; ++j) sum_sq += a[j] * a[j];
      }
    }
    if constexpr (kWarpPerRow) {
      sum_sq = warp_sum(sum_sq);
    } else {
      sum_sq = block_sum(sum_sq, partial);
    }
    const float scale = rsqrtf(sum_sq * inv_hidden + eps);

    V* orow = reinterpret_cast<V*>(out) + base;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = tid + k * stride;
      if (i < units) {
        float a[U];
        float g[U];
        unpack(v[k], a);
        unpack(w[i], g);
#pragma unroll
        for (int j = 0; j < U; ++j) a[j] = a[j] * scale * g[j];
        orow[i] = pack<T, U>(a);
      }
    }
  }
}

// Rows too long for registers: sum of squares in a first pass, scale in a second.
template <typename T, int U, bool kAdd>
__global__ void __launch_bounds__(kTwoPassThreads)
    rms_norm_two_pass(T* out, T* residual_out, const T* x, const T* residual, const T* weight,
                      int64_t rows, int units, float inv_hidden, float eps) {
  using V = Unit<T, U>;
  __shared__ float partial[32];
  const V* w = reinterpret_cast<const V*>(weight);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * units;
    const V* xr = reinterpret_cast<const V*>(x) + base;
    float sum_sq = 0.0f;
    for (int i = threadIdx.x; i < units; i += blockDim.x) {
      float a[U];
      unpack(xr[i], a);
      if constexpr (kAdd) {
        float b[U];
        unpack((reinterpret_cast<const V*>(residual) + base)[i], b);
#pragma unroll
        for (int j = 0; j < U; ++j) a[j] += b[j];
        const V s = pack<T, U>(a);
        (reinterpret_cast<V*>(residual_out) + base)[i] = s;
        unpack(s, a);
      }
#pragma unroll
      for (int j = 0; j < U; ++j) sum_sq += a[j] * a[j];
    }
    sum_sq = block_sum(sum_sq, partial);
    const float scale = rsqrtf(sum_sq * inv_hidden + eps);

    // Same thread, same index as in pass 1, so residual_out is visible here.
    const V* src = kAdd ? reinterpret_cast<const V*>(residual_out) + base : xr;
    V* orow = reinterpret_cast<V*>(out) + base;
    for (int i = threadIdx.x; i < units; i += blockDim.x) {
      float a[U];
      float g[U];
      unpack(src[i], a);
      unpack(w[i], g);
#pragma unroll
      for (int j = 0; j < U; ++j) a[j] = a[j] * scale * g[j];
      orow[i] = pack<T, U>(a);
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T, int U, int VPT, bool kWarpPerRow, bool kAdd>
cudaError_t enqueue_registers(const RmsNormArgs& a, int units, dim3 grid, dim3 block,
                              cudaStream_t stream) {
  rms_norm_registers<T, U, VPT, kWarpPerRow, kAdd><<<grid, block, 0, stream>>>(
      static_cast<T*>(a.out), static_cast<T*>(a.residual_out), static_cast<const T*>(a.x),
      static_cast<const T*>(a.residual), static_cast<const T*>(a.weight), a.rows, units,
      1.0f / static_cast<float>(a.hidden), a.eps);
  return cudaGetLastError();
}

// Instantiates only the VPT values that respect kMaxVpt<U, kAdd>.
template <typename T, int U, bool kWarpPerRow, bool kAdd>
cudaError_t enqueue_registers_vpt(int vpt, const RmsNormArgs& a, int units, dim3 grid,
                                  dim3 block, cudaStream_t stream) {
  switch (vpt) {
    case 1:
      return enqueue_registers<T, U, 1, kWarpPerRow, kAdd>(a, units, grid, block, stream);
    case 2:
      if constexpr (2 <= kMaxVpt<U, kAdd>) {
        return enqueue_registers<T, U, 2, kWarpPerRow, kAdd>(a, units, grid, block, stream);
      }
      break;
    case 4:
      if constexpr (4 <= kMaxVpt<U, kAdd>) {
        return enqueue_registers<T, U, 4, kWarpPerRow, kAdd>(a, units, grid, block, stream);
      }
      break;
    case 8:
      if constexpr (8 <= kMaxVpt<U, kAdd>) {
        return enqueue_registers<T, U, 8, kWarpPerRow, kAdd>(a, units, grid, block, stream);
      }
      break;
    default:
      break;
  }
  return cudaErrorInvalidConfiguration;  // not reached: callers respect kMaxVpt
}

// Smallest power of two >= n (n >= 1).
int pow2_at_least(int64_t n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

template <typename T, int U, bool kAdd>
cudaError_t enqueue_rms_norm(const RmsNormArgs& a, int units, cudaStream_t stream) {
  constexpr int kVptMax = kMaxVpt<U, kAdd>;
  if (units <= 32 * kVptMax) {
    // One warp per row.
    const int vpt = pow2_at_least(ceil_div(units, 32));
    const dim3 grid(static_cast<unsigned>(std::min(ceil_div(a.rows, kWarpRowsPerBlock), kMaxGrid)));
    return enqueue_registers_vpt<T, U, true, kAdd>(vpt, a, units, grid,
                                                   dim3(32 * kWarpRowsPerBlock), stream);
  }
  const dim3 grid(static_cast<unsigned>(std::min(a.rows, kMaxGrid)));
  if (units <= kMaxBlockThreads * kVptMax) {
    // One block per row, as few threads as hold the row at kVptMax units each.
    const int64_t threads = ceil_div(ceil_div(units, kVptMax), 32) * 32;
    return enqueue_registers<T, U, kVptMax, false, kAdd>(a, units, grid,
                                                         dim3(static_cast<unsigned>(threads)),
                                                         stream);
  }
  rms_norm_two_pass<T, U, kAdd><<<grid, dim3(kTwoPassThreads), 0, stream>>>(
      static_cast<T*>(a.out), static_cast<T*>(a.residual_out), static_cast<const T*>(a.x),
      static_cast<const T*>(a.residual), static_cast<const T*>(a.weight), a.rows, units,
      1.0f / static_cast<float>(a.hidden), a.eps);
  return cudaGetLastError();
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename T>
cudaError_t rms_norm_typed(const RmsNormArgs& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool add = a.residual != nullptr;
  const bool vector = a.hidden % kVec == 0 && aligned16(a.out) && aligned16(a.x) &&
                      aligned16(a.weight) &&
                      (!add || (aligned16(a.residual) && aligned16(a.residual_out)));
  if (vector) {
    const int units = static_cast<int>(a.hidden / kVec);
    return add ? enqueue_rms_norm<T, kVec, true>(a, units, stream)
               : enqueue_rms_norm<T, kVec, false>(a, units, stream);
  }
  const int units = static_cast<int>(a.hidden);
  return add ? enqueue_rms_norm<T, 1, true>(a, units, stream)
             : enqueue_rms_norm<T, 1, false>(a, units, stream);
}

// ---- SiLU-and-multiply ------------------------------------------------------

constexpr int kSiluThreads = 256;
constexpr int64_t kMaxGridY = 65535;

// silu(g) = g * sigmoid(g). float keeps IEEE expf and division; for half types
// the fast intrinsics' error (a few float ulps) vanishes in the final rounding.
template <typename T>
__device__ __forceinline__ float silu(float g) {
  return __fdividef(g, 1.0f + __expf(-g));
}
template <>
__device__ __forceinline__ float silu<float>(float g) {
  return g / (1.0f + expf(-g));
}

template <typename T, int U>
__global__ void __launch_bounds__(kSiluThreads)
    silu_and_mul_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t rows, int units) {
  using V = Unit<T, U>;
  const int64_t col = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (col >= units) return;
  const int64_t row_step = int64_t{gridDim.y} * blockDim.y;
  for (int64_t row = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; row < rows; row += row_step) {
    const V* gate = reinterpret_cast<const V*>(x) + row * 2 * units;
    const V gv = gate[col];
    const V uv = gate[units + col];
    float g[U];
    float u[U];
    unpack(gv, g);
    unpack(uv, u);
#pragma unroll
    for (int j = 0; j < U; ++j) g[j] = silu<T>(g[j]) * u[j];
    (reinterpret_cast<V*>(out) + row * units)[col] = pack<T, U>(g);
  }
}

template <typename T, int U>
void enqueue_silu_and_mul(T* out, const T* x, int64_t rows, int units, cudaStream_t stream) {
  // A block covers tx units of ty rows; short rows put several rows in a block.
  int tx = 1;
  while (tx < units && tx < kSiluThreads) tx <<= 1;
  const int ty = kSiluThreads / tx;
  const dim3 block(tx, ty);
  const dim3 grid(static_cast<unsigned>(ceil_div(units, tx)),
                  static_cast<unsigned>(std::min(ceil_div(rows, ty), kMaxGridY)));
  silu_and_mul_kernel<T, U><<<grid, block, 0, stream>>>(out, x, rows, units);
}

template <typename T>
cudaError_t silu_and_mul_typed(void* out, const void* x, int64_t rows, int64_t d,
                               cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  T* o = static_cast<T*>(out);
  const T* i = static_cast<const T*>(x);
  if (d % kVec == 0 && aligned16(out) && aligned16(x)) {
    enqueue_silu_and_mul<T, kVec>(o, i, rows, static_cast<int>(d / kVec), stream);
  } else {
    enqueue_silu_and_mul<T, 1>(o, i, rows, static_cast<int>(d), stream);
  }
  return cudaGetLastError();
}

}  // namespace detail

using detail::rms_norm_typed;
using detail::silu_and_mul_typed;

cudaError_t launch_rms_norm(DType dtype, const RmsNormArgs& args, cudaStream_t stream) {
  switch (dtype) {
    case DType::kF32:
      return rms_norm_typed<float>(args, stream);
    case DType::kF16:
      return rms_norm_typed<__half>(args, stream);
    case DType::kBf16:
      return rms_norm_typed<__nv_bfloat16>(args, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_silu_and_mul(DType dtype, void* out, const void* x, int64_t rows, int64_t d,
                                cudaStream_t stream) {
  switch (dtype) {
    case DType::kF32:
      return silu_and_mul_typed<float>(out, x, rows, d, stream);
    case DType::kF16:
      return silu_and_mul_typed<__half>(out, x, rows, d, stream);
    case DType::kBf16:
      return silu_and_mul_typed<__nv_bfloat16>(out, x, rows, d, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda_ops
