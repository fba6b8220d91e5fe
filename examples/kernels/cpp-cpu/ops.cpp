// CPU kernels exported through the TVM-FFI stable C ABI.
//
//   silu_and_mul(out, x)           x: [..., 2d]  ->  out: [..., d]
//                                  out = silu(x[..., :d]) * x[..., d:]
//   rms_norm(out, x, weight, eps)  x, out: [..., h], weight: [h]
//                                  out = x / sqrt(mean(x^2) + eps) * weight
//
// Tensors must be contiguous CPU tensors of one dtype: float32, float16 or
// bfloat16 (half types are computed in float32). Anything else raises a
// TypeError or ValueError through the TVM-FFI error channel; nothing aborts.

#include <tvm/ffi/tvm_ffi.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace {

using tvm::ffi::TensorView;

// ---- element types ---------------------------------------------------------

struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

inline float to_float(float v) { return v; }

inline float to_float(Bf16 v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float to_float(F16 v) {
  const uint32_t sign = (static_cast<uint32_t>(v.bits) & 0x8000u) << 16;
  const uint32_t exp = (v.bits >> 10) & 0x1fu;
  uint32_t man = v.bits & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {  // inf / nan
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {  // normal
    u = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {  // zero
    u = sign;
  } else {  // subnormal: renormalise
    uint32_t e = 113;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --e;
    }
    u = sign | (e << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <typename T>
T from_float(float v);

template <>
inline float from_float<float>(float v) {
  return v;
}

template <>
inline Bf16 from_float<Bf16>(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // nan: keep it a quiet nan
    return Bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  }
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return Bf16{static_cast<uint16_t>(u >> 16)};
}

template <>
inline F16 from_float<F16>(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return F16{static_cast<uint16_t>(sign | 0x7e00u)};  // nan
  if (abs >= 0x477ff000u) return F16{static_cast<uint16_t>(sign | 0x7c00u)};  // overflow -> inf
  if (abs < 0x38800000u) {  // result is subnormal or zero
    if (abs < 0x33000000u) return F16{sign};  // below half the smallest subnormal
    const uint32_t e = abs >> 23;
    const uint32_t man = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t half = man >> shift;
    const uint32_t rest = man & ((1u << shift) - 1u);
    const uint32_t mid = 1u << (shift - 1u);
    if (rest > mid || (rest == mid && (half & 1u))) ++half;
    return F16{static_cast<uint16_t>(sign | half)};
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);   // round to nearest even
  return F16{static_cast<uint16_t>(sign | (r >> 13))};
}

// ---- argument checks --------------------------------------------------------

enum class Elem { kF32, kF16, kBf16 };

const char* device_name(DLDeviceType t) {
  switch (t) {
    case kDLCPU:
      return "cpu";
    case kDLCUDA:
      return "cuda";
    case kDLCUDAHost:
      return "cuda_host";
    case kDLROCM:
      return "rocm";
    case kDLMetal:
      return "metal";
    case kDLOneAPI:
      return "oneapi";
    default:
      return "non-cpu";
  }
}

void check_cpu_contiguous(const char* fn, const char* arg, const TensorView& t) {
  if (t.device().device_type != kDLCPU) {
    TVM_FFI_THROW(ValueError) << fn << ": `" << arg << "` must be a CPU tensor, got a "
                              << device_name(static_cast<DLDeviceType>(t.device().device_type))
                              << " tensor (device type " << t.device().device_type << ")";
  }
  if (!t.IsContiguous()) {
    TVM_FFI_THROW(ValueError) << fn << ": `" << arg << "` must be contiguous";
  }
}

Elem elem_of(const char* fn, const char* arg, const TensorView& t) {
  const DLDataType dt = t.dtype();
  if (dt.lanes == 1) {
    if (dt.code == kDLFloat && dt.bits == 32) return Elem::kF32;
    if (dt.code == kDLFloat && dt.bits == 16) return Elem::kF16;
    if (dt.code == kDLBfloat && dt.bits == 16) return Elem::kBf16;
  }
  TVM_FFI_THROW(TypeError) << fn << ": `" << arg
                           << "` must be float32, float16 or bfloat16, got " << dt;
  return Elem::kF32;  // not reached
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

template <typename T>
T* data_of(const TensorView& t) {
  return reinterpret_cast<T*>(static_cast<char*>(t.data_ptr()) + t.byte_offset());
}

// ---- silu_and_mul -----------------------------------------------------------

template <typename T>
void silu_and_mul_rows(T* out, const T* x, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = x + r * 2 * d;
    const T* up = gate + d;
    T* o = out + r * d;
    for (int64_t i = 0; i < d; ++i) {
      const float g = to_float(gate[i]);
      const float silu = g / (1.0f + std::exp(-g));
      o[i] = from_float<T>(silu * to_float(up[i]));
    }
  }
}

void silu_and_mul(TensorView out, TensorView x) {
  constexpr const char* fn = "silu_and_mul";
  check_cpu_contiguous(fn, "x", x);
  check_cpu_contiguous(fn, "out", out);
  const Elem elem = elem_of(fn, "x", x);
  check_same_dtype(fn, "x", x, "out", out);
  if (x.ndim() < 1 || x.ndim() != out.ndim()) {
    TVM_FFI_THROW(ValueError) << fn << ": `x` and `out` must have the same rank (at least 1), got "
                              << x.ndim() << " and " << out.ndim();
  }
  const int32_t last = x.ndim() - 1;
  for (int32_t i = 0; i < last; ++i) {
    if (x.size(i) != out.size(i)) {
      TVM_FFI_THROW(ValueError) << fn << ": leading dimension " << i << " differs: x has "
                                << x.size(i) << ", out has " << out.size(i);
    }
  }
  const int64_t d = out.size(last);
  if (x.size(last) != 2 * d) {
    TVM_FFI_THROW(ValueError) << fn << ": last dimension of `x` must be twice that of `out`, got "
                              << x.size(last) << " and " << d;
  }
  if (d == 0) return;
  const int64_t rows = out.numel() / d;
  switch (elem) {
    case Elem::kF32:
      silu_and_mul_rows(data_of<float>(out), data_of<const float>(x), rows, d);
      break;
    case Elem::kF16:
      silu_and_mul_rows(data_of<F16>(out), data_of<const F16>(x), rows, d);
      break;
    case Elem::kBf16:
      silu_and_mul_rows(data_of<Bf16>(out), data_of<const Bf16>(x), rows, d);
      break;
  }
}

// ---- rms_norm ---------------------------------------------------------------

template <typename T>
void rms_norm_rows(T* out, const T* x, const T* w, int64_t rows, int64_t h, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * h;
    T* o = out + r * h;
    float sum = 0.0f;
    for (int64_t i = 0; i < h; ++i) {
      const float v = to_float(xr[i]);
      sum += v * v;
    }
    const float scale = 1.0f / std::sqrt(sum / static_cast<float>(h) + eps);
    for (int64_t i = 0; i < h; ++i) {
      o[i] = from_float<T>(to_float(xr[i]) * scale * to_float(w[i]));
    }
  }
}

void rms_norm(TensorView out, TensorView x, TensorView weight, double eps) {
  constexpr const char* fn = "rms_norm";
  check_cpu_contiguous(fn, "x", x);
  check_cpu_contiguous(fn, "weight", weight);
  check_cpu_contiguous(fn, "out", out);
  const Elem elem = elem_of(fn, "x", x);
  check_same_dtype(fn, "x", x, "weight", weight);
  check_same_dtype(fn, "x", x, "out", out);
  if (x.ndim() < 1 || x.ndim() != out.ndim()) {
    TVM_FFI_THROW(ValueError) << fn << ": `x` and `out` must have the same rank (at least 1), got "
                              << x.ndim() << " and " << out.ndim();
  }
  for (int32_t i = 0; i < x.ndim(); ++i) {
    if (x.size(i) != out.size(i)) {
      TVM_FFI_THROW(ValueError) << fn << ": `x` and `out` must have the same shape; dimension "
                                << i << " is " << x.size(i) << " and " << out.size(i);
    }
  }
  const int64_t h = x.size(x.ndim() - 1);
  if (weight.ndim() != 1) {
    TVM_FFI_THROW(ValueError) << fn << ": `weight` must be 1-D with length " << h
                              << " (the last dimension of `x`), got rank " << weight.ndim();
  }
  if (weight.size(0) != h) {
    TVM_FFI_THROW(ValueError) << fn << ": `weight` must have length " << h
                              << " (the last dimension of `x`), got " << weight.size(0);
  }
  if (!(eps >= 0.0) || !std::isfinite(eps)) {
    TVM_FFI_THROW(ValueError) << fn << ": `eps` must be a finite non-negative number, got " << eps;
  }
  if (h == 0) return;
  const int64_t rows = x.numel() / h;
  const float e = static_cast<float>(eps);
  switch (elem) {
    case Elem::kF32:
      rms_norm_rows(data_of<float>(out), data_of<const float>(x), data_of<const float>(weight),
                    rows, h, e);
      break;
    case Elem::kF16:
      rms_norm_rows(data_of<F16>(out), data_of<const F16>(x), data_of<const F16>(weight), rows,
                    h, e);
      break;
    case Elem::kBf16:
      rms_norm_rows(data_of<Bf16>(out), data_of<const Bf16>(x), data_of<const Bf16>(weight),
                    rows, h, e);
      break;
  }
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(silu_and_mul, silu_and_mul);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(rms_norm, rms_norm);
