// Checks of the host that a kernel built from the example sources cannot reach: exceptions in
// parallel_for chunks and boxed calls, the dispatcher's argument ownership, fills of half
// types, registration problems. Linked against libkernels_torch_host.so and run by
// scripts/build-torch-host.sh; prints the first failure and exits 1.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../kernels_torch_host.h"

extern "C" {
int32_t torch_parallel_for(int64_t, int64_t, int64_t, void (*)(int64_t, int64_t, void*), void*);
int32_t torch_get_thread_idx(uint32_t*);
const char* torch_exception_get_what();
int32_t torch_call_dispatcher(const char*, const char*, uint64_t*, uint64_t);
int32_t torch_new_list_reserve_size(size_t, void**);
int32_t torch_list_push_back(void*, uint64_t);
int32_t aoti_torch_get_sizes(void*, int64_t**);
int32_t aoti_torch_get_dtype(void*, int32_t*);
int32_t aoti_torch_get_data_ptr(void*, void**);
int32_t aoti_torch_delete_tensor_object(void*);
int32_t aoti_torch_new_tensor_handle(void*, void**);
int32_t aoti_torch_aten_fill__Scalar(void*, double);
int32_t aoti_torch_library_init_impl(const char*, const char*, const char*, uint32_t, void**);
int32_t aoti_torch_library_init_def(const char*, const char*, uint32_t, void**);
int32_t aoti_torch_library_def(void*, const char*);
int32_t torch_library_impl(void*, const char*, KernelsTorchBoxedFn, uint64_t);
int32_t aoti_torch_delete_library_object(void*);
int32_t aoti_torch_get_current_cuda_stream(int32_t, void**);
int32_t aoti_torch_get_current_device_index(int32_t*);
int32_t aoti_torch_create_device_guard(int32_t, void**);
int32_t aoti_torch_delete_device_guard(void*);
int32_t aoti_torch_empty_strided(int64_t, const int64_t*, const int64_t*, int32_t, int32_t, int32_t, void**);
}

namespace {

int failures = 0;

#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (!(cond)) {                                              \
      std::fprintf(stderr, "self_check:%d: %s: ", __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                        \
      std::fprintf(stderr, "\n");                               \
      ++failures;                                               \
    }                                                           \
  } while (0)

std::vector<std::atomic<int>> visits(1000);

void visit(int64_t b, int64_t e, void*) {
  for (int64_t i = b; i < e; ++i) visits[i]++;
}

void throw_late(int64_t b, int64_t, void*) {
  if (b >= 500) throw std::runtime_error("chunk at " + std::to_string(b) + " failed");
}

void nested(int64_t, int64_t, void* ctx) {
  uint32_t outer = 0, inner = 0;
  torch_get_thread_idx(&outer);
  auto record = [](int64_t, int64_t, void* c) { torch_get_thread_idx(static_cast<uint32_t*>(c)); };
  torch_parallel_for(0, 1000, 1, record, &inner);
  if (outer != inner) static_cast<std::atomic<int>*>(ctx)->fetch_add(1);
}

void throws_int(uint64_t*, uint64_t, uint64_t) { throw 42; }

void parallel_for() {
  kernels_torch_host_set_num_threads(4);
  uint64_t split = kernels_torch_host_parallel_for_split_calls();
  CHECK(torch_parallel_for(0, 1000, 10, visit, nullptr) == 0, "%s", torch_exception_get_what());
  for (int i = 0; i < 1000; ++i) CHECK(visits[i] == 1, "index %d visited %d times", i, visits[i].load());
  CHECK(kernels_torch_host_parallel_for_split_calls() == split + 1, "not split");
  // A range within one grain runs on the caller.
  CHECK(torch_parallel_for(0, 1000, 1000, visit, nullptr) == 0, "%s", torch_exception_get_what());
  CHECK(kernels_torch_host_parallel_for_split_calls() == split + 1, "split a single grain");
  // An exception in a chunk on a worker is reported to the caller.
  CHECK(torch_parallel_for(0, 1000, 10, throw_late, nullptr) == 1, "no failure");
  std::string what = torch_exception_get_what();
  CHECK(what.find("torch_parallel_for: chunk at ") == 0 && what.find("failed") != std::string::npos, "%s",
        what.c_str());
  // Nested calls run inline, on the outer chunk's thread index.
  std::atomic<int> mismatches{0};
  CHECK(torch_parallel_for(0, 8, 1, nested, &mismatches) == 0, "%s", torch_exception_get_what());
  CHECK(mismatches == 0, "%d nested calls changed thread", mismatches.load());
  CHECK(torch_parallel_for(5, 5, 1, visit, nullptr) == 0, "empty range");
}

