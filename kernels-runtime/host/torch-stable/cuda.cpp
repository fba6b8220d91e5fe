// CUDA devices and streams: the device guard, the current stream a kernel launches on, and
// device memory. The host links no CUDA library. The embedding process hands over the functions
// of the CUDA runtime the kernels link (kernels_torch_host_set_cuda_runtime), so the device a
// guard sets is the one the kernels' own runtime calls see. Without them, guards only track an
// index (enough for CPU kernels) and CUDA allocations fail with a message.

#include <atomic>
#include <stdexcept>
#include <string>

#include "internal.h"

namespace kt {

namespace {
// Stream slots per thread: device indices beyond this have only the default stream.
constexpr int32_t kMaxDevices = 64;

std::atomic<const KernelsTorchCudaRuntime*> g_cuda{nullptr};
thread_local int32_t t_current_device = 0;
thread_local void* t_streams[kMaxDevices] = {};

const KernelsTorchCudaRuntime* cuda() { return g_cuda.load(std::memory_order_acquire); }

void check(const KernelsTorchCudaRuntime* rt, int32_t status, const char* what) {
  if (status == 0) return;
  const char* text = rt->get_error_string != nullptr ? rt->get_error_string(status) : nullptr;
  throw std::runtime_error(std::string(what) + " failed: CUDA error " + std::to_string(status) +
                           (text != nullptr ? std::string(" (") + text + ")" : std::string()));
}

int32_t current_device_index() {
  const KernelsTorchCudaRuntime* rt = cuda();
  if (rt == nullptr) return t_current_device;
  int device = 0;
  check(rt, rt->get_device(&device), "cudaGetDevice");
  return device;
}

void release_cuda(void* stream, void* ptr, size_t, int32_t, int32_t device_index) {
  const KernelsTorchCudaRuntime* rt = cuda();
  if (rt == nullptr || ptr == nullptr) return;
  try {
    ScopedDevice scope(device_index);
    (void)rt->free_async(ptr, stream);
  } catch (...) {
    // A release never throws; a device that cannot be set leaks the block.
  }
}
}  // namespace

ScopedDevice::ScopedDevice(int32_t device_index) : previous_(t_current_device), restore_(false) {
  const KernelsTorchCudaRuntime* rt = cuda();
  if (rt != nullptr) {
    int previous = 0;
    check(rt, rt->get_device(&previous), "cudaGetDevice");
    previous_ = previous;
    if (previous != device_index) {
      check(rt, rt->set_device(device_index), ("cudaSetDevice(" + std::to_string(device_index) + ")").c_str());
      restore_ = true;
    }
  } else {
    restore_ = true;
  }
  t_current_device = device_index;
}

void ScopedDevice::set(int32_t device_index) {
  const KernelsTorchCudaRuntime* rt = cuda();
  if (rt != nullptr) {
    check(rt, rt->set_device(device_index), ("cudaSetDevice(" + std::to_string(device_index) + ")").c_str());
  }
  restore_ = true;
  t_current_device = device_index;
}

ScopedDevice::~ScopedDevice() {
  if (!restore_) return;
  const KernelsTorchCudaRuntime* rt = cuda();
  if (rt != nullptr) (void)rt->set_device(previous_);
  t_current_device = previous_;
}

void* current_cuda_stream(int32_t device_index) {
  int32_t index = device_index < 0 ? current_device_index() : device_index;
  return index < kMaxDevices ? t_streams[index] : nullptr;
}

void* exchange_cuda_stream(int32_t device_index, void* stream) {
  if (device_index < 0 || device_index >= kMaxDevices) {
    if (stream == nullptr) return nullptr;
    throw std::out_of_range("CUDA device index " + std::to_string(device_index) + " is beyond the " +
                            std::to_string(kMaxDevices) + " devices the host keeps streams for");
  }
  void* previous = t_streams[device_index];
  t_streams[device_index] = stream;
  return previous;
}

void* cuda_allocate(size_t bytes, int32_t device_index, KernelsTorchReleaseFn* release, void** release_ctx) {
  const KernelsTorchCudaRuntime* rt = cuda();
  if (rt == nullptr) {
    throw std::runtime_error("cannot allocate CUDA memory: no CUDA runtime was handed to the torch stable-ABI host");
  }
  ScopedDevice scope(device_index);
  void* stream = current_cuda_stream(device_index);
  void* ptr = nullptr;
  check(rt, rt->malloc_async(&ptr, bytes == 0 ? 1 : bytes, stream),
        ("cudaMallocAsync(" + std::to_string(bytes) + " bytes)").c_str());
  *release = release_cuda;
  *release_ctx = stream;
  return ptr;
}

void cuda_zero(void* ptr, size_t bytes, int32_t device_index) {
  const KernelsTorchCudaRuntime* rt = cuda();
  if (rt == nullptr || rt->memset_async == nullptr) {
    throw std::runtime_error("cannot fill CUDA memory: no CUDA runtime was handed to the torch stable-ABI host");
  }
  if (bytes == 0) return;
  ScopedDevice scope(device_index);
  check(rt, rt->memset_async(ptr, 0, bytes, current_cuda_stream(device_index)), "cudaMemsetAsync");
}

void cuda_copy(void* dst, const void* src, size_t bytes, int32_t device_index) {
  const KernelsTorchCudaRuntime* rt = cuda();
  if (rt == nullptr || rt->memcpy_async == nullptr) {
    throw std::runtime_error("cannot copy CUDA memory: no CUDA runtime was handed to the torch stable-ABI host");
  }
  if (bytes == 0 || dst == src) return;
  constexpr int32_t kDeviceToDevice = 3;  // cudaMemcpyDeviceToDevice
  ScopedDevice scope(device_index);
  check(rt, rt->memcpy_async(dst, src, bytes, kDeviceToDevice, current_cuda_stream(device_index)),
        "cudaMemcpyAsync");
}

}  // namespace kt

