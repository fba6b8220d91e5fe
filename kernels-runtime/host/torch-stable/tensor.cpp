// Errors, constants, the allocator, tensor handles and what a kernel reads of them.

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>

#include "internal.h"

namespace kt {

namespace {
thread_local std::string t_last_error;

struct Allocator {
  KernelsTorchAllocFn alloc = nullptr;
  KernelsTorchReleaseFn release = nullptr;
  void* ctx = nullptr;
};
std::mutex g_allocator_mutex;
Allocator g_allocator;  // trivially destructible: safe to use during exit

void* default_alloc(void*, size_t bytes, size_t alignment, int32_t device_type, int32_t) {
  if (device_type != device::cpu) return nullptr;
  // aligned_alloc wants a multiple of the alignment; never ask for 0 bytes.
  size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  return std::aligned_alloc(alignment, rounded == 0 ? alignment : rounded);
}

void default_release(void*, void* ptr, size_t, int32_t, int32_t) { std::free(ptr); }
}  // namespace

int32_t fail(std::string message) {
  t_last_error = std::move(message);
  return KT_FAIL;
}
void clear_error() { t_last_error.clear(); }
const std::string& last_error() { return t_last_error; }

std::string current_exception_message() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

size_t element_size(int32_t code) {
  switch (code) {
    case dtype::uint8: case dtype::int8: case dtype::boolean: case dtype::float8_e5m2: case dtype::float8_e4m3fn:
    case dtype::float8_e5m2fnuz: case dtype::float8_e4m3fnuz: case dtype::float8_e8m0fnu:
    case dtype::float4_e2m1fn_x2:
      return 1;
    case dtype::int16: case dtype::uint16: case dtype::float16: case dtype::bfloat16:
      return 2;
    case dtype::int32: case dtype::uint32: case dtype::float32: case dtype::complex32:
      return 4;
    case dtype::int64: case dtype::uint64: case dtype::float64: case dtype::complex64:
      return 8;
    case dtype::complex128:
      return 16;
    default:
      return 0;
  }
}

const char* dtype_name(int32_t code) {
  switch (code) {
    case dtype::uint8: return "uint8";
    case dtype::int8: return "int8";
    case dtype::int16: return "int16";
    case dtype::int32: return "int32";
    case dtype::int64: return "int64";
    case dtype::float16: return "float16";
    case dtype::float32: return "float32";
    case dtype::float64: return "float64";
    case dtype::boolean: return "bool";
    case dtype::bfloat16: return "bfloat16";
    case dtype::uint16: return "uint16";
    case dtype::uint32: return "uint32";
    case dtype::uint64: return "uint64";
    default: return "a dtype the host has no name for";
  }
}

Storage::~Storage() {
  if (release != nullptr && data != nullptr) release(release_ctx, data, bytes, device_type, device_index);
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    if (sizes[i] == 1) continue;
    if (sizes[i] == 0) return true;
    if (strides[i] != expected) return false;
    expected *= sizes[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  if (storage == nullptr || storage->data == nullptr) return nullptr;
  return static_cast<char*>(storage->data) + storage_offset * static_cast<int64_t>(element_size(dtype));
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> strides(sizes.size());
  int64_t s = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    strides[i] = s;
    s *= sizes[i] > 1 ? sizes[i] : 1;
  }
  return strides;
}

Tensor* allocate(const std::vector<int64_t>& sizes, const std::vector<int64_t>* strides, int32_t code,
                 int32_t device_type, int32_t device_index) {
  size_t elem = element_size(code);
  if (elem == 0) throw std::invalid_argument("unknown dtype code " + std::to_string(code));
  for (int64_t s : sizes) {
    if (s < 0) throw std::invalid_argument("negative size " + std::to_string(s));
  }
  std::vector<int64_t> st = strides != nullptr ? *strides : contiguous_strides(sizes);
  if (st.size() != sizes.size()) throw std::invalid_argument("sizes and strides differ in length");
  // Elements spanned: 1 + sum (size - 1) * stride, or 0 when any size is 0.
  int64_t span = 1;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 0) {
      span = 0;
      break;
    }
    if (st[i] < 0) throw std::invalid_argument("negative stride " + std::to_string(st[i]));
    span += (sizes[i] - 1) * st[i];
  }
  size_t bytes = static_cast<size_t>(span) * elem;
  Allocator a;
  {
    std::lock_guard<std::mutex> lock(g_allocator_mutex);
    a = g_allocator;
  }
  auto storage = std::make_shared<Storage>();
  storage->device_type = device_type;
  storage->device_index = device_index;
  storage->bytes = bytes;
  if (a.alloc == nullptr && device_type == device::cuda) {
    // No allocator installed: the CUDA runtime's, ordered on the current stream.
    storage->data = cuda_allocate(bytes, device_index, &storage->release, &storage->release_ctx);
  } else {
    if (a.alloc == nullptr) a = Allocator{default_alloc, default_release, nullptr};
    storage->data = a.alloc(a.ctx, bytes, 64, device_type, device_index);
    if (storage->data == nullptr) {
      throw std::runtime_error("the allocator returned no memory for " + std::to_string(bytes) +
                               " bytes on device type " + std::to_string(device_type));
    }
    storage->release = a.release;
    storage->release_ctx = a.ctx;
  }
  auto* t = new Tensor();
  t->storage = std::move(storage);
  t->sizes = sizes;
  t->strides = std::move(st);
  t->dtype = code;
  t->device_type = device_type;
  t->device_index = device_type == device::cpu ? -1 : device_index;
  return t;
}