void boxed_call() {
  char err[64];
  uint64_t stack[1] = {0};
  CHECK(kernels_torch_host_call(throws_int, stack, 0, 0, 0, -1, nullptr, err, sizeof err) == 1, "no failure");
  CHECK(std::string(err) == "an exception that is not a std::exception", "%s", err);
  CHECK(kernels_torch_host_call(nullptr, stack, 0, 0, 0, -1, nullptr, err, sizeof err) == 1, "null fn accepted");
}

uint16_t first_u16(void* handle) {
  void* data = nullptr;
  aoti_torch_get_data_ptr(handle, &data);
  uint16_t v;
  std::memcpy(&v, data, 2);
  return v;
}

void dispatcher() {
  // aten::empty.memory_format(int[] size, ScalarType? dtype, Layout?, Device?, bool?, MemoryFormat?)
  void* list = nullptr;
  torch_new_list_reserve_size(2, &list);
  torch_list_push_back(list, 2);
  torch_list_push_back(list, 3);
  auto* dtype = new uint64_t(5);  // float16, boxed as torch::stable boxes optionals
  uint64_t stack[6] = {reinterpret_cast<uintptr_t>(list), reinterpret_cast<uintptr_t>(dtype), 0, 0, 0, 0};
  CHECK(torch_call_dispatcher("aten::empty", "memory_format", stack, 0) == 0, "%s", torch_exception_get_what());
  void* t = reinterpret_cast<void*>(stack[0]);
  int64_t* sizes = nullptr;
  int32_t code = -1;
  aoti_torch_get_sizes(t, &sizes);
  aoti_torch_get_dtype(t, &code);
  CHECK(sizes[0] == 2 && sizes[1] == 3 && code == 5, "sizes %lld %lld dtype %d", (long long)sizes[0],
        (long long)sizes[1], code);
  CHECK(aoti_torch_aten_fill__Scalar(t, 1.0) == 0 && first_u16(t) == 0x3c00, "f16 1.0 -> %x", first_u16(t));
  CHECK(aoti_torch_aten_fill__Scalar(t, 65504.0) == 0 && first_u16(t) == 0x7bff, "f16 max -> %x", first_u16(t));
  CHECK(aoti_torch_aten_fill__Scalar(t, 1e6) == 0 && first_u16(t) == 0x7c00, "f16 overflow -> %x", first_u16(t));
  CHECK(aoti_torch_aten_fill__Scalar(t, -2.5) == 0 && first_u16(t) == 0xc100, "f16 -2.5 -> %x", first_u16(t));
  // aten::zero_ steals its argument and returns a new reference to the same tensor.
  void* extra = nullptr;
  aoti_torch_new_tensor_handle(t, &extra);
  uint64_t zstack[1] = {reinterpret_cast<uintptr_t>(extra)};
  CHECK(torch_call_dispatcher("aten::zero_", "", zstack, 0) == 0, "%s", torch_exception_get_what());
  CHECK(first_u16(t) == 0, "zero_ left %x", first_u16(t));
  CHECK(aoti_torch_delete_tensor_object(reinterpret_cast<void*>(zstack[0])) == 0, "zero_ result");
  CHECK(aoti_torch_delete_tensor_object(t) == 0, "delete");

  // bf16 rounds to nearest even.
  void* b = nullptr;
  int64_t one = 1;
  kernels_torch_host_tensor_new(new uint16_t[1], 1, &one, nullptr, 0, 15, 0, -1, &b);  // leaked: a check
  CHECK(aoti_torch_aten_fill__Scalar(b, 1.0) == 0 && first_u16(b) == 0x3f80, "bf16 1.0 -> %x", first_u16(b));
  CHECK(aoti_torch_aten_fill__Scalar(b, 1.00390625) == 0 && first_u16(b) == 0x3f80, "bf16 tie -> %x", first_u16(b));
  CHECK(aoti_torch_aten_fill__Scalar(b, 1.01171875) == 0 && first_u16(b) == 0x3f82, "bf16 tie up -> %x",
        first_u16(b));
  aoti_torch_delete_tensor_object(b);

  CHECK(torch_call_dispatcher("aten::pad", "", stack, 0) == 1, "aten::pad served?");
  CHECK(std::string(torch_exception_get_what()).find("`aten::pad` is not served") != std::string::npos, "%s",
        torch_exception_get_what());
}

