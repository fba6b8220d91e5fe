// The ATen ops kernels reach by name (torch_call_dispatcher, aoti_torch_call_dispatcher) and
// through C shims of their own (aoti_torch_aten_*): allocation, filling and views, on CPU.
//
// Stack convention: arguments in schema order, one StableIValue each; the op takes ownership
// of every argument (tensor handles, heap boxes of optionals, lists) and writes its result
// to slot 0 as a new handle.

#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>

#include "internal.h"

using namespace kt;

namespace {

enum class Kind { Tensor, Int, IntList, OptDtype, OptLayout, OptDevice, OptBool, OptMemoryFormat };

struct Arg {
  Kind kind = Kind::Tensor;
  Tensor* tensor = nullptr;  // an owned reference
  int64_t value = 0;         // Int, or an optional's value
  bool present = false;      // an optional's presence
  std::vector<int64_t> list;
};

// The decoded arguments; drops the tensor references it owns.
struct Args {
  std::vector<Arg> items;
  Args() = default;
  Args(const Args&) = delete;
  Args& operator=(const Args&) = delete;
  ~Args() {
    for (Arg& a : items) release_ref(a.tensor);
  }
  Tensor& tensor(size_t i) { return *items[i].tensor; }
};

// Takes ownership of every slot of `stack` described by `kinds`.
void decode(StableIValue* stack, const std::vector<Kind>& kinds, Args& out) {
  out.items.reserve(kinds.size());
  for (size_t i = 0; i < kinds.size(); ++i) {
    Arg a;
    a.kind = kinds[i];
    StableIValue v = stack[i];
    switch (kinds[i]) {
      case Kind::Tensor:
        a.tensor = reinterpret_cast<Tensor*>(static_cast<uintptr_t>(v));
        break;
      case Kind::Int:
        a.value = static_cast<int64_t>(v);
        break;
      case Kind::IntList: {
        auto* list = reinterpret_cast<StableListOpaque*>(static_cast<uintptr_t>(v));
        if (list != nullptr) {
          for (StableIValue item : list->items) a.list.push_back(static_cast<int64_t>(item));
          delete list;
        }
        break;
      }
      default: {
        // Optionals: 0 is None, else a heap box made with operator new.
        auto* box = reinterpret_cast<StableIValue*>(static_cast<uintptr_t>(v));
        if (box != nullptr) {
          a.present = true;
          a.value = static_cast<int64_t>(*box);
          delete box;
        }
        break;
      }
    }
    out.items.push_back(std::move(a));
  }
  for (size_t i = 0; i < kinds.size(); ++i) {
    if (kinds[i] == Kind::Tensor && out.items[i].tensor == nullptr) {
      throw std::invalid_argument("argument " + std::to_string(i) + " is a null tensor handle");
    }
  }
}

void require_cpu(const Tensor& t, const char* op) {
  if (t.device_type != device::cpu) {
    throw std::runtime_error(std::string(op) + ": only CPU tensors are served so far (device type " +
                             std::to_string(t.device_type) + ")");
  }
}

// Calls f(element pointer) for every element of `t`, in row-major order.
void for_each_element(const Tensor& t, const std::function<void(char*)>& f) {
  int64_t n = t.numel();
  if (n == 0) return;
  size_t elem = element_size(t.dtype);
  char* base = static_cast<char*>(t.data_ptr());
  size_t nd = t.sizes.size();
  std::vector<int64_t> index(nd, 0);
  for (int64_t k = 0; k < n; ++k) {
    int64_t off = 0;
    for (size_t d = 0; d < nd; ++d) off += index[d] * t.strides[d];
    f(base + off * static_cast<int64_t>(elem));
    for (size_t d = nd; d-- > 0;) {
      if (++index[d] < t.sizes[d]) break;
      index[d] = 0;
    }
  }
}

uint16_t to_bfloat16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if (std::isnan(x)) return 0x7fc0;
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

uint16_t to_float16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  uint32_t sign = (bits >> 16) & 0x8000;
  uint32_t mag = bits & 0x7fffffff;
  if (mag > 0x7f800000) return static_cast<uint16_t>(sign | 0x7e00);     // NaN
  if (mag >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);    // rounds to infinity
  if (mag < 0x38800000) {                                                 // subnormal or zero
    float f;
    uint32_t m = mag;
    std::memcpy(&f, &m, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(f * 16777216.0f)));
  }
  uint32_t rounded = mag + 0xfff + ((mag >> 13) & 1);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000) >> 13));
}

