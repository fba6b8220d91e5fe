/*
 * Test kernels in C against the real tvm-ffi headers and libtvm_ffi.so, to check the Rust side
 * of the ABI: argument packing, error objects, the stream context and struct layouts.
 * Every function writes int64 results into its first argument, a 1-D int64 CPU tensor.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <tvm/ffi/c_api.h>
#include <tvm/ffi/extra/c_env_api.h>

#define EXPORT __attribute__((visibility("default")))

static int64_t* output(const TVMFFIAny* args, int32_t num_args, int64_t need) {
  if (num_args < 1 || args[0].type_index != kTVMFFIDLTensorPtr) return NULL;
  DLTensor* t = (DLTensor*)args[0].v_ptr;
  if (t->ndim != 1 || t->shape[0] < need || t->dtype.code != kDLInt || t->dtype.bits != 64) return NULL;
  return (int64_t*)((char*)t->data + t->byte_offset);
}

/* echo(out, args...): out[2i] = type index of args[i+1], out[2i+1] = its payload bits; for a
   tensor, the payload slot holds ndim * 1000 + shape[0], and the next call can inspect more. */
EXPORT int __tvm_ffi_echo(void* handle, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  int64_t* out = output(args, num_args, 2 * (num_args - 1));
  if (!out) {
    TVMFFIErrorSetRaisedFromCStr("TypeError", "echo: the first argument must be a large enough int64 tensor");
    return -1;
  }
  for (int32_t i = 1; i < num_args; ++i) {
    out[2 * (i - 1)] = args[i].type_index;
    if (args[i].type_index == kTVMFFIDLTensorPtr) {
      DLTensor* t = (DLTensor*)args[i].v_ptr;
      out[2 * (i - 1) + 1] = (int64_t)t->ndim * 1000 + (t->ndim > 0 ? t->shape[0] : 0);
    } else {
      out[2 * (i - 1) + 1] = args[i].v_int64;
    }
    if (args[i].zero_padding != 0) {
      TVMFFIErrorSetRaisedFromCStr("ValueError", "echo: zero_padding is not zero");
      return -1;
    }
  }
  return 0;
}

/* fail(code): raises ValueError "probe failed with <code>". */
EXPORT int __tvm_ffi_fail(void* handle, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  char message[64];
  long long code = (num_args > 0 && args[0].type_index == kTVMFFIInt) ? (long long)args[0].v_int64 : -1;
  snprintf(message, sizeof message, "probe failed with %lld", code);
  TVMFFIErrorSetRaisedFromCStr("ValueError", message);
  return -1;
}

/* raise_but_succeed(): raises an error, then reports success anyway. */
EXPORT int __tvm_ffi_raise_but_succeed(void* handle, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  TVMFFIErrorSetRaisedFromCStr("RuntimeError", "left behind by raise_but_succeed");
  return 0;
}

/* fail_silently(): fails without raising anything. */
EXPORT int __tvm_ffi_fail_silently(void* handle, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  return -2;
}

/* stream(out, x): out[0] = the current stream of x's device. */
EXPORT int __tvm_ffi_stream(void* handle, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  int64_t* out = output(args, num_args, 1);
  if (!out || num_args != 2 || args[1].type_index != kTVMFFIDLTensorPtr) {
    TVMFFIErrorSetRaisedFromCStr("TypeError", "stream(out, x)");
    return -1;
  }
  DLTensor* x = (DLTensor*)args[1].v_ptr;
  out[0] = (int64_t)(intptr_t)TVMFFIEnvGetStream(x->device.device_type, x->device.device_id);
  return 0;
}

/* layout(out): sizes, offsets and constants as the headers define them. */
EXPORT int __tvm_ffi_layout(void* handle, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  const int64_t values[] = {
      sizeof(TVMFFIAny), offsetof(TVMFFIAny, v_int64), sizeof(TVMFFIObject),
      offsetof(TVMFFIObject, type_index), sizeof(TVMFFIByteArray), offsetof(TVMFFIErrorCell, message),
      offsetof(TVMFFIErrorCell, backtrace), sizeof(DLTensor), offsetof(DLTensor, ndim),
      offsetof(DLTensor, dtype), offsetof(DLTensor, shape), offsetof(DLTensor, byte_offset),
      sizeof(DLDevice), sizeof(DLDataType), kTVMFFINone, kTVMFFIInt, kTVMFFIBool, kTVMFFIFloat,
      kTVMFFIOpaquePtr, kTVMFFIDLTensorPtr, kTVMFFIError, kTVMFFITensor, kTVMFFIStaticObjectBegin,
      kDLCPU, kDLCUDA, kDLROCM, kDLFloat, kDLBfloat, kDLBool,
  };
  const int64_t n = (int64_t)(sizeof values / sizeof values[0]);
  int64_t* out = output(args, num_args, n);
  if (!out) {
    TVMFFIErrorSetRaisedFromCStr("TypeError", "layout: out too small");
    return -1;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = values[i];
  return 0;
}
