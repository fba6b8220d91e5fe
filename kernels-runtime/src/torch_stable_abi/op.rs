//! Ops a stable-ABI library registered while it loaded, their schemas, and calling one through
//! the host's catching trampoline with tensors built over [`TensorView`]s.
//!
//! What a call can pass today: `Tensor`, `Tensor!`/`Tensor(a!)` (outputs the op writes, which
//! must be [writable](TensorView::is_writable) views),
//! `int`, `float`, `bool`, and `None` for optional (`T?`) parameters. An op that returns
//! tensors (`gelu_tanh(Tensor input) -> Tensor`) is called with its outputs first, as an op
//! that writes them would be (`(output, x)`): each returned tensor is copied into its output
//! (same dtype and shape) on the call's device and stream, then dropped. Ops that return other
//! values and other parameter types (`int[]`, `str`, `ScalarType`, …) are refused when the
//! function is resolved.

use std::ffi::c_char;
use std::fmt;

use super::host::{BoxedFn, HostApi, host_string};
use crate::ffi::{Arg, DLDataType, DLDeviceType, KernelError, MAX_ARGS, TensorView};

/// What kind of registration a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegistrationKind {
    /// `m.def(schema)`.
    Def,
    /// `m.impl(name, fn)`.
    Impl,
}

/// One registration a library made while it loaded.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) kind: RegistrationKind,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) schema: String,
    pub(crate) dispatch_key: String,
    pub(crate) function: Option<BoxedFn>,
}

/// Everything one library registered, and the problems the host met meanwhile.
#[derive(Debug, Clone, Default)]
pub(crate) struct StableAbiOps {
    registrations: Vec<Registration>,
    problems: Vec<String>,
}

/// The type of one schema parameter, as far as calls can pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamType {
    /// `Tensor`, or one the op writes (`Tensor!`, `Tensor(a!)`).
    Tensor {
        writes: bool,
    },
    Int,
    Float,
    Bool,
    /// `T?`: only `None` can be passed yet (a present value is a heap `StableIValue`).
    Optional,
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    text: String,
    ty: ParamType,
}

/// A schema's parameters (`name(Tensor! out, Tensor input) -> ()`) and how many tensors it
/// returns (`-> Tensor`, `-> (Tensor, Tensor)`).
#[derive(Debug, Clone)]
struct Schema {
    text: String,
    params: Vec<Param>,
    returns: usize,
}

/// Whether a schema type is a single tensor (`Tensor`, `Tensor(a)`, `Tensor(a!)`).
fn is_tensor(ty: &str) -> bool {
    ty == "Tensor" || (ty.starts_with("Tensor(") && ty.ends_with(')'))
}

/// Splits `s` at top-level commas (outside `()`/`[]`).
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

impl Schema {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("schema `{text}`: {why}");
        let open = text.find('(').ok_or_else(|| bad("no parameter list"))?;
        let arrow = text.rfind("->").ok_or_else(|| bad("no `->`"))?;
        let close = text[..arrow].rfind(')').filter(|&c| c > open).ok_or_else(|| bad("no closing `)`"))?;
        let returns_text = text[arrow + 2..].trim();
        let returns = if returns_text == "()" {
            0
        } else {
            let inner = returns_text.strip_prefix('(').and_then(|t| t.strip_suffix(')')).unwrap_or(returns_text);
            let types = split_top_level(inner);
            // A return may be named (`Tensor out`): its type is the first word.
            if types.is_empty() || !types.iter().all(|t| t.split_whitespace().next().is_some_and(is_tensor)) {
                return Err(format!(
                    "`{text}` returns `{returns_text}`; of ops that return values, this runtime calls those that \
                     return tensors (`Tensor` or a tuple of them)"
                ));
            }
            types.len()
        };
        let mut params = Vec::new();
        for part in split_top_level(&text[open + 1..close]) {
            if part == "*" {
                continue;
            }
            let decl = part.split_once('=').map_or(part, |(d, _)| d).trim();
            let (ty, name) = decl.rsplit_once(char::is_whitespace).ok_or_else(|| bad("a parameter has no name"))?;
            let ty = ty.trim();
            let kind = match ty {
                "Tensor" | "Tensor(a)" | "Tensor(b)" => ParamType::Tensor { writes: false },
                t if t.starts_with("Tensor") && (t.ends_with('!') || t.ends_with("!)")) => {
                    ParamType::Tensor { writes: true }
                }
                "int" | "SymInt" => ParamType::Int,
                "float" => ParamType::Float,
                "bool" => ParamType::Bool,
                t if t.ends_with('?') => ParamType::Optional,
                other => {
                    return Err(format!(
                        "`{text}`: parameter `{name}` has type `{other}`, which calls through this runtime cannot \
                         pass yet (Tensor, int, float, bool and None can be)"
                    ));
                }
            };
            params.push(Param { name: name.to_owned(), text: ty.to_owned(), ty: kind });
        }
        Ok(Schema { text: text.to_owned(), params, returns })
    }
}