// Writes `value` into every element of `t`, converted to its dtype.
void fill(Tensor& t, double value, const char* op) {
  if (t.device_type == device::cuda) {
    // Zeros are a memset on the current stream; other values would need a kernel of our own.
    if (value == 0.0 && !std::signbit(value) && t.is_contiguous()) {
      cuda_zero(t.data_ptr(), static_cast<size_t>(t.numel()) * element_size(t.dtype), t.device_index);
      return;
    }
    throw std::runtime_error(std::string(op) + ": on CUDA tensors only zeros into a contiguous tensor are served");
  }
  require_cpu(t, op);
  unsigned char pattern[16] = {};
  auto put = [&](const auto& v) { std::memcpy(pattern, &v, sizeof v); };
  switch (t.dtype) {
    case dtype::float32: put(static_cast<float>(value)); break;
    case dtype::float64: put(value); break;
    case dtype::float16: put(to_float16(static_cast<float>(value))); break;
    case dtype::bfloat16: put(to_bfloat16(static_cast<float>(value))); break;
    case dtype::int8: put(static_cast<int8_t>(value)); break;
    case dtype::int16: put(static_cast<int16_t>(value)); break;
    case dtype::int32: put(static_cast<int32_t>(value)); break;
    case dtype::int64: put(static_cast<int64_t>(value)); break;
    case dtype::uint8: put(static_cast<uint8_t>(value)); break;
    case dtype::uint16: put(static_cast<uint16_t>(value)); break;
    case dtype::uint32: put(static_cast<uint32_t>(value)); break;
    case dtype::uint64: put(static_cast<uint64_t>(value)); break;
    case dtype::boolean: put(static_cast<uint8_t>(value != 0.0)); break;
    default:
      throw std::runtime_error(std::string(op) + ": filling " + dtype_name(t.dtype) + " (code " +
                               std::to_string(t.dtype) + ") is not served");
  }
  size_t elem = element_size(t.dtype);
  if (value == 0.0 && t.is_contiguous()) {
    if (t.numel() > 0) std::memset(t.data_ptr(), 0, static_cast<size_t>(t.numel()) * elem);
    return;
  }
  for_each_element(t, [&](char* p) { std::memcpy(p, pattern, elem); });
}

// A new contiguous tensor like `self`, with the optional dtype/layout/device/memory format.
Tensor* new_like(const Tensor& self, const std::vector<int64_t>& sizes, Args& args, size_t first_option,
                 bool has_memory_format, const char* op) {
  const Arg& dt = args.items[first_option];
  const Arg& layout_arg = args.items[first_option + 1];
  const Arg& dev = args.items[first_option + 2];
  if (layout_arg.present && layout_arg.value != layout::strided) {
    throw std::runtime_error(std::string(op) + ": only the strided layout is served");
  }
  if (has_memory_format) {
    const Arg& mf = args.items[first_option + 4];
    if (mf.present && mf.value != memory_format::contiguous && mf.value != memory_format::preserve) {
      throw std::runtime_error(std::string(op) + ": only contiguous and preserve memory formats are served");
    }
  }
  int32_t code = dt.present ? static_cast<int32_t>(dt.value) : self.dtype;
  int32_t dev_type = self.device_type, dev_index = self.device_index;
  if (dev.present) {
    dev_type = static_cast<int32_t>(static_cast<uint64_t>(dev.value) >> 32);
    dev_index = static_cast<int32_t>(static_cast<uint32_t>(dev.value & 0xffffffff));
  }
  return allocate(sizes, nullptr, code, dev_type, dev_index);
}

