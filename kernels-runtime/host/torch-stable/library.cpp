// Op registration capture (run by a kernel's static initialisers, inside dlopen) and the
// catching trampoline for boxed calls.
//
// Registration shims never fail: a kernel throws when one does, inside dlopen, which
// terminates the process. Problems are recorded and read after the load.

#include <cstring>
#include <deque>
#include <mutex>

#include "internal.h"

namespace {

// What a TorchLibraryHandle points at: one STABLE_TORCH_LIBRARY[_IMPL|_FRAGMENT] block.
struct Library {
  std::string ns;
  std::string dispatch_key;  // "" for a def or fragment block
  std::string file;
  uint32_t line = 0;
};

struct Record {
  int32_t kind;
  std::string ns, name, schema, dispatch_key, file;
  KernelsTorchBoxedFn fn;
  uint64_t build_version;
  int64_t num_args, num_returns;
  uint32_t line;
};

// Process-wide and never destroyed: kernels' static destructors may run after the host's.
struct Table {
  std::mutex mutex;
  std::deque<Record> records;  // a deque keeps strings of old records in place as it grows
  std::deque<std::string> problems;
};

Table& table() {
  static Table* t = new Table();
  return *t;
}

// Returned when even a Library could not be allocated, so the kernel still gets a handle.
Library g_fallback_library;

std::string str_or(const char* s, const char* fallback) { return s != nullptr ? s : fallback; }

void record_problem(std::string problem) noexcept {
  try {
    Table& t = table();
    std::lock_guard<std::mutex> lock(t.mutex);
    t.problems.push_back(std::move(problem));
  } catch (...) {
    // Out of memory while recording: nothing more can be done without failing the shim.
  }
}

void add_record(Record r) noexcept {
  try {
    Table& t = table();
    std::lock_guard<std::mutex> lock(t.mutex);
    t.records.push_back(std::move(r));
  } catch (...) {
    record_problem("out of memory recording a registration");
  }
}

// Counts the top-level, comma-separated items of `s` (brackets and parentheses nest).
int64_t count_items(const std::string& s) {
  int depth = 0;
  int64_t n = 0;
  bool any = false;
  for (char c : s) {
    if (c == '(' || c == '[' || c == '<') ++depth;
    if (c == ')' || c == ']' || c == '>') --depth;
    if (c == ',' && depth == 0) ++n;
    if (c != ' ' && c != '\t' && c != '\n') any = true;
  }
  return any ? n + 1 : 0;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n"), e = s.find_last_not_of(" \t\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// "name.overload(args) -> returns": the name (overload included), argument and return counts;
// counts are -1 when the schema does not have that shape.
void parse_schema(const std::string& schema, std::string& name, int64_t& num_args, int64_t& num_returns) {
  num_args = num_returns = -1;
  size_t open = schema.find('(');
  name = trim(schema.substr(0, open));
  if (open == std::string::npos) return;
  int depth = 0;
  size_t close = std::string::npos;
  for (size_t i = open; i < schema.size(); ++i) {
    if (schema[i] == '(') ++depth;
    if (schema[i] == ')' && --depth == 0) {
      close = i;
      break;
    }
  }
  if (close == std::string::npos) return;
  std::string args = schema.substr(open + 1, close - open - 1);
  // A keyword-only marker `*` is not an argument.
  int64_t n = count_items(args);
  if (args.find('*') != std::string::npos) {
    int depth2 = 0;
    size_t start = 0;
    for (size_t i = 0; i <= args.size(); ++i) {
      char c = i < args.size() ? args[i] : ',';
      if (c == '(' || c == '[') ++depth2;
      if (c == ')' || c == ']') --depth2;
      if (c == ',' && depth2 == 0) {
        if (trim(args.substr(start, i - start)) == "*") --n;
        start = i + 1;
      }
    }
  }
  num_args = n;
  size_t arrow = schema.find("->", close);
  if (arrow == std::string::npos) return;
  std::string rets = trim(schema.substr(arrow + 2));
  if (!rets.empty() && rets.front() == '(' && rets.back() == ')') {
    num_returns = count_items(rets.substr(1, rets.size() - 2));
  } else {
    num_returns = rets.empty() ? -1 : 1;
  }
}

Library* as_library(void* handle) { return static_cast<Library*>(handle); }

int32_t init_library(const char* what, const char* ns, const char* key, const char* file, uint32_t line,
                     void** ret) noexcept {
  Library* lib = nullptr;
  try {
    lib = new Library{str_or(ns, ""), str_or(key, ""), str_or(file, ""), line};
  } catch (...) {
    lib = &g_fallback_library;
    record_problem(std::string(what) + ": out of memory; the library's registrations are lost");
  }
  if (ns == nullptr) record_problem(std::string(what) + ": null namespace at " + lib->file);
  if (ret != nullptr) {
    *ret = lib;
  } else {
    record_problem(std::string(what) + ": null result pointer");
    if (lib != &g_fallback_library) delete lib;
  }
  return KT_OK;
}

int32_t library_impl(const char* what, void* handle, const char* name, KernelsTorchBoxedFn fn,
                     uint64_t version) noexcept {
  Library* lib = as_library(handle);
  if (lib == nullptr || name == nullptr || fn == nullptr) {
    record_problem(std::string(what) + ": null " + (lib == nullptr ? "library" : name == nullptr ? "name" : "function") +
                   (name != nullptr ? std::string(" for `") + name + "`" : std::string()));
    return KT_OK;
  }
  try {
    add_record(Record{KERNELS_TORCH_HOST_IMPL, lib->ns, name, "", lib->dispatch_key, lib->file, fn, version, -1, -1,
                      lib->line});
  } catch (...) {
    record_problem(std::string(what) + ": out of memory");
  }
  return KT_OK;
}

}  // namespace

using namespace kt;

KT_EXPORT int32_t aoti_torch_library_init_def(const char* ns, const char* file, uint32_t line, void** ret) {
  return init_library("aoti_torch_library_init_def", ns, nullptr, file, line, ret);
}

KT_EXPORT int32_t aoti_torch_library_init_fragment(const char* ns, const char* file, uint32_t line, void** ret) {
  return init_library("aoti_torch_library_init_fragment", ns, nullptr, file, line, ret);
}

KT_EXPORT int32_t aoti_torch_library_init_impl(const char* ns, const char* key, const char* file, uint32_t line,
                                               void** ret) {
  if (key == nullptr) record_problem("aoti_torch_library_init_impl: null dispatch key");
  return init_library("aoti_torch_library_init_impl", ns, key, file, line, ret);
}

KT_EXPORT int32_t aoti_torch_library_def(void* handle, const char* schema) {
  Library* lib = as_library(handle);
  if (lib == nullptr || schema == nullptr) {
    record_problem(std::string("aoti_torch_library_def: null ") + (lib == nullptr ? "library" : "schema"));
    return KT_OK;
  }
  try {
    Record r{KERNELS_TORCH_HOST_DEF, lib->ns, "", schema, "", lib->file, nullptr, 0, -1, -1, lib->line};
    parse_schema(r.schema, r.name, r.num_args, r.num_returns);
    if (r.name.empty() || r.num_args < 0 || r.num_returns < 0) {
      record_problem("aoti_torch_library_def: cannot read schema `" + r.schema + "` in namespace " + lib->ns);
    }
    add_record(std::move(r));
  } catch (...) {
    record_problem("aoti_torch_library_def: out of memory");
  }
  return KT_OK;
}

KT_EXPORT int32_t aoti_torch_library_impl(void* handle, const char* name, KernelsTorchBoxedFn fn) {
  return library_impl("aoti_torch_library_impl", handle, name, fn, 0);
}

KT_EXPORT int32_t torch_library_impl(void* handle, const char* name, KernelsTorchBoxedFn fn, uint64_t version) {
  return library_impl("torch_library_impl", handle, name, fn, version);
}

KT_EXPORT int32_t aoti_torch_delete_library_object(void* handle) {
  Library* lib = as_library(handle);
  // The records keep copies of what they need; kernels are never unloaded.
  if (lib != nullptr && lib != &g_fallback_library) delete lib;
  return KT_OK;
}

KT_EXPORT size_t kernels_torch_host_registration_count(void) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  return t.records.size();
}