using namespace kt;

// ---- the host's own interface -------------------------------------------------------------

KT_EXPORT int32_t kernels_torch_host_set_cuda_runtime(const KernelsTorchCudaRuntime* runtime) {
  if (runtime == nullptr || runtime->get_device == nullptr || runtime->set_device == nullptr ||
      runtime->malloc_async == nullptr || runtime->free_async == nullptr) {
    return fail("kernels_torch_host_set_cuda_runtime: a required function is missing");
  }
  // Kept for the life of the process: kernels may hold guards across calls.
  const KernelsTorchCudaRuntime* expected = nullptr;
  auto* copy = new KernelsTorchCudaRuntime(*runtime);
  if (!g_cuda.compare_exchange_strong(expected, copy, std::memory_order_acq_rel)) delete copy;
  return KT_OK;
}

KT_EXPORT int32_t kernels_torch_host_has_cuda_runtime(void) { return cuda() != nullptr ? 1 : 0; }

// ---- the shim: device guards and streams ----------------------------------------------------

struct DeviceGuardOpaque {
  kt::ScopedDevice scope;
};

KT_EXPORT int32_t aoti_torch_create_device_guard(int32_t device_index, DeviceGuardOpaque** ret) {
  return guarded("aoti_torch_create_device_guard", [&] {
    if (ret == nullptr) throw std::invalid_argument("null out pointer");
    *ret = new DeviceGuardOpaque{kt::ScopedDevice(device_index)};
  });
}

KT_EXPORT int32_t aoti_torch_delete_device_guard(DeviceGuardOpaque* guard) {
  return guarded("aoti_torch_delete_device_guard", [&] {
    if (guard == nullptr) throw std::invalid_argument("null guard");
    delete guard;
  });
}

KT_EXPORT int32_t aoti_torch_device_guard_set_index(DeviceGuardOpaque* guard, int32_t device_index) {
  return guarded("aoti_torch_device_guard_set_index", [&] {
    if (guard == nullptr) throw std::invalid_argument("null guard");
    guard->scope.set(device_index);
  });
}

KT_EXPORT int32_t aoti_torch_get_current_device_index(int32_t* ret) {
  return guarded("aoti_torch_get_current_device_index", [&] {
    if (ret == nullptr) throw std::invalid_argument("null out pointer");
    *ret = current_device_index();
  });
}

KT_EXPORT int32_t aoti_torch_get_current_cuda_stream(int32_t device_index, void** ret) {
  return guarded("aoti_torch_get_current_cuda_stream", [&] {
    if (ret == nullptr) throw std::invalid_argument("null out pointer");
    *ret = current_cuda_stream(device_index);
  });
}