Tensor* transpose(const Tensor& self, int64_t d0, int64_t d1) {
  int64_t nd = static_cast<int64_t>(self.sizes.size());
  d0 = wrap_dim(d0, nd, "aten::transpose");
  d1 = wrap_dim(d1, nd, "aten::transpose");
  auto sizes = self.sizes, strides = self.strides;
  if (nd > 0) {
    std::swap(sizes[d0], sizes[d1]);
    std::swap(strides[d0], strides[d1]);
  }
  return view_of(self, sizes, strides, self.storage_offset);
}

Tensor* narrow(const Tensor& self, int64_t dim, int64_t start, int64_t length) {
  int64_t nd = static_cast<int64_t>(self.sizes.size());
  if (nd == 0) throw std::invalid_argument("aten::narrow: cannot narrow a 0-d tensor");
  dim = wrap_dim(dim, nd, "aten::narrow");
  int64_t size = self.sizes[dim];
  if (start < 0) start += size;
  if (start < 0 || length < 0 || start + length > size) {
    throw std::out_of_range("aten::narrow: start " + std::to_string(start) + " + length " + std::to_string(length) +
                            " exceeds dimension " + std::to_string(dim) + " of size " + std::to_string(size));
  }
  auto sizes = self.sizes;
  sizes[dim] = length;
  return view_of(self, sizes, self.strides, self.storage_offset + start * self.strides[dim]);
}

// The shape `requested` for `numel` elements, with one -1 inferred.
std::vector<int64_t> infer_shape(std::vector<int64_t> requested, int64_t numel, const char* op) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < requested.size(); ++i) {
    if (requested[i] == -1) {
      if (infer >= 0) throw std::invalid_argument(std::string(op) + ": only one dimension can be inferred");
      infer = static_cast<int64_t>(i);
    } else if (requested[i] < 0) {
      throw std::invalid_argument(std::string(op) + ": invalid size " + std::to_string(requested[i]));
    } else {
      known *= requested[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel % known != 0) throw std::invalid_argument(std::string(op) + ": shape does not fit");
    requested[infer] = numel / known;
  } else if (known != numel) {
    throw std::invalid_argument(std::string(op) + ": shape has " + std::to_string(known) + " elements, the tensor " +
                                std::to_string(numel));
  }
  return requested;
}

Tensor* view(const Tensor& self, const std::vector<int64_t>& shape, const char* op) {
  auto sizes = infer_shape(shape, self.numel(), op);
  if (!self.is_contiguous()) {
    throw std::runtime_error(std::string(op) + ": views of non-contiguous tensors are not served yet");
  }
  return view_of(self, sizes, contiguous_strides(sizes), self.storage_offset);
}

Tensor* reshape(const Tensor& self, const std::vector<int64_t>& shape) {
  if (self.is_contiguous()) return view(self, shape, "aten::reshape");
  auto sizes = infer_shape(shape, self.numel(), "aten::reshape");
  require_cpu(self, "aten::reshape");
  Tensor* out = allocate(sizes, nullptr, self.dtype, self.device_type, self.device_index);
  char* dst = static_cast<char*>(out->data_ptr());
  size_t elem = element_size(self.dtype);
  for_each_element(self, [&](char* p) {
    std::memcpy(dst, p, elem);
    dst += elem;
  });
  return out;
}

struct Op {
  const char* name;
  const char* overload;
  std::vector<Kind> kinds;
  std::function<Tensor*(Args&)> run;
};