Tensor* view_of(const Tensor& base, std::vector<int64_t> sizes, std::vector<int64_t> strides, int64_t offset) {
  auto* t = new Tensor();
  t->storage = base.storage;
  t->sizes = std::move(sizes);
  t->strides = std::move(strides);
  t->storage_offset = offset;
  t->dtype = base.dtype;
  t->device_type = base.device_type;
  t->device_index = base.device_index;
  return t;
}

void release_ref(Tensor* t) {
  if (t != nullptr && t->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete t;
}

Tensor& deref(void* handle, const char* what) {
  if (handle == nullptr) throw std::invalid_argument(std::string(what) + ": null tensor handle");
  return *static_cast<Tensor*>(handle);
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* what) {
  int64_t n = ndim == 0 ? 1 : ndim;  // a 0-d tensor accepts dims -1 and 0, as in torch
  if (dim < -n || dim >= n) {
    throw std::out_of_range(std::string(what) + ": dimension " + std::to_string(dim) + " is out of range for " +
                            std::to_string(ndim) + " dimensions");
  }
  return dim < 0 ? dim + n : dim;
}

}  // namespace kt

using namespace kt;

// ---- the host's own interface -------------------------------------------------------------

KT_EXPORT void kernels_torch_host_set_allocator(KernelsTorchAllocFn alloc, KernelsTorchReleaseFn release,
                                                void* ctx) {
  std::lock_guard<std::mutex> lock(g_allocator_mutex);
  g_allocator = alloc == nullptr ? Allocator{} : Allocator{alloc, release, ctx};
}

KT_EXPORT const char* kernels_torch_host_last_error(void) { return last_error().c_str(); }

KT_EXPORT uint64_t kernels_torch_host_abi_version(void) { return (2ULL << 56) | (11ULL << 48); }

KT_EXPORT int32_t kernels_torch_host_tensor_new(void* data, int64_t ndim, const int64_t* sizes,
                                                const int64_t* strides, int64_t storage_offset, int32_t code,
                                                int32_t device_type, int32_t device_index, void** ret) {
  return guarded("kernels_torch_host_tensor_new", [&] {
    if (ret == nullptr) throw std::invalid_argument("null result pointer");
    if (ndim < 0 || (ndim > 0 && sizes == nullptr)) throw std::invalid_argument("bad sizes");
    if (element_size(code) == 0) throw std::invalid_argument("unknown dtype code " + std::to_string(code));
    if (storage_offset < 0) throw std::invalid_argument("negative storage offset");
    std::vector<int64_t> sz(sizes, sizes + ndim);
    for (int64_t s : sz) {
      if (s < 0) throw std::invalid_argument("negative size " + std::to_string(s));
    }
    auto storage = std::make_shared<Storage>();
    storage->data = data;
    storage->device_type = device_type;
    storage->device_index = device_index;
    auto* t = new Tensor();
    t->storage = std::move(storage);
    t->strides = strides != nullptr ? std::vector<int64_t>(strides, strides + ndim) : contiguous_strides(sz);
    t->sizes = std::move(sz);
    t->storage_offset = storage_offset;
    t->dtype = code;
    t->device_type = device_type;
    t->device_index = device_type == device::cpu ? -1 : device_index;
    *ret = t;
  });
}

