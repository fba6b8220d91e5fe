//! One kernel call on existing candle tensors: [`call`], [`with_args`] and their arguments.

use core::fmt;

use candle_core::Tensor;

use crate::ffi::{Arg, KernelFunction, MAX_ARGS, Stream, TensorView, Value};

use super::CandleError;
use super::lock::{LockCtx, Locked, Plan, lock_from, view_of};

/// A tensor argument of a call on candle tensors, by role.
#[derive(Clone, Copy)]
pub enum CandleTensor<'a> {
    /// Read; must be contiguous (any storage offset).
    Input(&'a Tensor),
    /// Read with candle's strides as they are, for kernels that accept strided tensors.
    StridedInput(&'a Tensor),
    /// Written in place; must be contiguous. Its storage is write-locked during the call.
    Output(&'a Tensor),
}

impl<'a> CandleTensor<'a> {
    /// The tensor.
    pub fn tensor(&self) -> &'a Tensor {
        match *self {
            CandleTensor::Input(t) | CandleTensor::StridedInput(t) | CandleTensor::Output(t) => t,
        }
    }

    pub(super) fn writes(&self) -> bool {
        matches!(self, CandleTensor::Output(_))
    }

    pub(super) fn strided(&self) -> bool {
        matches!(self, CandleTensor::StridedInput(_))
    }
}

impl fmt::Debug for CandleTensor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self {
            CandleTensor::Input(_) => "Input",
            CandleTensor::StridedInput(_) => "StridedInput",
            CandleTensor::Output(_) => "Output",
        };
        let t = self.tensor();
        f.debug_struct(role)
            .field("dtype", &t.dtype())
            .field("shape", &t.dims())
            .field("device", &t.device().location())
            .finish()
    }
}

/// One argument of a kernel call on candle tensors: a [`CandleTensor`] or a scalar (with the
/// ABI's scalar conversions: `2i64.into()`, `0.5f32.into()`, `true.into()`).
pub type CandleArg<'a> = Value<CandleTensor<'a>>;

impl<'a> Value<CandleTensor<'a>> {
    /// A tensor the kernel reads ([`CandleTensor::Input`]).
    pub fn input(tensor: &'a Tensor) -> Self {
        Value::Tensor(CandleTensor::Input(tensor))
    }

    /// A tensor the kernel reads with its strides ([`CandleTensor::StridedInput`]).
    pub fn strided_input(tensor: &'a Tensor) -> Self {
        Value::Tensor(CandleTensor::StridedInput(tensor))
    }

    /// A tensor the kernel writes in place ([`CandleTensor::Output`]).
    pub fn output(tensor: &'a Tensor) -> Self {
        Value::Tensor(CandleTensor::Output(tensor))
    }
}

/// Calls `function` with `args`: locks the tensors' storage ([`with_args`]) and runs the kernel
/// on the tensors' device, on candle's stream for CUDA tensors (see
/// [`KernelFunction::call_on_stream`] for kernels that cannot be given one).
///
/// # Safety
/// The kernel's contract must hold for these arguments: it reads only the elements the views
/// describe, writes only tensors passed as outputs, and takes the arguments in this order and
/// of these kinds (see [`KernelFunction::call`]). An output allocated uninitialised
/// (`Tensor::empty`) must be written in full by the kernel.
pub unsafe fn call(function: &KernelFunction, args: &[CandleArg<'_>]) -> Result<(), CandleError> {
    // SAFETY: the caller guarantees the kernel's contract; `stream` is candle's stream of the
    // tensors' device, alive while the storages are locked.
    with_args(args, |args, stream| unsafe { function.call_with_stream(stream, args) })?.map_err(CandleError::from)
}

/// Locks the storage of every tensor in `args`, builds the kernel arguments (a [`TensorView`]
/// per tensor, scalars as they are) and runs `body` with them and, for CUDA tensors, candle's
/// stream of their device (`None` on the CPU). The locks are held until `body` returns.
///
/// Fails before `body` runs when a tensor cannot be passed: dtype, layout, device (see the
/// [module docs](super)).
pub fn with_args<R>(
    args: &[CandleArg<'_>],
    body: impl FnOnce(&[Arg<'_>], Option<Stream>) -> R,
) -> Result<R, CandleError> {
    if args.len() > MAX_ARGS {
        return Err(CandleError::TooManyArgs { given: args.len() });
    }
    let plan = Plan::new(args)?;
    // The caller's CUDA context, made current again once the locks are released (candle binds
    // the tensors' to wait and record); declared first, so dropped last.
    #[cfg(feature = "candle-cuda")]
    let _context =
        if plan.device.device_type == crate::ffi::DLDeviceType::CUDA { super::cuda::keep_context() } else { None };
    let ctx = LockCtx::new(&plan);
    let mut body = Some(body);
    let mut output = None;
    let mut locked = [Locked::EMPTY; MAX_ARGS];
    lock_from(&plan, &ctx, 0, &mut locked, &mut |locked| {
        let mut views = [None::<TensorView<'_>>; MAX_ARGS];
        for (i, arg) in args.iter().enumerate() {
            let Value::Tensor(arg) = arg else { continue };
            let locked = &locked[plan.storage_of[i]];
            views[i] = Some(view_of(plan.device, Some(i), arg.tensor().layout(), arg.strided(), locked)?);
        }
        let mut call_args = [Arg::None; MAX_ARGS];
        for ((slot, arg), view) in call_args.iter_mut().zip(args).zip(&views) {
            *slot = match (arg, view) {
                (_, Some(view)) => Value::Tensor(view),
                (Value::Int(v), None) => Value::Int(*v),
                (Value::Float(v), None) => Value::Float(*v),
                (Value::Bool(v), None) => Value::Bool(*v),
                (Value::Tensor(_) | Value::None, None) => Value::None,
            };
        }
        if let Some(body) = body.take() {
            output = Some(body(&call_args[..args.len()], ctx.stream(plan.device)));
        }
        Ok(())
    })?;
    Ok(output.expect("lock_from runs the body exactly once when it succeeds"))
}