const std::vector<Op>& ops() {
  using K = Kind;
  static const std::vector<Op>* table = new std::vector<Op>{
      {"aten::empty_like", "",
       {K::Tensor, K::OptDtype, K::OptLayout, K::OptDevice, K::OptBool, K::OptMemoryFormat},
       [](Args& a) { return new_like(a.tensor(0), a.tensor(0).sizes, a, 1, true, "aten::empty_like"); }},
      {"aten::empty", "memory_format",
       {K::IntList, K::OptDtype, K::OptLayout, K::OptDevice, K::OptBool, K::OptMemoryFormat},
       [](Args& a) {
         Tensor cpu_float;  // the defaults: float32 on the CPU
         cpu_float.device_index = -1;
         return new_like(cpu_float, a.items[0].list, a, 1, true, "aten::empty.memory_format");
       }},
      {"aten::new_empty", "",
       {K::Tensor, K::IntList, K::OptDtype, K::OptLayout, K::OptDevice, K::OptBool},
       [](Args& a) { return new_like(a.tensor(0), a.items[1].list, a, 2, false, "aten::new_empty"); }},
      {"aten::zero_", "", {K::Tensor},
       [](Args& a) {
         fill(a.tensor(0), 0.0, "aten::zero_");
         a.tensor(0).refs.fetch_add(1);
         return a.items[0].tensor;
       }},
      {"aten::transpose", "int", {K::Tensor, K::Int, K::Int},
       [](Args& a) { return transpose(a.tensor(0), a.items[1].value, a.items[2].value); }},
      {"aten::narrow", "", {K::Tensor, K::Int, K::Int, K::Int},
       [](Args& a) { return narrow(a.tensor(0), a.items[1].value, a.items[2].value, a.items[3].value); }},
      {"aten::select", "int", {K::Tensor, K::Int, K::Int},
       [](Args& a) {
         const Tensor& t = a.tensor(0);
         int64_t nd = static_cast<int64_t>(t.sizes.size());
         if (nd == 0) throw std::invalid_argument("aten::select: cannot select on a 0-d tensor");
         int64_t dim = wrap_dim(a.items[1].value, nd, "aten::select");
         int64_t index = a.items[2].value < 0 ? a.items[2].value + t.sizes[dim] : a.items[2].value;
         if (index < 0 || index >= t.sizes[dim]) throw std::out_of_range("aten::select: index out of range");
         auto sizes = t.sizes, strides = t.strides;
         sizes.erase(sizes.begin() + dim);
         strides.erase(strides.begin() + dim);
         return view_of(t, sizes, strides, t.storage_offset + index * t.strides[dim]);
       }},
      {"aten::unsqueeze", "", {K::Tensor, K::Int},
       [](Args& a) {
         const Tensor& t = a.tensor(0);
         int64_t nd = static_cast<int64_t>(t.sizes.size());
         int64_t dim = wrap_dim(a.items[1].value, nd + 1, "aten::unsqueeze");
         auto sizes = t.sizes, strides = t.strides;
         int64_t stride = dim < nd ? t.sizes[dim] * t.strides[dim] : 1;
         sizes.insert(sizes.begin() + dim, 1);
         strides.insert(strides.begin() + dim, stride);
         return view_of(t, sizes, strides, t.storage_offset);
       }},
      {"aten::squeeze", "dim", {K::Tensor, K::Int},
       [](Args& a) {
         const Tensor& t = a.tensor(0);
         auto sizes = t.sizes, strides = t.strides;
         if (!sizes.empty()) {
           int64_t dim = wrap_dim(a.items[1].value, static_cast<int64_t>(sizes.size()), "aten::squeeze");
           if (sizes[dim] == 1) {
             sizes.erase(sizes.begin() + dim);
             strides.erase(strides.begin() + dim);
           }
         }
         return view_of(t, sizes, strides, t.storage_offset);
       }},
      {"aten::squeeze", "", {K::Tensor},
       [](Args& a) {
         const Tensor& t = a.tensor(0);
         std::vector<int64_t> sizes, strides;
         for (size_t i = 0; i < t.sizes.size(); ++i) {
           if (t.sizes[i] != 1) {
             sizes.push_back(t.sizes[i]);
             strides.push_back(t.strides[i]);
           }
         }
         return view_of(t, sizes, strides, t.storage_offset);
       }},
      {"aten::view", "", {K::Tensor, K::IntList},
       [](Args& a) { return view(a.tensor(0), a.items[1].list, "aten::view"); }},
      {"aten::reshape", "", {K::Tensor, K::IntList},
       [](Args& a) { return reshape(a.tensor(0), a.items[1].list); }},
  };
  return *table;
}

