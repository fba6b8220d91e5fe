// Shared by the host's translation units: the tensor model, error reporting and the codes the
// host picked. Nothing here is exported; exported functions are marked KT_EXPORT.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "kernels_torch_host.h"

#define KT_EXPORT extern "C" __attribute__((visibility("default")))

// The shim's status codes (AOTITorchError).
constexpr int32_t KT_OK = 0;
constexpr int32_t KT_FAIL = 1;

// A StableIValue: one 64-bit slot of a boxed stack.
using StableIValue = uint64_t;

namespace kt {

// Codes the host hands out through the constant getters: torch's own numbering (ScalarType,
// DeviceType, Layout, MemoryFormat), so a dump reads like torch's.
namespace dtype {
constexpr int32_t uint8 = 0, int8 = 1, int16 = 2, int32 = 3, int64 = 4, float16 = 5, float32 = 6, float64 = 7,
                  complex32 = 8, complex64 = 9, complex128 = 10, boolean = 11, bfloat16 = 15, float8_e5m2 = 23,
                  float8_e4m3fn = 24, float8_e5m2fnuz = 25, float8_e4m3fnuz = 26, uint16 = 27, uint32 = 28,
                  uint64 = 29, float8_e8m0fnu = 44, float4_e2m1fn_x2 = 45;
}
namespace device {
constexpr int32_t cpu = 0, cuda = 1, xpu = 12, mps = 13, meta = 14, privateuse1 = 20;
}
namespace layout {
constexpr int32_t strided = 0, sparse_coo = 1, sparse_csr = 2, mkldnn = 3, sparse_csc = 4, sparse_bsr = 5,
                  sparse_bsc = 6, jagged = 7;
}
namespace memory_format {
constexpr int32_t contiguous = 0, preserve = 1, channels_last = 2, channels_last_3d = 3;
}

// Bytes per element of a dtype code, 0 if unknown.
size_t element_size(int32_t dtype);
const char* dtype_name(int32_t dtype);

// Sets the calling thread's last error and returns KT_FAIL.
int32_t fail(std::string message);
void clear_error();
const std::string& last_error();
// The message of the exception being handled (call inside a catch block).
std::string current_exception_message();

// Memory a tensor views: caller-owned (never freed) or from the installed allocator.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  int32_t device_type = device::cpu;
  int32_t device_index = -1;
  KernelsTorchReleaseFn release = nullptr;  // null: caller-owned
  void* release_ctx = nullptr;
  ~Storage();
};

// What an AtenTensorHandle points at. Handles are references counted in `refs`:
// new_tensor_handle adds one, delete_tensor_object drops one.
struct Tensor {
  std::atomic<int64_t> refs{1};
  std::shared_ptr<Storage> storage;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  int64_t storage_offset = 0;  // in elements
  int32_t dtype = dtype::float32;
  int32_t device_type = device::cpu;
  int32_t device_index = -1;
  bool defined = true;  // false for aoti_torch_new_uninitialized_tensor's (torch's undefined tensor)

  int64_t numel() const;
  bool is_contiguous() const;
  void* data_ptr() const;
};

// Contiguous strides for `sizes`.
std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& sizes);
// A new tensor (one reference) over fresh storage from the installed allocator; throws on failure.
Tensor* allocate(const std::vector<int64_t>& sizes, const std::vector<int64_t>* strides, int32_t dtype,
                 int32_t device_type, int32_t device_index);
// Device memory from the CUDA runtime the kernels link (see cuda.cpp): cudaMallocAsync on the
// calling thread's current stream for `device_index`, with `release`/`release_ctx` set to free it
// on that same stream. Throws when no CUDA runtime was handed over or the allocation fails.
void* cuda_allocate(size_t bytes, int32_t device_index, KernelsTorchReleaseFn* release, void** release_ctx);

// Zeroes `bytes` bytes of device memory at `ptr` on CUDA device `device_index`, ordered on the
// calling thread's current stream for it. Throws without a CUDA runtime (or its memset).
void cuda_zero(void* ptr, size_t bytes, int32_t device_index);

// Copies `bytes` bytes between CUDA device buffers, ordered on the calling thread's current
// stream for `device_index`. Throws without a CUDA runtime (or its memcpy).
void cuda_copy(void* dst, const void* src, size_t bytes, int32_t device_index);

// Makes `device_index` the CUDA runtime's current device for a scope, when the CUDA runtime was
// handed over; otherwise only tracks the index (aoti_torch_get_current_device_index).
class ScopedDevice {
 public:
  explicit ScopedDevice(int32_t device_index);  // throws if the device cannot be set
  ~ScopedDevice();
  // Sets another device; the one before the scope is still restored at its end.
  void set(int32_t device_index);
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

 private:
  int32_t previous_;
  bool restore_;
};

// The calling thread's current stream for CUDA device `device_index` (-1: the current device);
// null (the default stream) unless a call set one.
void* current_cuda_stream(int32_t device_index);
// Sets it and returns the previous one.
void* exchange_cuda_stream(int32_t device_index, void* stream);

// A new tensor (one reference) sharing `base`'s storage with other geometry.
Tensor* view_of(const Tensor& base, std::vector<int64_t> sizes, std::vector<int64_t> strides, int64_t offset);
void release_ref(Tensor* t);
// A handle checked for null; throws naming `what`.
Tensor& deref(void* handle, const char* what);
// Wraps `dim` into [0, ndim) the way torch does; throws naming `what`.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* what);

// Runs `body`, turning any exception into KT_FAIL with the message (prefixed by `what`).
template <typename F>
int32_t guarded(const char* what, F&& body) noexcept {
  try {
    body();
    return KT_OK;
  } catch (...) {
    return fail(std::string(what) + ": " + current_exception_message());
  }
}

}  // namespace kt

// The stable ABI's opaque handle types, defined by the host.
struct AtenTensorOpaque;
using AtenTensorHandle = AtenTensorOpaque*;
inline AtenTensorHandle to_handle(kt::Tensor* t) { return reinterpret_cast<AtenTensorHandle>(t); }

// StableListHandle: a growable list of StableIValues (int[] arguments).
struct StableListOpaque {
  std::vector<StableIValue> items;
};