impl StableAbiOps {
    pub(crate) fn new(registrations: Vec<Registration>, problems: Vec<String>) -> Self {
        Self { registrations, problems }
    }

    /// Op `name` of the library's namespace, implemented for `dispatch_key` (`CPU`, `CUDA`).
    pub(crate) fn resolve(&self, name: &str, dispatch_key: &str) -> Result<StableAbiOp, String> {
        let problems = if self.problems.is_empty() {
            String::new()
        } else {
            format!(" (the host reported while it loaded: {})", self.problems.join("; "))
        };
        let defs: Vec<&Registration> =
            self.registrations.iter().filter(|r| r.kind == RegistrationKind::Def && r.name == name).collect();
        let def = match defs.as_slice() {
            [def] => *def,
            [] => {
                let mut known: Vec<&str> = self
                    .registrations
                    .iter()
                    .filter(|r| r.kind == RegistrationKind::Def)
                    .map(|r| r.name.as_str())
                    .collect();
                known.sort_unstable();
                return Err(format!(
                    "the library registers no op `{name}`; its ops are [{}]{problems}",
                    known.join(", ")
                ));
            }
            _ => return Err(format!("the library registers op `{name}` in more than one namespace{problems}")),
        };
        let imp = self.registrations.iter().find(|r| {
            r.kind == RegistrationKind::Impl
                && r.namespace == def.namespace
                && r.name == name
                && r.dispatch_key == dispatch_key
        });
        let Some(function) = imp.and_then(|r| r.function) else {
            let mut keys: Vec<&str> = self
                .registrations
                .iter()
                .filter(|r| r.kind == RegistrationKind::Impl && r.namespace == def.namespace && r.name == name)
                .map(|r| r.dispatch_key.as_str())
                .collect();
            keys.sort_unstable();
            return Err(format!(
                "op `{}::{name}` has no implementation for dispatch key `{dispatch_key}` (it has [{}]){problems}",
                def.namespace,
                keys.join(", ")
            ));
        };
        let schema = Schema::parse(&def.schema)?;
        if schema.params.len() + schema.returns > MAX_ARGS {
            return Err(format!("`{}` takes more than {MAX_ARGS} arguments and outputs", def.schema));
        }
        Ok(StableAbiOp { qualified: format!("{}::{name}", def.namespace), schema, function })
    }
}

/// A registered op, resolved: its schema and boxed function.
#[derive(Clone)]
pub(crate) struct StableAbiOp {
    qualified: String,
    schema: Schema,
    function: BoxedFn,
}

impl fmt::Debug for StableAbiOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StableAbiOp").field("op", &self.qualified).field("schema", &self.schema.text).finish()
    }
}

/// The host's code for a dtype (torch's `ScalarType` numbering).
fn torch_dtype(dtype: DLDataType) -> Option<i32> {
    Some(match dtype {
        DLDataType::U8 => 0,
        DLDataType::I8 => 1,
        DLDataType::I16 => 2,
        DLDataType::I32 => 3,
        DLDataType::I64 => 4,
        DLDataType::F16 => 5,
        DLDataType::F32 => 6,
        DLDataType::F64 => 7,
        DLDataType::BOOL => 11,
        DLDataType::BF16 => 15,
        DLDataType::U16 => 27,
        DLDataType::U32 => 28,
        DLDataType::U64 => 29,
        _ => return None,
    })
}