void registration() {
  size_t before = kernels_torch_host_registration_count();
  size_t problems = kernels_torch_host_problem_count();
  void* impl = nullptr;
  void* def = nullptr;
  // An impl before its def, as static initialisers of two translation units may run.
  CHECK(aoti_torch_library_init_impl("check", "CPU", "f.cpp", 1, &impl) == 0, "init_impl");
  CHECK(torch_library_impl(impl, "op", throws_int, 7) == 0, "impl");
  CHECK(aoti_torch_library_init_def("check", "f.cpp", 2, &def) == 0, "init_def");
  CHECK(aoti_torch_library_def(def, "op(Tensor a, *, int b=1) -> (Tensor, Tensor)") == 0, "def");
  // Bad input never fails; it is recorded.
  CHECK(aoti_torch_library_def(def, nullptr) == 0, "null schema failed");
  CHECK(torch_library_impl(nullptr, "x", throws_int, 0) == 0, "null library failed");
  aoti_torch_delete_library_object(impl);
  aoti_torch_delete_library_object(def);
  CHECK(kernels_torch_host_registration_count() == before + 2, "records");
  CHECK(kernels_torch_host_problem_count() == problems + 2, "problems");
  KernelsTorchHostRegistration r{};
  kernels_torch_host_registration(before, &r);
  CHECK(r.kind == KERNELS_TORCH_HOST_IMPL && std::string(r.dispatch_key) == "CPU" && r.build_version == 7, "impl record");
  kernels_torch_host_registration(before + 1, &r);
  CHECK(r.kind == KERNELS_TORCH_HOST_DEF && std::string(r.name) == "op" && r.num_args == 2 && r.num_returns == 2,
        "def record: %s %lld %lld", r.name, (long long)r.num_args, (long long)r.num_returns);
  CHECK(kernels_torch_host_registration(before + 2, &r) == 1, "out of range");
}

}  // namespace

// A stand-in CUDA runtime: one current device per thread, allocations from the heap, and a
// log of which stream each allocation and release was ordered on.
thread_local int32_t fake_device = 0;
int32_t set_device_calls = 0;
void* last_alloc_stream = nullptr;
void* last_free_stream = nullptr;
int32_t fake_get_device(int32_t* d) {
  *d = fake_device;
  return 0;
}
int32_t fake_set_device(int32_t d) {
  if (d < 0 || d > 1) return 101;  // cudaErrorInvalidDevice
  ++set_device_calls;
  fake_device = d;
  return 0;
}
int32_t fake_malloc_async(void** p, size_t bytes, void* stream) {
  last_alloc_stream = stream;
  *p = std::malloc(bytes);
  return 0;
}
int32_t fake_free_async(void* p, void* stream) {
  last_free_stream = stream;
  std::free(p);
  return 0;
}
const char* fake_error_string(int32_t e) { return e == 101 ? "invalid device ordinal" : "unknown"; }
void* last_memset_stream = nullptr;
void* last_memcpy_stream = nullptr;
int32_t fake_memcpy_async(void* d, const void* src, size_t bytes, int32_t kind, void* stream) {
  if (kind != 3) return 21;  // cudaErrorInvalidMemcpyDirection
  last_memcpy_stream = stream;
  std::memcpy(d, src, bytes);
  return 0;
}
int32_t fake_memset_async(void* p, int32_t value, size_t bytes, void* stream) {
  last_memset_stream = stream;
  std::memset(p, value, bytes);
  return 0;
}