// ---- constants ------------------------------------------------------------------------------

KT_EXPORT uint64_t aoti_torch_abi_version() { return kernels_torch_host_abi_version(); }

KT_EXPORT int32_t aoti_torch_device_type_cpu() { return device::cpu; }
KT_EXPORT int32_t aoti_torch_device_type_cuda() { return device::cuda; }
KT_EXPORT int32_t aoti_torch_device_type_meta() { return device::meta; }
KT_EXPORT int32_t aoti_torch_device_type_xpu() { return device::xpu; }
KT_EXPORT int32_t aoti_torch_device_type_mps() { return device::mps; }
KT_EXPORT int32_t aoti_torch_device_type_privateuse1() { return device::privateuse1; }

KT_EXPORT int32_t aoti_torch_dtype_float8_e5m2() { return dtype::float8_e5m2; }
KT_EXPORT int32_t aoti_torch_dtype_float8_e4m3fn() { return dtype::float8_e4m3fn; }
KT_EXPORT int32_t aoti_torch_dtype_float8_e5m2fnuz() { return dtype::float8_e5m2fnuz; }
KT_EXPORT int32_t aoti_torch_dtype_float8_e4m3fnuz() { return dtype::float8_e4m3fnuz; }
KT_EXPORT int32_t aoti_torch_dtype_bfloat16() { return dtype::bfloat16; }
KT_EXPORT int32_t aoti_torch_dtype_float16() { return dtype::float16; }
KT_EXPORT int32_t aoti_torch_dtype_float32() { return dtype::float32; }
KT_EXPORT int32_t aoti_torch_dtype_float64() { return dtype::float64; }
KT_EXPORT int32_t aoti_torch_dtype_uint8() { return dtype::uint8; }
KT_EXPORT int32_t aoti_torch_dtype_uint16() { return dtype::uint16; }
KT_EXPORT int32_t aoti_torch_dtype_uint32() { return dtype::uint32; }
KT_EXPORT int32_t aoti_torch_dtype_uint64() { return dtype::uint64; }
KT_EXPORT int32_t aoti_torch_dtype_int8() { return dtype::int8; }
KT_EXPORT int32_t aoti_torch_dtype_int16() { return dtype::int16; }
KT_EXPORT int32_t aoti_torch_dtype_int32() { return dtype::int32; }
KT_EXPORT int32_t aoti_torch_dtype_int64() { return dtype::int64; }
KT_EXPORT int32_t aoti_torch_dtype_bool() { return dtype::boolean; }
KT_EXPORT int32_t aoti_torch_dtype_complex32() { return dtype::complex32; }
KT_EXPORT int32_t aoti_torch_dtype_complex64() { return dtype::complex64; }
KT_EXPORT int32_t aoti_torch_dtype_complex128() { return dtype::complex128; }
KT_EXPORT int32_t torch_dtype_float8_e8m0fnu() { return dtype::float8_e8m0fnu; }
KT_EXPORT int32_t torch_dtype_float4_e2m1fn_x2() { return dtype::float4_e2m1fn_x2; }
KT_EXPORT size_t aoti_torch_dtype_element_size(int32_t code) { return element_size(code); }

KT_EXPORT int32_t aoti_torch_layout_strided() { return layout::strided; }
KT_EXPORT int32_t aoti_torch_layout_sparse_coo() { return layout::sparse_coo; }
KT_EXPORT int32_t aoti_torch_layout_sparse_csr() { return layout::sparse_csr; }
KT_EXPORT int32_t aoti_torch_layout_sparse_csc() { return layout::sparse_csc; }
KT_EXPORT int32_t aoti_torch_layout_sparse_bsr() { return layout::sparse_bsr; }
KT_EXPORT int32_t aoti_torch_layout_sparse_bsc() { return layout::sparse_bsc; }
KT_EXPORT int32_t aoti_torch_layout__mkldnn() { return layout::mkldnn; }
KT_EXPORT int32_t aoti_torch_layout_jagged() { return layout::jagged; }

