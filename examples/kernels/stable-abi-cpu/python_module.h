// The library is also an (empty) abi3 Python extension module named TORCH_EXTENSION_NAME, as
// Hub kernels are: `import` runs PyInit_<name>, and the ops register themselves while the
// library loads. Written from CPython's stable-ABI layouts, so no Python headers are needed;
// outside Python, PyModule_Create2 is imported and never called.
#pragma once

#include <cstddef>

extern "C" {

struct StableAbiCpuPyObject {
  std::ptrdiff_t ob_refcnt;
  void* ob_type;
};

// PyModuleDef_Base, then PyModuleDef.
struct StableAbiCpuPyModuleDef {
  StableAbiCpuPyObject ob_base;
  void* (*m_init)();
  std::ptrdiff_t m_index;
  void* m_copy;
  const char* m_name;
  const char* m_doc;
  std::ptrdiff_t m_size;
  void* m_methods;
  void* m_slots;
  void* m_traverse;
  void* m_clear;
  void* m_free;
};

// CPython's; the second argument is the API version, 3 for abi3 modules.
void* PyModule_Create2(StableAbiCpuPyModuleDef* def, int api_version);
}

#define STABLE_ABI_CPU_STRINGIFY_(x) #x
#define STABLE_ABI_CPU_STRINGIFY(x) STABLE_ABI_CPU_STRINGIFY_(x)
#define STABLE_ABI_CPU_CONCAT_(a, b) a##b
#define STABLE_ABI_CPU_CONCAT(a, b) STABLE_ABI_CPU_CONCAT_(a, b)

static StableAbiCpuPyModuleDef stable_abi_cpu_module = {
    {1, nullptr}, nullptr, 0, nullptr,
    STABLE_ABI_CPU_STRINGIFY(TORCH_EXTENSION_NAME),
    nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr,
};

extern "C" __attribute__((visibility("default"))) void* STABLE_ABI_CPU_CONCAT(PyInit_, TORCH_EXTENSION_NAME)() {
  return PyModule_Create2(&stable_abi_cpu_module, 3);
}