KT_EXPORT int32_t kernels_torch_host_registration(size_t index, KernelsTorchHostRegistration* out) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  if (out == nullptr || index >= t.records.size()) return KT_FAIL;
  const Record& r = t.records[index];
  *out = KernelsTorchHostRegistration{r.kind, r.ns.c_str(), r.name.c_str(), r.schema.c_str(),
                                      r.dispatch_key.c_str(), r.fn, r.build_version, r.num_args,
                                      r.num_returns, r.file.c_str(), r.line};
  return KT_OK;
}

KT_EXPORT size_t kernels_torch_host_problem_count(void) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  return t.problems.size();
}

KT_EXPORT const char* kernels_torch_host_problem(size_t index) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  return index < t.problems.size() ? t.problems[index].c_str() : nullptr;
}

// ---- boxed calls ----------------------------------------------------------------------------

namespace {
void copy_message(const std::string& message, char* err, size_t err_len) {
  if (err == nullptr || err_len == 0) return;
  size_t n = message.size() < err_len - 1 ? message.size() : err_len - 1;
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}
}  // namespace

namespace {
// The stream a CUDA call runs on, restored at the end of the call.
class ScopedStream {
 public:
  ScopedStream(int32_t device_index, void* stream)
      : device_index_(device_index), previous_(exchange_cuda_stream(device_index, stream)) {}
  ~ScopedStream() { (void)exchange_cuda_stream(device_index_, previous_); }
  ScopedStream(const ScopedStream&) = delete;
  ScopedStream& operator=(const ScopedStream&) = delete;