void* const kStream = reinterpret_cast<void*>(0x5eed);

// What a CUDA kernel sees inside a call: the call's device and stream, and allocations ordered
// on that stream (on device 1 while the caller's thread is on device 0).
void cuda_kernel(uint64_t* stack, uint64_t, uint64_t) {
  int32_t device = -1;
  void* stream = nullptr;
  if (aoti_torch_get_current_device_index(&device) != 0 || device != 1) throw std::runtime_error("device");
  if (aoti_torch_get_current_cuda_stream(1, &stream) != 0 || stream != kStream) throw std::runtime_error("stream");
  if (aoti_torch_get_current_cuda_stream(-1, &stream) != 0 || stream != kStream) throw std::runtime_error("-1");
  if (aoti_torch_get_current_cuda_stream(0, &stream) != 0 || stream != nullptr) throw std::runtime_error("dev 0");
  void* guard = nullptr;
  aoti_torch_create_device_guard(0, &guard);
  aoti_torch_get_current_device_index(&device);
  aoti_torch_delete_device_guard(guard);
  int32_t after = -1;
  aoti_torch_get_current_device_index(&after);
  if (device != 0 || after != 1) throw std::runtime_error("guard");
  int64_t size = 4;
  void* t = nullptr;
  if (aoti_torch_empty_strided(1, &size, nullptr, 6, 1, 1, &t) != 0) throw std::runtime_error("alloc");
  // zero_ is a memset on the call's stream; other values are refused on CUDA tensors.
  void* data = nullptr;
  aoti_torch_get_data_ptr(t, &data);
  static_cast<float*>(data)[3] = 5.0f;
  if (aoti_torch_aten_fill__Scalar(t, 0.0) != 0 || static_cast<float*>(data)[3] != 0.0f) throw std::runtime_error("zero");
  if (last_memset_stream != kStream) throw std::runtime_error("memset stream");
  if (aoti_torch_aten_fill__Scalar(t, 1.0) == 0) throw std::runtime_error("fill 1.0 on CUDA accepted");
  aoti_torch_delete_tensor_object(t);
  stack[0] = 7;
}