KT_EXPORT int32_t aoti_torch_memory_format_contiguous_format() { return memory_format::contiguous; }
KT_EXPORT int32_t aoti_torch_memory_format_channels_last() { return memory_format::channels_last; }
KT_EXPORT int32_t aoti_torch_memory_format_channels_last_3d() { return memory_format::channels_last_3d; }
KT_EXPORT int32_t aoti_torch_memory_format_preserve_format() { return memory_format::preserve; }

// ---- errors ---------------------------------------------------------------------------------

KT_EXPORT const char* torch_exception_get_what() { return last_error().c_str(); }
KT_EXPORT const char* torch_exception_get_what_without_backtrace() { return last_error().c_str(); }

// ---- tensor handles -------------------------------------------------------------------------

KT_EXPORT int32_t aoti_torch_new_tensor_handle(AtenTensorHandle orig, AtenTensorHandle* ret) {
  return guarded("aoti_torch_new_tensor_handle", [&] {
    Tensor& t = deref(orig, "aoti_torch_new_tensor_handle");
    if (ret == nullptr) throw std::invalid_argument("null result pointer");
    t.refs.fetch_add(1, std::memory_order_relaxed);
    *ret = orig;
  });
}

KT_EXPORT int32_t aoti_torch_delete_tensor_object(AtenTensorHandle handle) {
  return guarded("aoti_torch_delete_tensor_object", [&] { release_ref(&deref(handle, "aoti_torch_delete_tensor_object")); });
}

KT_EXPORT int32_t aoti_torch_is_defined(AtenTensorHandle handle, bool* ret) {
  return guarded("aoti_torch_is_defined", [&] {
    if (ret == nullptr) throw std::invalid_argument("null result pointer");
    *ret = handle != nullptr && reinterpret_cast<Tensor*>(handle)->defined;
  });
}

KT_EXPORT int32_t aoti_torch_new_uninitialized_tensor(AtenTensorHandle* ret) {
  return guarded("aoti_torch_new_uninitialized_tensor", [&] {
    if (ret == nullptr) throw std::invalid_argument("null result pointer");
    auto* t = new Tensor();
    t->defined = false;
    *ret = to_handle(t);
  });
}

// Reads one property of a tensor into *ret, failing on a null handle or result pointer.
#define KT_GETTER(name, type, expr)                                         \
  KT_EXPORT int32_t name(AtenTensorHandle handle, type* ret) {              \
    return guarded(#name, [&] {                                             \
      const Tensor& t = deref(handle, #name);                               \
      if (ret == nullptr) throw std::invalid_argument("null result pointer"); \
      *ret = (expr);                                                        \
    });                                                                     \
  }

KT_GETTER(aoti_torch_get_data_ptr, void*, t.data_ptr())
KT_GETTER(torch_get_mutable_data_ptr, void*, t.data_ptr())
KT_GETTER(torch_get_const_data_ptr, const void*, t.data_ptr())
KT_GETTER(aoti_torch_get_dim, int64_t, static_cast<int64_t>(t.sizes.size()))
KT_GETTER(aoti_torch_get_numel, int64_t, t.numel())
KT_GETTER(aoti_torch_get_sizes, int64_t*, const_cast<int64_t*>(t.sizes.data()))
KT_GETTER(aoti_torch_get_strides, int64_t*, const_cast<int64_t*>(t.strides.data()))
KT_GETTER(aoti_torch_get_storage_offset, int64_t, t.storage_offset)
KT_GETTER(aoti_torch_is_contiguous, bool, t.is_contiguous())
KT_GETTER(aoti_torch_get_dtype, int32_t, t.dtype)
KT_GETTER(aoti_torch_get_layout, int32_t, ((void)t, layout::strided))
KT_GETTER(aoti_torch_get_device_type, int32_t, t.device_type)
KT_GETTER(aoti_torch_get_device_index, int32_t, t.device_index)

