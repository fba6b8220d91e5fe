//! Resolving `__tvm_ffi_<name>` and calling it: [`KernelFunction`], [`Arg`] ([`Value`]), [`KernelError`].

use core::ffi::c_void;
use core::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libloading::Library;

use super::abi::{
    DLDevice, DLTensor, KernelsTakeErrorFn, OBJECT_CELL_OFFSET, TVMFFIAny, TVMFFIByteArray, TVMFFIEnvSetStreamFn,
    TVMFFIErrorCell, TVMFFIErrorMoveFromRaisedFn, TVMFFIObject, TVMFFIObjectDecRefFn, TVMFFIObjectHandle,
    TVMFFISafeCallType, TVMFFIStreamHandle, symbol, type_index,
};
use super::tensor::TensorView;
use crate::torch_stable_abi::StableAbiOp;

/// The most arguments one call passes (they live in a stack array).
pub const MAX_ARGS: usize = 16;

/// One argument of a kernel call: a tensor of type `T`, or a scalar. The ABI's own argument is
/// [`Arg`] (a borrowed [`TensorView`]); adapters reuse this type with the tensor they lend
/// (`dispatch::KernelTensor`, `candle::CandleTensor`), so the scalars and their conversions
/// exist once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<T> {
    /// A tensor (passed as a borrowed `DLTensor*`, `kTVMFFIDLTensorPtr`).
    Tensor(T),
    /// `kTVMFFIInt`.
    Int(i64),
    /// `kTVMFFIFloat`.
    Float(f64),
    /// `kTVMFFIBool`.
    Bool(bool),
    /// `None`, for optional parameters (`kTVMFFINone`).
    None,
}

/// One argument of a kernel call, as the ABI passes it.
pub type Arg<'a> = Value<&'a TensorView<'a>>;

impl<T> Value<T> {
    /// The same argument with its tensor converted by `f` (scalars unchanged).
    #[inline]
    pub fn map_tensor<U>(self, f: impl FnOnce(T) -> U) -> Value<U> {
        match self {
            Value::Tensor(t) => Value::Tensor(f(t)),
            Value::Int(v) => Value::Int(v),
            Value::Float(v) => Value::Float(v),
            Value::Bool(v) => Value::Bool(v),
            Value::None => Value::None,
        }
    }

    /// A `Value` of a reference to the tensor.
    #[inline]
    pub fn as_ref(&self) -> Value<&T> {
        match self {
            Value::Tensor(t) => Value::Tensor(t),
            Value::Int(v) => Value::Int(*v),
            Value::Float(v) => Value::Float(*v),
            Value::Bool(v) => Value::Bool(*v),
            Value::None => Value::None,
        }
    }
}

impl<'a, 'b: 'a> From<&'a TensorView<'b>> for Arg<'a> {
    fn from(tensor: &'a TensorView<'b>) -> Self {
        Value::Tensor(tensor)
    }
}

impl<T> From<i64> for Value<T> {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl<T> From<i32> for Value<T> {
    fn from(value: i32) -> Self {
        Value::Int(value.into())
    }
}

impl<T> From<f64> for Value<T> {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl<T> From<f32> for Value<T> {
    fn from(value: f32) -> Self {
        Value::Float(value.into())
    }
}

impl<T> From<bool> for Value<T> {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

/// A device stream to run a call on (`cudaStream_t` / `hipStream_t` of `device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    device: DLDevice,
    handle: TVMFFIStreamHandle,
}

impl Stream {
    /// The stream `handle` of `device`.
    ///
    /// # Safety
    /// `handle` must be a live stream of `device` (or null for its default stream) for as long
    /// as calls use it.
    pub unsafe fn from_raw(device: DLDevice, handle: *mut c_void) -> Self {
        Self { device, handle }
    }

    /// The default (null) stream of `device`.
    pub fn default_of(device: DLDevice) -> Self {
        Self { device, handle: core::ptr::null_mut() }
    }

    /// The device the stream belongs to.
    pub fn device(&self) -> DLDevice {
        self.device
    }