 private:
  int32_t device_index_;
  void* previous_;
};
}  // namespace

KT_EXPORT int32_t kernels_torch_host_call(KernelsTorchBoxedFn fn, uint64_t* stack, uint64_t num_args,
                                          uint64_t num_outputs, int32_t device_type, int32_t device_index,
                                          void* stream, char* err, size_t err_len) {
  if (fn == nullptr || (stack == nullptr && (num_args > 0 || num_outputs > 0))) {
    copy_message("kernels_torch_host_call: null function or stack", err, err_len);
    return KT_FAIL;
  }
  clear_error();
  try {
    if (device_type == device::cuda) {
      ScopedDevice device(device_index);
      ScopedStream current(device_index, stream);
      fn(stack, num_args, num_outputs);
    } else {
      fn(stack, num_args, num_outputs);
    }
    return KT_OK;
  } catch (...) {
    std::string message;
    try {
      message = current_exception_message();
      // The shim error that made the kernel throw says more than "API call failed at …".
      const std::string& shim = last_error();
      if (!shim.empty() && message.find(shim) == std::string::npos) message += " (" + shim + ")";
    } catch (...) {
      message = "an exception (out of memory reading its message)";
    }
    copy_message(message, err, err_len);
    return KT_FAIL;
  }
}

// ---- returned tensors -------------------------------------------------------------------------

namespace {
std::string shape_text(const std::vector<int64_t>& sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

void copy_elements(Tensor& dst, const Tensor& src) {
  if (dst.dtype != src.dtype) {
    throw std::invalid_argument(std::string("the op returned ") + dtype_name(src.dtype) + ", the output is " +
                                dtype_name(dst.dtype));
  }
  if (dst.sizes != src.sizes) {
    throw std::invalid_argument("the op returned shape " + shape_text(src.sizes) + ", the output has " +
                                shape_text(dst.sizes));
  }
  if (dst.device_type != src.device_type || (dst.device_type != device::cpu && dst.device_index != src.device_index)) {
    throw std::invalid_argument("the op returned a tensor on another device than the output's");
  }
  const size_t elem = element_size(src.dtype);
  const int64_t n = src.numel();
  if (n == 0 || (dst.data_ptr() == src.data_ptr() && dst.strides == src.strides)) return;
  if (dst.device_type == device::cuda) {
    if (!dst.is_contiguous() || !src.is_contiguous()) {
      throw std::invalid_argument("returned CUDA tensors are copied only between contiguous tensors");
    }
    cuda_copy(dst.data_ptr(), src.data_ptr(), static_cast<size_t>(n) * elem, dst.device_index);
    return;
  }
  if (dst.device_type != device::cpu) throw std::invalid_argument("returned tensors are copied on CPU and CUDA only");
  if (dst.is_contiguous() && src.is_contiguous()) {
    std::memmove(dst.data_ptr(), src.data_ptr(), static_cast<size_t>(n) * elem);
    return;
  }
  // Strided: walk both in row-major order.
  const size_t nd = src.sizes.size();
  std::vector<int64_t> index(nd, 0);
  char* d = static_cast<char*>(dst.data_ptr());
  const char* s = static_cast<const char*>(src.data_ptr());
  for (int64_t k = 0; k < n; ++k) {
    int64_t od = 0, os = 0;
    for (size_t i = 0; i < nd; ++i) {
      od += index[i] * dst.strides[i];
      os += index[i] * src.strides[i];
    }
    std::memcpy(d + od * static_cast<int64_t>(elem), s + os * static_cast<int64_t>(elem), elem);
    for (size_t i = nd; i-- > 0;) {
      if (++index[i] < src.sizes[i]) break;
      index[i] = 0;
    }
  }
}
}  // namespace

KT_EXPORT int32_t kernels_torch_host_copy_returned(void* dst, void* src, int32_t device_type, int32_t device_index,
                                                   void* stream, char* err, size_t err_len) {
  int32_t rc = KT_OK;
  try {
    if (dst == nullptr || src == nullptr) throw std::invalid_argument("null tensor handle");
    if (device_type == device::cuda) {
      ScopedDevice device(device_index);
      ScopedStream current(device_index, stream);
      copy_elements(*static_cast<Tensor*>(dst), *static_cast<Tensor*>(src));
    } else {
      copy_elements(*static_cast<Tensor*>(dst), *static_cast<Tensor*>(src));
    }
  } catch (...) {
    std::string message;
    try {
      message = current_exception_message();
    } catch (...) {
      message = "an exception (out of memory reading its message)";
    }
    copy_message(message, err, err_len);
    rc = KT_FAIL;
  }
  release_ref(static_cast<Tensor*>(src));
  return rc;
}