KT_EXPORT int32_t aoti_torch_get_size(AtenTensorHandle handle, int64_t d, int64_t* ret) {
  return guarded("aoti_torch_get_size", [&] {
    const Tensor& t = deref(handle, "aoti_torch_get_size");
    if (ret == nullptr) throw std::invalid_argument("null result pointer");
    if (t.sizes.empty()) throw std::out_of_range("a 0-d tensor has no sizes");
    *ret = t.sizes[wrap_dim(d, t.sizes.size(), "aoti_torch_get_size")];
  });
}

KT_EXPORT int32_t aoti_torch_get_stride(AtenTensorHandle handle, int64_t d, int64_t* ret) {
  return guarded("aoti_torch_get_stride", [&] {
    const Tensor& t = deref(handle, "aoti_torch_get_stride");
    if (ret == nullptr) throw std::invalid_argument("null result pointer");
    if (t.strides.empty()) throw std::out_of_range("a 0-d tensor has no strides");
    *ret = t.strides[wrap_dim(d, t.strides.size(), "aoti_torch_get_stride")];
  });
}

// ---- allocation -----------------------------------------------------------------------------

KT_EXPORT int32_t aoti_torch_empty_strided(int64_t ndim, const int64_t* sizes, const int64_t* strides, int32_t code,
                                           int32_t device_type, int32_t device_index, AtenTensorHandle* ret) {
  return guarded("aoti_torch_empty_strided", [&] {
    if (ret == nullptr || ndim < 0 || (ndim > 0 && sizes == nullptr)) throw std::invalid_argument("bad arguments");
    std::vector<int64_t> sz(sizes, sizes + ndim);
    std::vector<int64_t> st;
    if (strides != nullptr) st.assign(strides, strides + ndim);
    *ret = to_handle(allocate(sz, strides != nullptr ? &st : nullptr, code, device_type, device_index));
  });
}

// ---- StableIValue boxes and lists ---------------------------------------------------------------

KT_EXPORT int32_t torch_new_stable_ivalue(StableIValue** ret) {
  return guarded("torch_new_stable_ivalue", [&] { *ret = new StableIValue(0); });
}

KT_EXPORT int32_t torch_delete_stable_ivalue(StableIValue* value) {
  return guarded("torch_delete_stable_ivalue", [&] {
    if (value == nullptr) throw std::invalid_argument("null value");
    delete value;
  });
}

KT_EXPORT int32_t torch_new_list_reserve_size(size_t size, StableListOpaque** ret) {
  return guarded("torch_new_list_reserve_size", [&] {
    auto* list = new StableListOpaque();
    list->items.reserve(size);
    *ret = list;
  });
}

KT_EXPORT int32_t torch_list_size(StableListOpaque* list, size_t* ret) {
  return guarded("torch_list_size", [&] {
    if (list == nullptr) throw std::invalid_argument("null list");
    *ret = list->items.size();
  });
}

KT_EXPORT int32_t torch_list_get_item(StableListOpaque* list, size_t index, StableIValue* ret) {
  return guarded("torch_list_get_item", [&] {
    if (list == nullptr) throw std::invalid_argument("null list");
    *ret = list->items.at(index);
  });
}

KT_EXPORT int32_t torch_list_set_item(StableListOpaque* list, size_t index, StableIValue value) {
  return guarded("torch_list_set_item", [&] {
    if (list == nullptr) throw std::invalid_argument("null list");
    list->items.at(index) = value;
  });
}

KT_EXPORT int32_t torch_list_push_back(StableListOpaque* list, StableIValue value) {
  return guarded("torch_list_push_back", [&] {
    if (list == nullptr) throw std::invalid_argument("null list");
    list->items.push_back(value);
  });
}

KT_EXPORT int32_t torch_delete_list(StableListOpaque* list) {
  return guarded("torch_delete_list", [&] { delete list; });
}

// ---- Python ---------------------------------------------------------------------------------

// A kernel's PyInit_<name> calls it, and only Python's import calls PyInit: outside Python
// there is no module to create.
KT_EXPORT void* PyModule_Create2(void* def, int api_version) {
  (void)def;
  (void)api_version;
  fail("PyModule_Create2: there is no Python in this process");
  return nullptr;
}
