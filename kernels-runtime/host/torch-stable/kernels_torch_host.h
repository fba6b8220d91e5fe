// The host's own C interface: what the embedding process (kernels-runtime) calls. The shim
// functions a kernel imports are declared in internal.h, with the signatures of PyTorch's
// public headers.
//
// Every function here is safe to call from any thread and never throws.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// A boxed op function, as a kernel registers it: (stack, num_args, num_outputs).
typedef void (*KernelsTorchBoxedFn)(uint64_t* stack, uint64_t num_args, uint64_t num_outputs);

// Storage for tensors the host allocates (aoti_torch_empty_strided, aten::empty_like, …).
// `alloc` returns null on failure; `release` gets back what `alloc` returned. Both are called
// with the `ctx` given at installation.
typedef void* (*KernelsTorchAllocFn)(void* ctx, size_t bytes, size_t alignment, int32_t device_type,
                                     int32_t device_index);
typedef void (*KernelsTorchReleaseFn)(void* ctx, void* ptr, size_t bytes, int32_t device_type,
                                      int32_t device_index);

// Installs the allocator (null `alloc` restores the CPU default, aligned_alloc/free). Tensors
// already allocated are released through the allocator that allocated them.
void kernels_torch_host_set_allocator(KernelsTorchAllocFn alloc, KernelsTorchReleaseFn release, void* ctx);

// The last error of a shim function on the calling thread ("" if none).
const char* kernels_torch_host_last_error(void);

// A tensor handle over caller-owned storage (never freed by the host): `data` points at element 0
// of the storage, `storage_offset` is in elements. `strides` null means contiguous. Returns 0,
// or 1 with the last error set.
int32_t kernels_torch_host_tensor_new(void* data, int64_t ndim, const int64_t* sizes, const int64_t* strides,
                                      int64_t storage_offset, int32_t dtype, int32_t device_type,
                                      int32_t device_index, void** ret_handle);

// Calls a boxed op function with a C++ try/catch around it. `stack` holds
// max(num_args, num_outputs) slots. For a CUDA call (`device_type` 1), `device_index` is the
// CUDA runtime's current device and `stream` the device's current stream during the call (what
// aoti_torch_get_current_cuda_stream returns), both restored afterwards; other device types
// leave both alone. Returns 0, or 1 with the exception's message (and the last shim error, if
// one was set during the call) copied NUL-terminated into `err`.
int32_t kernels_torch_host_call(KernelsTorchBoxedFn fn, uint64_t* stack, uint64_t num_args, uint64_t num_outputs,
                                int32_t device_type, int32_t device_index, void* stream, char* err,
                                size_t err_len);

// Copies the elements of tensor `src` into tensor `dst` (same dtype and sizes; strides may
// differ on the CPU, both must be contiguous on CUDA) and drops the reference `src` was: how an
// op's returned tensor reaches the caller's output. A CUDA copy runs under the device guard of
// `device_index` on `stream`, like kernels_torch_host_call. Returns 0, or 1 with the reason
// copied NUL-terminated into `err`; `src` is dropped either way.
int32_t kernels_torch_host_copy_returned(void* dst, void* src, int32_t device_type, int32_t device_index,
                                         void* stream, char* err, size_t err_len);

// The CUDA runtime functions the host calls (cudaError_t is an int; streams are cudaStream_t).
// They must come from the CUDA runtime the kernels link, so that the device the host's guards
// set is the one the kernels' own runtime calls see.
typedef struct KernelsTorchCudaRuntime {
  int32_t (*get_device)(int32_t* device);
  int32_t (*set_device)(int32_t device);
  int32_t (*malloc_async)(void** ptr, size_t bytes, void* stream);
  int32_t (*free_async)(void* ptr, void* stream);
  const char* (*get_error_string)(int32_t error);  // may be null
  int32_t (*memset_async)(void* ptr, int32_t value, size_t bytes, void* stream);  // may be null
  // cudaMemcpyAsync(dst, src, bytes, kind, stream); may be null.
  int32_t (*memcpy_async)(void* dst, const void* src, size_t bytes, int32_t kind, void* stream);
} KernelsTorchCudaRuntime;

// Hands over the CUDA runtime (copied; the first one stays). Until then device guards only
// track an index and CUDA allocations fail. Returns 0, or 1 if a required function is null.
int32_t kernels_torch_host_set_cuda_runtime(const KernelsTorchCudaRuntime* runtime);
// 1 once a CUDA runtime was handed over, else 0.
int32_t kernels_torch_host_has_cuda_runtime(void);

// What kind of registration a record is.
enum {
  KERNELS_TORCH_HOST_DEF = 0,   // m.def(schema) in STABLE_TORCH_LIBRARY
  KERNELS_TORCH_HOST_IMPL = 1,  // m.impl(name, fn) in STABLE_TORCH_LIBRARY_IMPL
};

// One captured registration. Strings stay valid for the life of the process.
typedef struct KernelsTorchHostRegistration {
  int32_t kind;
  const char* ns;            // the library's namespace
  const char* name;          // the op's name (from the schema for a def)
  const char* schema;        // a def's schema, else ""
  const char* dispatch_key;  // an impl's dispatch key ("CPU", "CUDA", …), else ""
  KernelsTorchBoxedFn fn;    // an impl's function, else null
  uint64_t build_version;    // torch_library_impl's extension build version, else 0
  int64_t num_args;          // a def's argument count from the schema, -1 if unknown
  int64_t num_returns;       // a def's return count from the schema, -1 if unknown
  const char* file;          // where the library block is, as the kernel recorded it
  uint32_t line;
} KernelsTorchHostRegistration;

// Registrations in the order they happened (across every library loaded).
size_t kernels_torch_host_registration_count(void);
// Copies record `index` into `out`; 0, or 1 if `index` is out of range.
int32_t kernels_torch_host_registration(size_t index, KernelsTorchHostRegistration* out);

// Problems met while registering (registration never fails inside dlopen), in order.
size_t kernels_torch_host_problem_count(void);
const char* kernels_torch_host_problem(size_t index);

// CPU threads for torch_parallel_for (0: the hardware's count). Takes effect for the next call.
void kernels_torch_host_set_num_threads(uint32_t threads);
// torch_parallel_for calls so far, and those split over more than one thread.
uint64_t kernels_torch_host_parallel_for_calls(void);
uint64_t kernels_torch_host_parallel_for_split_calls(void);

// The libtorch version the host claims (aoti_torch_abi_version): 2.11.0.
uint64_t kernels_torch_host_abi_version(void);

#ifdef __cplusplus
}
#endif