    /// The raw handle.
    pub fn handle(&self) -> *mut c_void {
        self.handle
    }
}

// SAFETY: a stream handle is an opaque token that CUDA/HIP accept from any thread.
unsafe impl Send for Stream {}
// SAFETY: as above; `&Stream` only exposes the token.
unsafe impl Sync for Stream {}

/// Resolving a kernel function failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The library does not export `__tvm_ffi_<name>`.
    #[error(
        "kernel library {library} does not export `{symbol}` (function `{function}`); check the \
         function name in kernels.toml against the symbols of the library (`nm -D {library}`)"
    )]
    MissingSymbol {
        /// The function name asked for.
        function: String,
        /// The symbol looked up.
        symbol: String,
        /// The library searched.
        library: PathBuf,
        /// What the dynamic loader said.
        #[source]
        source: libloading::Error,
    },
    /// The function name cannot be a symbol (empty or containing NUL).
    #[error("`{function:?}` is not a valid kernel function name")]
    InvalidName {
        /// The function name asked for.
        function: String,
    },
}

/// A kernel call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The kernel raised an error: its kind and message, as the kernel wrote them.
    #[error("kernel `{function}` failed: {kind}: {message}")]
    Raised {
        /// The function called.
        function: String,
        /// The error kind (`ValueError`, `TypeError`, `RuntimeError`, …).
        kind: String,
        /// The kernel's message.
        message: String,
        /// The backtrace tvm-ffi recorded, most recent call first (empty when none).
        backtrace: String,
    },
    /// The kernel returned non-zero without an error its library lets us read.
    #[error("kernel `{function}` failed with code {code} and left no error message ({reason})")]
    NoMessage {
        /// The function called.
        function: String,
        /// The return code.
        code: i32,
        /// Why no message could be read.
        reason: &'static str,
    },
    /// More arguments than [`MAX_ARGS`].
    #[error("kernel `{function}` called with {given} arguments; at most {MAX_ARGS} are supported")]
    TooManyArgs {
        /// The function called.
        function: String,
        /// Number of arguments given.
        given: usize,
    },
    /// The arguments do not fit the op's schema (a torch stable-ABI op), found before the call.
    #[error("kernel `{function}`: {message}")]
    Signature {
        /// The function called.
        function: String,
        /// What does not fit, located (argument number, name and type).
        message: String,
    },
    /// A non-default stream was given but the library cannot receive one (it does not use
    /// tvm-ffi's stream context, as kernels written in Rust do not).
    #[error(
        "kernel `{function}` cannot run on a non-default stream of {device}: its library does not \
         link libtvm_ffi (no `TVMFFIEnvSetStream`); run on the device's default stream (for \
         candle: a device made with `Device::new_cuda`) or use a kernel built against tvm-ffi"
    )]
    StreamUnsupported {
        /// The function called.
        function: String,
        /// The device of the stream.
        device: DLDevice,
    },
}

impl KernelError {
    /// The kernel's error kind and message, when the kernel raised one.
    pub fn raised(&self) -> Option<(&str, &str)> {
        match self {
            KernelError::Raised { kind, message, .. } => Some((kind, message)),
            _ => None,
        }
    }
}

/// How a library reports the error behind a non-zero return.
#[derive(Debug, Clone, Copy)]
enum ErrorChannel {
    /// A kernel written in Rust: `__kernels_rs_take_error`.
    Rust(KernelsTakeErrorFn),
    /// tvm-ffi's thread-local raised error.
    TvmFfi { move_from_raised: TVMFFIErrorMoveFromRaisedFn, dec_ref: TVMFFIObjectDecRefFn },
    /// Neither: only the return code is known.
    None,
}

/// A resolved `__tvm_ffi_<name>` of a loaded library.
///
/// Resolution looks up every symbol a call may need (the function, the library's error channel
/// and `TVMFFIEnvSetStream`), so [`call`](Self::call) does no name lookup and, on success, no
/// heap allocation.
///
/// Symbols other than the function are looked up through the library's handle, which searches
/// the library and its dependencies: a kernel linked against `libtvm_ffi.so` reaches the very
/// copy it raises errors into.
///
/// A function may also be an op a torch stable-ABI library registered
/// ([`LoadedKernel::function`](crate::loader::LoadedKernel::function) resolves those): the
/// same calls then check the arguments against the op's schema, build tensor handles over the
/// views and call the op through the torch stable-ABI host.
#[derive(Debug, Clone)]
pub struct KernelFunction {
    function: String,
    symbol: String,
    library_path: PathBuf,
    entry: Entry,
    errors: ErrorChannel,
    set_stream: Option<TVMFFIEnvSetStreamFn>,
}