int32_t call_dispatcher(const char* shim, const char* name, const char* overload, StableIValue* stack) {
  std::string op_name = name != nullptr ? name : "";
  std::string ov = overload != nullptr ? overload : "";
  std::string full = ov.empty() ? op_name : op_name + "." + ov;
  std::string what = std::string(shim) + "(" + full + ")";
  if (stack == nullptr) return fail(what + ": null stack");
  for (const Op& op : ops()) {
    if (op_name != op.name || ov != op.overload) continue;
    return guarded(what.c_str(), [&] {
      Args args;
      decode(stack, op.kinds, args);
      stack[0] = static_cast<StableIValue>(reinterpret_cast<uintptr_t>(op.run(args)));
    });
  }
  // The stack's layout is unknown, so its handles cannot be released: they leak.
  return fail(what + ": ATen op `" + full + "` is not served by this host (it serves empty_like, "
              "empty.memory_format, new_empty, zero_, transpose.int, narrow, select.int, unsqueeze, "
              "squeeze, squeeze.dim, view, reshape)");
}

}  // namespace

KT_EXPORT int32_t aoti_torch_call_dispatcher(const char* name, const char* overload, StableIValue* stack) {
  return call_dispatcher("aoti_torch_call_dispatcher", name, overload, stack);
}

KT_EXPORT int32_t torch_call_dispatcher(const char* name, const char* overload, StableIValue* stack,
                                        uint64_t extension_build_version) {
  (void)extension_build_version;  // the ops served have one schema across 2.9-2.13
  return call_dispatcher("torch_call_dispatcher", name, overload, stack);
}

// ---- the ops' own C shims (borrowed handles, new results) ----------------------------------------

KT_EXPORT int32_t aoti_torch_aten_fill__Scalar(AtenTensorHandle self, double value) {
  return guarded("aoti_torch_aten_fill__Scalar", [&] { fill(deref(self, "self"), value, "aten::fill_.Scalar"); });
}

KT_EXPORT int32_t aoti_torch_aten_narrow(AtenTensorHandle self, int64_t dim, int64_t start, int64_t length,
                                         AtenTensorHandle* ret) {
  return guarded("aoti_torch_aten_narrow", [&] { *ret = to_handle(narrow(deref(self, "self"), dim, start, length)); });
}

KT_EXPORT int32_t aoti_torch_aten_new_empty(AtenTensorHandle self, const int64_t* size, int64_t size_len,
                                            int32_t* dtype_code, int32_t* layout_code, int32_t* device_type,
                                            int32_t device_index, int32_t* pin_memory, AtenTensorHandle* ret) {
  (void)pin_memory;
  return guarded("aoti_torch_aten_new_empty", [&] {
    const Tensor& t = deref(self, "self");
    if (size_len < 0 || (size_len > 0 && size == nullptr)) throw std::invalid_argument("bad size");
    if (layout_code != nullptr && *layout_code != layout::strided) {
      throw std::runtime_error("aten::new_empty: only the strided layout is served");
    }
    std::vector<int64_t> sizes(size, size + size_len);
    int32_t code = dtype_code != nullptr ? *dtype_code : t.dtype;
    int32_t dev = device_type != nullptr ? *device_type : t.device_type;
    int32_t index = device_type != nullptr ? device_index : t.device_index;
    *ret = to_handle(allocate(sizes, nullptr, code, dev, index));
  });
}