void cuda_scope() {
  char err[128];
  uint64_t stack[1] = {0};
  // Before a CUDA runtime is handed over, CUDA memory cannot be had, and says why.
  int64_t size = 4;
  void* t = nullptr;
  CHECK(aoti_torch_empty_strided(1, &size, nullptr, 6, 1, 0, &t) == 1, "CUDA alloc without a runtime");
  CHECK(std::string(torch_exception_get_what()).find("no CUDA runtime") != std::string::npos, "%s",
        torch_exception_get_what());
  KernelsTorchCudaRuntime rt{fake_get_device,   fake_set_device,   fake_malloc_async, fake_free_async,
                             fake_error_string, fake_memset_async, fake_memcpy_async};
  CHECK(kernels_torch_host_set_cuda_runtime(&rt) == 0 && kernels_torch_host_has_cuda_runtime() == 1, "install");
  CHECK(kernels_torch_host_call(cuda_kernel, stack, 0, 1, 1, 1, kStream, err, sizeof err) == 0, "%s", err);
  CHECK(stack[0] == 7, "kernel did not run");
  CHECK(last_alloc_stream == kStream && last_free_stream == kStream, "alloc/free not on the call's stream");
  // Restored: the thread's device and the device's stream.
  void* stream = reinterpret_cast<void*>(1);
  CHECK(fake_device == 0, "device %d after the call", fake_device);
  CHECK(aoti_torch_get_current_cuda_stream(1, &stream) == 0 && stream == nullptr, "stream not restored");
  // A device that cannot be set fails the call with the runtime's text, and runs nothing.
  stack[0] = 0;
  CHECK(kernels_torch_host_call(cuda_kernel, stack, 0, 1, 1, 5, kStream, err, sizeof err) == 1, "bad device");
  CHECK(std::string(err).find("cudaSetDevice(5) failed: CUDA error 101 (invalid device ordinal)") !=
            std::string::npos,
        "%s", err);
  CHECK(stack[0] == 0 && fake_device == 0, "ran or left the device at %d", fake_device);
  // A returned CUDA tensor is copied into the output on the call's stream, and dropped.
  {
    float a[4] = {1, 2, 3, 4}, b[4] = {};
    int64_t four = 4;
    void *src = nullptr, *dst = nullptr;
    kernels_torch_host_tensor_new(a, 1, &four, nullptr, 0, 6, 1, 1, &src);
    kernels_torch_host_tensor_new(b, 1, &four, nullptr, 0, 6, 1, 1, &dst);
    CHECK(kernels_torch_host_copy_returned(dst, src, 1, 1, kStream, err, sizeof err) == 0, "%s", err);
    CHECK(b[3] == 4.0f && last_memcpy_stream == kStream && fake_device == 0, "CUDA copy");
    aoti_torch_delete_tensor_object(dst);
  }
  // A CPU call touches neither.
  int32_t before = set_device_calls;
  CHECK(kernels_torch_host_call(throws_int, stack, 0, 0, 0, -1, kStream, err, sizeof err) == 1, "cpu call");
  CHECK(set_device_calls == before, "a CPU call set the device");
}

// Returned tensors reach CPU outputs of any strides; mismatches are errors that name both.
void returned() {
  char err[256];
  float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {};
  int64_t sizes[2] = {2, 3}, transposed[2] = {1, 2};
  void *src = nullptr, *dst = nullptr, *src2 = nullptr;
  kernels_torch_host_tensor_new(a, 2, sizes, nullptr, 0, 6, 0, -1, &src);
  kernels_torch_host_tensor_new(b, 2, sizes, transposed, 0, 6, 0, -1, &dst);  // column-major
  CHECK(kernels_torch_host_copy_returned(dst, src, 0, -1, nullptr, err, sizeof err) == 0, "%s", err);
  CHECK(b[0] == 1 && b[1] == 4 && b[2] == 2 && b[5] == 6, "strided copy: %g %g %g %g", b[0], b[1], b[2], b[5]);
  int64_t other[2] = {3, 2};
  kernels_torch_host_tensor_new(a, 2, other, nullptr, 0, 6, 0, -1, &src2);
  CHECK(kernels_torch_host_copy_returned(dst, src2, 0, -1, nullptr, err, sizeof err) == 1, "shape mismatch");
  CHECK(std::string(err) == "the op returned shape [3, 2], the output has [2, 3]", "%s", err);
  kernels_torch_host_tensor_new(a, 2, sizes, nullptr, 0, 5, 0, -1, &src2);
  CHECK(kernels_torch_host_copy_returned(dst, src2, 0, -1, nullptr, err, sizeof err) == 1, "dtype mismatch");
  CHECK(std::string(err) == "the op returned float16, the output is float32", "%s", err);
  aoti_torch_delete_tensor_object(dst);
}

int main() {
  parallel_for();
  returned();
  cuda_scope();
  boxed_call();
  dispatcher();
  registration();
  if (failures == 0) std::printf("self_check: ok\n");
  return failures == 0 ? 0 : 1;
}