/// What a call enters.
#[derive(Debug, Clone)]
enum Entry {
    /// The `__tvm_ffi_<name>` export.
    TvmFfi(TVMFFISafeCallType),
    /// An op a torch stable-ABI library registered (no error channel, no stream).
    StableAbi(Arc<StableAbiOp>),
}

/// Copies `T` out of a symbol of a `'static` library.
///
/// # Safety
/// `T` must be the symbol's true type (a function pointer type).
unsafe fn lookup<T: Copy>(library: &'static Library, name: &str) -> Result<T, libloading::Error> {
    // SAFETY: the caller guarantees the type; the library is never unloaded, so the pointer
    // stays valid after the `Symbol` guard is dropped.
    unsafe { library.get::<T>(name.as_bytes()).map(|s| *s) }
}

impl KernelFunction {
    /// Resolves function `name` (symbol `__tvm_ffi_<name>`) of `library`, loaded from
    /// `library_path` (used in messages only).
    ///
    /// # Safety
    /// `library` must be a kernel library following the TVM-FFI ABI: `__tvm_ffi_<name>` has the
    /// `TVMFFISafeCallType` signature, and `TVMFFIErrorMoveFromRaised`, `TVMFFIObjectDecRef`,
    /// `TVMFFIEnvSetStream` and `__kernels_rs_take_error`, where present, have theirs.
    pub unsafe fn resolve(library: &'static Library, library_path: &Path, name: &str) -> Result<Self, ResolveError> {
        if name.is_empty() || name.contains('\0') {
            return Err(ResolveError::InvalidName { function: name.to_owned() });
        }
        let symbol = format!("{}{name}", symbol::FUNCTION_PREFIX);
        // SAFETY: the caller guarantees the signature of the export.
        let call = unsafe { lookup::<TVMFFISafeCallType>(library, &symbol) }.map_err(|source| {
            ResolveError::MissingSymbol {
                function: name.to_owned(),
                symbol: symbol.clone(),
                library: library_path.to_owned(),
                source,
            }
        })?;
        // SAFETY: the caller guarantees these signatures where the symbols exist.
        let rust = unsafe { lookup::<KernelsTakeErrorFn>(library, symbol::KERNELS_TAKE_ERROR) }.ok();
        // SAFETY: as above.
        let tvm = unsafe {
            lookup::<TVMFFIErrorMoveFromRaisedFn>(library, symbol::ERROR_MOVE_FROM_RAISED)
                .and_then(|m| Ok((m, lookup::<TVMFFIObjectDecRefFn>(library, symbol::OBJECT_DEC_REF)?)))
        }
        .ok();
        // SAFETY: as above.
        let set_stream = unsafe { lookup::<TVMFFIEnvSetStreamFn>(library, symbol::ENV_SET_STREAM) }.ok();
        let errors = match (rust, tvm) {
            (Some(take), _) => ErrorChannel::Rust(take),
            (None, Some((move_from_raised, dec_ref))) => ErrorChannel::TvmFfi { move_from_raised, dec_ref },
            (None, None) => ErrorChannel::None,
        };
        Ok(Self {
            function: name.to_owned(),
            symbol,
            library_path: library_path.to_owned(),
            entry: Entry::TvmFfi(call),
            errors,
            set_stream,
        })
    }

    /// An op of a torch stable-ABI library, resolved from its registrations.
    pub(crate) fn stable_abi(name: &str, library_path: &Path, op: StableAbiOp) -> Self {
        Self {
            function: name.to_owned(),
            symbol: op.qualified_name().to_owned(),
            library_path: library_path.to_owned(),
            entry: Entry::StableAbi(Arc::new(op)),
            errors: ErrorChannel::None,
            set_stream: None,
        }
    }