/// The host's (device type, index) for a DLPack device (torch's `DeviceType` numbering).
fn torch_device(device: crate::ffi::DLDevice) -> Option<(i32, i32)> {
    match device.device_type {
        DLDeviceType::CPU => Some((0, -1)),
        // PyTorch reports ROCm devices as CUDA devices.
        DLDeviceType::CUDA | DLDeviceType::ROCM => Some((1, device.device_id)),
        _ => None,
    }
}

/// Tensor handles made for one call; those the op did not take are freed on drop.
struct Handles<'h> {
    api: &'h HostApi,
    handles: [*mut core::ffi::c_void; MAX_ARGS],
}

impl Drop for Handles<'_> {
    fn drop(&mut self) {
        for handle in self.handles.iter().filter(|h| !h.is_null()) {
            // SAFETY: each non-null entry is a handle this call made and still owns.
            unsafe { (self.api.delete_tensor)(*handle) };
        }
    }
}

fn describe(arg: &Arg<'_>) -> &'static str {
    match arg {
        Arg::Tensor(view) if !view.is_writable() => "a read-only tensor",
        Arg::Tensor(_) => "a tensor",
        Arg::Int(_) => "an int",
        Arg::Float(_) => "a float",
        Arg::Bool(_) => "a bool",
        Arg::None => "None",
    }
}

impl StableAbiOp {
    /// `namespace::name`.
    pub(crate) fn qualified_name(&self) -> &str {
        &self.qualified
    }

    /// Checks `args` against the schema, builds the boxed stack (tensor handles over the views)
    /// and calls the op through the host's trampoline.
    ///
    /// # Safety
    /// As for [`KernelFunction::call`](crate::ffi::KernelFunction::call): every view must be
    /// valid for the accesses the op makes, outputs writable and not otherwise accessed.
    ///
    /// A call on CUDA tensors runs with the first tensor's device as the CUDA runtime's current
    /// device and `stream` (the default stream when `None`) as that device's current stream,
    /// which is where stable-ABI kernels launch (`aoti_torch_get_current_cuda_stream`).
    pub(crate) unsafe fn call(
        &self,
        function: &str,
        args: &[Arg<'_>],
        stream: Option<crate::ffi::Stream>,
    ) -> Result<(), KernelError> {
        let signature = |message: String| KernelError::Signature { function: function.to_owned(), message };
        let params = &self.schema.params;
        let returns = self.schema.returns;
        if args.len() != params.len() + returns {
            return Err(signature(if returns == 0 {
                format!("`{}` takes {} arguments, the call passes {}", self.schema.text, params.len(), args.len())
            } else {
                format!(
                    "`{}` returns {returns} tensor(s): the call passes as many outputs first, which the results \
                     are copied into, then the op's {} arguments; it passes {} in all",
                    self.schema.text,
                    params.len(),
                    args.len()
                )
            }));
        }
        let api = super::host::host().map_err(&signature)?;
        let (outputs, inputs) = args.split_at(returns);
        // The outputs that returned tensors are copied into: handles this call keeps.
        let mut outs = Handles { api, handles: [core::ptr::null_mut(); MAX_ARGS] };
        for (i, arg) in outputs.iter().enumerate() {
            match arg {
                Arg::Tensor(view) if view.is_writable() => {
                    outs.handles[i] = tensor_handle(api, view).map_err(|why| {
                        signature(format!("output {} of `{}` must be {why}", i + 1, self.schema.text))
                    })?;
                }
                other => {
                    return Err(signature(format!(
                        "argument {} of the call must be a writable tensor, the output that result {} of `{}` is \
                         copied into; the call passes {}",
                        i + 1,
                        i + 1,
                        self.schema.text,
                        describe(other)
                    )));
                }
            }
        }
        let mut stack = [0u64; MAX_ARGS];
        let mut handles = Handles { api, handles: [core::ptr::null_mut(); MAX_ARGS] };
        for (i, (param, arg)) in params.iter().zip(inputs).enumerate() {
            let mismatch = |expected: &str| {
                signature(format!(
                    "argument {} (`{}`: `{}`) of `{}` must be {expected}, the call passes {}",
                    returns + i + 1,
                    param.name,
                    param.text,
                    self.schema.text,
                    describe(arg)
                ))
            };
            stack[i] = match (param.ty, arg) {
                (ParamType::Tensor { writes: true }, Arg::Tensor(view)) if !view.is_writable() => {
                    return Err(mismatch("a writable tensor (the op writes it)"));
                }
                (ParamType::Tensor { .. }, Arg::Tensor(view)) => {
                    let handle = tensor_handle(api, view).map_err(|why| mismatch(&why))?;
                    handles.handles[i] = handle;
                    handle as u64
                }
                (ParamType::Tensor { .. }, _) => return Err(mismatch("a tensor")),
                (ParamType::Int, Arg::Int(v)) => *v as u64,
                (ParamType::Int, _) => return Err(mismatch("an int")),
                (ParamType::Float, Arg::Float(v)) => v.to_bits(),
                (ParamType::Float, _) => return Err(mismatch("a float")),
                (ParamType::Bool, Arg::Bool(v)) => u64::from(*v),
                (ParamType::Bool, _) => return Err(mismatch("a bool")),
                (ParamType::Optional, Arg::None) => 0,
                (ParamType::Optional, _) => return Err(mismatch("None (optional values are not passed yet)")),
            };
        }
        // The device of the call: the first tensor's (the op checks the others against it).
        let (device_type, device_index) = args
            .iter()
            .find_map(|a| match a {
                Arg::Tensor(view) => torch_device(view.device()),
                _ => None,
            })
            .unwrap_or((0, -1));
        let stream = match stream {
            Some(s) if torch_device(s.device()) == Some((device_type, device_index)) => s.handle(),
            Some(s) if !s.handle().is_null() => {
                return Err(signature(format!(
                    "the call's stream belongs to {}, its first tensor to another device",
                    s.device()
                )));
            }
            _ => core::ptr::null_mut(),
        };
        let mut err = [0 as c_char; 1024];
        let n = params.len() as u64;
        let num_outputs = returns as u64;
        // SAFETY: the stack holds MAX_ARGS >= max(num_args, num_outputs) slots, the arguments in
        // schema order, each of the type its parameter declares (checked above); the boxed
        // function is the op's registered implementation, called through the host's try/catch;
        // `err` is writable.
        let rc = unsafe {
            (api.call)(
                self.function,
                stack.as_mut_ptr(),
                n,
                num_outputs,
                device_type,
                device_index,
                stream.cast(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        // The op took every handle: its boxed wrapper converts each argument into an owning
        // tensor before the kernel's body runs (and frees it on success or exception).
        handles.handles = [core::ptr::null_mut(); MAX_ARGS];
        if rc != 0 {
            return Err(KernelError::Raised {
                function: function.to_owned(),
                kind: "RuntimeError".to_owned(),
                message: host_string(err.as_ptr()),
                backtrace: String::new(),
            });
        }
        // Each returned tensor (a new reference in slots 0..returns) is copied into its output,
        // on the call's device and stream, and dropped; every one is dropped even after a failure.
        let mut failure = None;
        for (i, slot) in stack.iter().take(returns).enumerate() {
            let returned = *slot as usize as *mut core::ffi::c_void;
            if returned.is_null() {
                failure.get_or_insert_with(|| format!("result {} of `{}` is no tensor", i + 1, self.schema.text));
                continue;
            }
            // SAFETY: `outs.handles[i]` is a live handle over the i-th output and `returned` the
            // op's new reference, which the host drops; `err` is writable.
            let rc = unsafe {
                (api.copy_returned)(
                    outs.handles[i],
                    returned,
                    device_type,
                    device_index,
                    stream.cast(),
                    err.as_mut_ptr(),
                    err.len(),
                )
            };
            if rc != 0 {
                failure.get_or_insert_with(|| format!("result {}: {}", i + 1, host_string(err.as_ptr())));
            }
        }
        match failure {
            Some(message) => Err(signature(message)),
            None => Ok(()),
        }
    }
}

/// A host tensor handle over `view` (borrowed storage, never freed by the host).
fn tensor_handle(api: &HostApi, view: &TensorView<'_>) -> Result<*mut core::ffi::c_void, String> {
    let dtype = view.dtype();
    let code = torch_dtype(dtype).ok_or_else(|| format!("a tensor of a torch dtype (not {dtype:?})"))?;
    let (device_type, device_index) =
        torch_device(view.device()).ok_or_else(|| format!("a CPU or CUDA tensor (not {:?})", view.device()))?;
    let offset = usize::try_from(view.byte_offset()).map_err(|_| "a tensor with an addressable offset".to_owned())?;
    let data = view.data_ptr().cast::<u8>().wrapping_add(offset).cast::<core::ffi::c_void>();
    let mut handle = core::ptr::null_mut();
    // SAFETY: `shape` and `strides` hold `ndim` entries each and outlive the call, which copies
    // them; `data` is the first element of the view's memory; `handle` is an out pointer.
    let rc = unsafe {
        (api.tensor_new)(
            data,
            view.shape().len() as i64,
            view.shape().as_ptr(),
            view.strides().as_ptr(),
            0,
            code,
            device_type,
            device_index,
            &mut handle,
        )
    };
    if rc != 0 || handle.is_null() {
        // SAFETY: the host returns its thread-local NUL-terminated message.
        return Err(format!("a tensor the host accepts ({})", host_string(unsafe { (api.last_error)() })));
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_of_in_place_ops_parse() {
        let s = Schema::parse("silu_and_mul(Tensor! out, Tensor input) -> ()").unwrap();
        let types: Vec<_> = s.params.iter().map(|p| (p.name.as_str(), p.ty)).collect();
        assert_eq!(
            types,
            [("out", ParamType::Tensor { writes: true }), ("input", ParamType::Tensor { writes: false })]
        );
        let s = Schema::parse("f(Tensor(a!) out, int n, float eps=1e-6, *, bool flag=False, Tensor? w=None) -> ()")
            .unwrap();
        let types: Vec<_> = s.params.iter().map(|p| p.ty).collect();
        assert_eq!(
            types,
            [
                ParamType::Tensor { writes: true },
                ParamType::Int,
                ParamType::Float,
                ParamType::Bool,
                ParamType::Optional
            ]
        );
    }

    #[test]
    fn returning_ops_and_other_types_are_refused_with_reasons() {
        assert_eq!(Schema::parse("gelu_tanh(Tensor input) -> Tensor").unwrap().returns, 1);
        assert_eq!(Schema::parse("f(Tensor(a!) x) -> Tensor(a!)").unwrap().returns, 1);
        assert_eq!(Schema::parse("f(Tensor x) -> (Tensor, Tensor values)").unwrap().returns, 2);
        for bad in ["f(Tensor x) -> int", "f(Tensor x) -> Tensor[]", "f(Tensor x) -> (Tensor, int)", "f() -> Tensor?"] {
            let err = Schema::parse(bad).unwrap_err();
            assert!(err.contains("this runtime calls those that return tensors"), "{bad}: {err}");
        }
        let err = Schema::parse("f(Tensor! out, int[] dims) -> ()").unwrap_err();
        assert!(err.contains("parameter `dims` has type `int[]`"), "{err}");
        assert!(Schema::parse("garbage").is_err());
    }

    #[test]
    fn resolution_names_what_is_missing() {
        let reg = |kind, name: &str, key: &str| Registration {
            kind,
            namespace: "ns".into(),
            name: name.into(),
            schema: if kind == RegistrationKind::Def { format!("{name}(Tensor! out) -> ()") } else { String::new() },
            dispatch_key: key.into(),
            function: None,
        };
        let ops = StableAbiOps::new(
            vec![reg(RegistrationKind::Def, "a", ""), reg(RegistrationKind::Impl, "a", "CUDA")],
            vec![],
        );
        let err = ops.resolve("b", "CPU").unwrap_err();
        assert!(err.contains("registers no op `b`; its ops are [a]"), "{err}");
        let err = ops.resolve("a", "CPU").unwrap_err();
        assert!(err.contains("no implementation for dispatch key `CPU` (it has [CUDA])"), "{err}");
    }
}