    /// Whether the function is an op of a torch stable-ABI library.
    pub fn is_stable_abi(&self) -> bool {
        matches!(self.entry, Entry::StableAbi(_))
    }

    /// The function name (without the `__tvm_ffi_` prefix).
    pub fn name(&self) -> &str {
        &self.function
    }

    /// The exported symbol (`namespace::op` for an op of a torch stable-ABI library).
    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    /// The library the function comes from.
    pub fn library_path(&self) -> &Path {
        &self.library_path
    }

    /// Whether the library reports errors through the channel of kernels written in Rust.
    pub fn is_rust_kernel(&self) -> bool {
        matches!(self.errors, ErrorChannel::Rust(_))
    }

    /// Whether the library can receive a stream: it reaches `TVMFFIEnvSetStream`, or it is a
    /// torch stable-ABI op (the host makes the stream current for the call).
    pub fn accepts_stream(&self) -> bool {
        self.set_stream.is_some() || self.is_stable_abi()
    }

    /// Calls the function with `args`.
    ///
    /// When a tensor lives on a device with streams (CUDA, ROCm) and the library reaches
    /// `TVMFFIEnvSetStream`, that device's default (null) stream is set for the call and the
    /// previous one restored afterwards; use [`call_on_stream`](Self::call_on_stream) for
    /// another stream. Nothing is looked up by name and, on success, nothing is allocated.
    ///
    /// # Safety
    /// The arguments must be what the kernel expects: the kernel reads and writes through the
    /// tensors' pointers as its own contract says, so every tensor it writes must come from
    /// writable memory ([`TensorView::from_slice_mut`] or device memory) that nothing else
    /// reads or writes during the call, including other threads.
    pub unsafe fn call(&self, args: &[Arg<'_>]) -> Result<(), KernelError> {
        let stream = args.iter().find_map(|a| match a {
            Arg::Tensor(t) if t.device().device_type.has_streams() => Some(Stream::default_of(t.device())),
            _ => None,
        });
        match (stream, self.set_stream) {
            // SAFETY: forwarded from the caller; the default stream is always valid.
            (Some(stream), Some(_)) => unsafe { self.call_on_stream(stream, args) },
            // SAFETY: forwarded from the caller.
            _ => unsafe { self.call_raw(args) },
        }
    }

    /// Like [`call`](Self::call), with `stream` set as the current stream of its device for the
    /// duration of the call (`TVMFFIEnvSetStream`), then the previous stream restored.
    ///
    /// The one stream rule: a library that cannot receive a stream ([`accepts_stream`] is
    /// false) runs on the device's default stream, so it is called when `stream` is that
    /// (null) stream and refused ([`KernelError::StreamUnsupported`]) before it runs otherwise.
    ///
    /// # Safety
    /// As for [`call`](Self::call); the stream must belong to the device of the tensors.
    ///
    /// [`accepts_stream`]: Self::accepts_stream
    pub unsafe fn call_on_stream(&self, stream: Stream, args: &[Arg<'_>]) -> Result<(), KernelError> {
        if let Entry::StableAbi(op) = &self.entry {
            // SAFETY: forwarded from the caller; the host makes `stream` current for the call.
            return unsafe { op.call(&self.function, args, Some(stream)) };
        }
        let Some(set_stream) = self.set_stream else {
            if stream.handle().is_null() {
                // SAFETY: forwarded from the caller.
                return unsafe { self.call_raw(args) };
            }
            return Err(KernelError::StreamUnsupported { function: self.function.clone(), device: stream.device() });
        };
        let device = stream.device();
        let mut previous: TVMFFIStreamHandle = core::ptr::null_mut();
        // SAFETY: the function has the TVMFFIEnvSetStream signature (resolve's contract);
        // `previous` is a valid out-pointer.
        let code = unsafe { set_stream(device.device_type.0, device.device_id, stream.handle(), &mut previous) };
        if code != 0 {
            return Err(self.take_error(code));
        }
        // SAFETY: forwarded from the caller.
        let result = unsafe { self.call_raw(args) };
        // SAFETY: as above; restoring the stream that was current before.
        let restored = unsafe { set_stream(device.device_type.0, device.device_id, previous, core::ptr::null_mut()) };
        match result {
            Ok(()) if restored != 0 => Err(self.take_error(restored)),
            other => other,
        }
    }

    /// [`call_on_stream`](Self::call_on_stream) on `stream`, or [`call`](Self::call) (the
    /// tensors' default stream) when there is none: what adapters that know their tensors'
    /// stream call.
    ///
    /// # Safety
    /// As for [`call_on_stream`](Self::call_on_stream).
    pub unsafe fn call_with_stream(&self, stream: Option<Stream>, args: &[Arg<'_>]) -> Result<(), KernelError> {
        match stream {
            // SAFETY: forwarded from the caller.
            Some(stream) => unsafe { self.call_on_stream(stream, args) },
            // SAFETY: forwarded from the caller.
            None => unsafe { self.call(args) },
        }
    }

    /// Packs `args` on the stack and calls the export.
    ///
    /// # Safety
    /// As for [`call`](Self::call).
    unsafe fn call_raw(&self, args: &[Arg<'_>]) -> Result<(), KernelError> {
        let call = match &self.entry {
            Entry::TvmFfi(call) => *call,
            // SAFETY: forwarded from the caller.
            Entry::StableAbi(op) => return unsafe { op.call(&self.function, args, None) },
        };
        if args.len() > MAX_ARGS {
            return Err(KernelError::TooManyArgs { function: self.function.clone(), given: args.len() });
        }
        let mut tensors = [MaybeUninit::<DLTensor>::uninit(); MAX_ARGS];
        let mut packed = [TVMFFIAny::none(); MAX_ARGS];
        for (i, arg) in args.iter().enumerate() {
            packed[i] = match *arg {
                Arg::Tensor(view) => {
                    // `view` is borrowed for the whole call, so the shape/stride pointers in
                    // the DLTensor stay valid; the DLTensor itself lives in `tensors`.
                    let slot = tensors[i].write(view.as_dl_tensor());
                    TVMFFIAny::dl_tensor(slot)
                }
                Arg::Int(v) => TVMFFIAny::int(v),
                Arg::Float(v) => TVMFFIAny::float(v),
                Arg::Bool(v) => TVMFFIAny::bool(v),
                Arg::None => TVMFFIAny::none(),
            };
        }
        self.clear_pending_error();
        let mut result = TVMFFIAny::none();
        // SAFETY: `call` has the safe-call signature (resolve's contract); `packed[..len]` are
        // initialised values whose tensor pointers point into `tensors`, alive for the call;
        // `result` holds None as the ABI requires. Argument validity is the caller's contract.
        let code = unsafe { call(core::ptr::null_mut(), packed.as_ptr(), args.len() as i32, &mut result) };
        if code != 0 {
            return Err(self.take_error(code));
        }
        // The functions kernels export return nothing; should one return an object, release it.
        if result.type_index >= type_index::STATIC_OBJECT_BEGIN
            && let ErrorChannel::TvmFfi { dec_ref, .. } = self.errors
        {
            // SAFETY: an object result is an owned reference handed to the caller.
            unsafe { dec_ref(result.ptr()) };
        }
        Ok(())
    }

    /// Drops an error left raised by an earlier call that still returned 0, so a failure of
    /// this call is never reported with another call's message.
    #[inline]
    fn clear_pending_error(&self) {
        match self.errors {
            ErrorChannel::Rust(take) => {
                unsafe extern "C" fn discard(_: *mut c_void, _: *const TVMFFIByteArray, _: *const TVMFFIByteArray) {}
                // SAFETY: `take` has the KernelsTakeErrorFn signature (resolve's contract); the
                // sink ignores its arguments and the context is never read.
                unsafe { take(core::ptr::null_mut(), discard) };
            }
            ErrorChannel::TvmFfi { move_from_raised, dec_ref } => {
                let mut handle: TVMFFIObjectHandle = core::ptr::null_mut();
                // SAFETY: signatures guaranteed by resolve's contract; a raised error moved out
                // is an owned reference, released here.
                unsafe {
                    move_from_raised(&mut handle);
                    if !handle.is_null() {
                        dec_ref(handle);
                    }
                }
            }
            ErrorChannel::None => {}
        }
    }

    /// Reads (and clears) the error behind return code `code`.
    fn take_error(&self, code: i32) -> KernelError {
        let no_message = |reason| KernelError::NoMessage { function: self.function.clone(), code, reason };
        match self.errors {
            ErrorChannel::Rust(take) => {
                let mut slot: Option<(String, String)> = None;
                // SAFETY: `take` has the KernelsTakeErrorFn signature (resolve's contract);
                // the sink gets `&mut slot` back as its context, only during this call.
                let status = unsafe { take((&raw mut slot).cast(), receive_rust_error) };
                match (status, slot) {
                    (0, Some((kind, message))) => {
                        KernelError::Raised { function: self.function.clone(), kind, message, backtrace: String::new() }
                    }
                    _ => no_message("the kernel recorded no error"),
                }
            }
            ErrorChannel::TvmFfi { move_from_raised, dec_ref } => {
                let mut handle: TVMFFIObjectHandle = core::ptr::null_mut();
                // SAFETY: signature guaranteed by resolve's contract; `handle` is an out-pointer.
                unsafe { move_from_raised(&mut handle) };
                if handle.is_null() {
                    return no_message("no error was raised in tvm-ffi");
                }
                // SAFETY: a raised error is a live object we now own, starting with the header.
                let type_index = unsafe { (*handle.cast::<TVMFFIObject>()).type_index };
                let error = if type_index == super::abi::type_index::ERROR {
                    // SAFETY: an error object is the header followed by the error cell; its byte
                    // arrays are valid while we hold the reference, and we copy them out.
                    unsafe {
                        let cell = &*handle.cast::<u8>().add(OBJECT_CELL_OFFSET).cast::<TVMFFIErrorCell>();
                        KernelError::Raised {
                            function: self.function.clone(),
                            kind: lossy(&cell.kind),
                            message: lossy(&cell.message),
                            backtrace: lossy(&cell.backtrace),
                        }
                    }
                } else {
                    no_message("tvm-ffi raised an object that is not an error")
                };
                // SAFETY: releases the reference TVMFFIErrorMoveFromRaised moved to us.
                unsafe { dec_ref(handle) };
                error
            }
            ErrorChannel::None => no_message("the library exports no error channel"),
        }
    }
}

/// Copies a byte array into a `String`, replacing invalid UTF-8.
///
/// # Safety
/// `bytes` must be valid for reads (see [`TVMFFIByteArray::as_bytes`]).
unsafe fn lossy(bytes: &TVMFFIByteArray) -> String {
    // SAFETY: forwarded from the caller.
    String::from_utf8_lossy(unsafe { bytes.as_bytes() }).into_owned()
}

/// The sink handed to `__kernels_rs_take_error`.
unsafe extern "C" fn receive_rust_error(
    ctx: *mut c_void,
    kind: *const TVMFFIByteArray,
    message: *const TVMFFIByteArray,
) {
    // SAFETY: `ctx` is the `&mut Option<(String, String)>` `take_error` passed, alive during
    // the take call; the kernel passes valid byte arrays (or null, treated as empty).
    unsafe {
        let slot = &mut *ctx.cast::<Option<(String, String)>>();
        let read = |p: *const TVMFFIByteArray| if p.is_null() { String::new() } else { lossy(&*p) };
        *slot = Some((read(kind), read(message)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_functions_and_views_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<KernelFunction>();
        shared::<TensorView<'static>>();
        shared::<Arg<'static>>();
        shared::<Stream>();
    }

    #[test]
    fn arguments_convert_from_rust_values() {
        assert!(matches!(Arg::from(3i32), Arg::Int(3)));
        assert!(matches!(Arg::from(-3i64), Arg::Int(-3)));
        assert!(matches!(Arg::from(0.5f32), Arg::Float(v) if v == 0.5));
        assert!(matches!(Arg::from(true), Arg::Bool(true)));
        let data = [1f32; 2];
        let view = TensorView::from_slice(&data, &[2]).unwrap();
        assert!(matches!(Arg::from(&view), Arg::Tensor(t) if t.shape() == [2]));
    }
}
