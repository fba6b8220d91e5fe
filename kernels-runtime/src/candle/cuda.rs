//! CUDA storage: device pointers on candle's stream, with cudarc's event guards held for
//! the call, and a kernel's write recorded on that stream.

use core::ffi::c_void;

use candle_core::CudaStorage;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaStorageSlice;
pub(super) use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut, SyncOnDrop, result as cudarc_result, sys};

use super::CandleError;
use super::lock::Locked;

fn address(ptr: u64) -> *mut c_void {
    core::ptr::without_provenance_mut(ptr as usize)
}

/// The stream of the call, or an error if there is none (no CUDA tensor seen).
pub(super) fn expect(stream: Option<&CudaStream>) -> Result<&CudaStream, CandleError> {
    stream.ok_or_else(|| CandleError::Candle(candle_core::Error::Msg("a CUDA tensor without its stream".into())))
}

/// Runs `then` with the base of `storage`, read on `stream`: `stream` first waits for the
/// slice's pending writes, and the read is recorded on `stream` when `then` has returned
/// (after the kernel was enqueued).
pub(super) fn read<R>(
    storage: &CudaStorage,
    stream: &CudaStream,
    then: impl FnOnce(Locked) -> Result<R, CandleError>,
) -> Result<R, CandleError> {
    let (locked, _record_on_drop) = read_held(storage, stream);
    then(locked)
}

/// The base of `storage`, read on `stream`: `stream` waits for the slice's pending writes
/// now, and the returned guard records the read on `stream` when dropped (after the kernel was
/// enqueued). One wait and one record per tensor and call, as candle's own ops make.
#[inline]
pub(super) fn read_held<'s>(storage: &'s CudaStorage, stream: &'s CudaStream) -> (Locked, SyncOnDrop<'s>) {
    let dtype = storage.dtype();
    macro_rules! read {
        ($($variant:ident),*) => {
            match &storage.slice {
                $(CudaStorageSlice::$variant(slice) => {
                    let (ptr, record) = slice.device_ptr(stream);
                    (Locked { base: address(ptr), len: slice.len(), dtype }, record)
                })*
            }
        };
    }
    read!(U8, U32, I16, I32, I64, BF16, F16, F32, F64, F8E4M3, F6E2M3, F6E3M2, F4, F8E8M0)
}

/// The base of `storage`, about to be written on `stream`: `stream` waits for the slice's
/// pending reads and writes now; nothing is recorded, since the write has not been enqueued
/// yet: the caller records it afterwards (`CandleOutput::into_tensor`, through [`write`]).
pub(super) fn write_unrecorded(storage: &mut CudaStorage, stream: &CudaStream) -> Locked {
    write_base(storage, stream).0
}

/// The base of `storage` for a write on `stream` (which waits for the slice's pending reads
/// and writes now), and the handle of the slice's write event, which nothing records yet.
#[inline]
fn write_base(storage: &mut CudaStorage, stream: &CudaStream) -> (Locked, Option<sys::CUevent>) {
    let dtype = storage.dtype();
    macro_rules! write {
        ($($variant:ident),*) => {
            match &mut storage.slice {
                $(CudaStorageSlice::$variant(slice) => {
                    let len = slice.len();
                    let (ptr, record) = slice.device_ptr_mut(stream);
                    let event = match &record {
                        // Only the handle is copied: the event lives as long as the slice.
                        SyncOnDrop::Record(Some((event, _))) => Some(event.cu_event()),
                        _ => None,
                    };
                    // The guard only refers to the slice's event and the stream: forgetting it
                    // skips its record and leaks nothing.
                    core::mem::forget(record);
                    (Locked { base: address(ptr), len, dtype }, event)
                })*
            }
        };
    }
    write!(U8, U32, I16, I32, I64, BF16, F16, F32, F64, F8E4M3, F6E2M3, F6E3M2, F4, F8E8M0)
}

/// A kernel's write of a fresh output, enqueued on a stream but not yet recorded: dropping it
/// records the write in the slice's write event (as cudarc's own guard would), so that later
/// users on other streams wait for the kernel. It holds the event by its handle, not by a
/// reference into the storage: the owner keeps the slice (and so the event) alive.
pub(super) struct PendingWrite {
    stream: std::sync::Arc<CudaStream>,
    event: Option<sys::CUevent>,
}

impl PendingWrite {
    /// The stream the write is recorded on.
    pub(super) fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        record_write(&self.stream, self.event);
    }
}

/// Records a slice's write `event` (from [`write_base`]) on `stream`, as cudarc's own guard
/// would: only while the context tracks work across streams. The caller keeps the slice, and
/// so the event, alive.
fn record_write(stream: &CudaStream, event: Option<sys::CUevent>) {
    let Some(event) = event else { return };
    let ctx = stream.context();
    if !ctx.is_managing_stream_synchronization() {
        return;
    }
    if ctx.bind_to_thread().is_ok() {
        // SAFETY: the event is the write event of a live slice (the caller keeps it), made in
        // the stream's context; recording it has no other effect.
        let _ = unsafe { cudarc_result::event::record(event, stream.cu_stream()) };
    }
}

/// The base of a fresh output `storage`, about to be written on `stream`: `stream` waits for
/// the slice's pending work now (none, for a fresh allocation), and the returned
/// [`PendingWrite`] records the write when dropped, after the kernel was enqueued. The caller
/// keeps the storage alive at least as long as the `PendingWrite`.
#[inline]
pub(super) fn write_pending(storage: &mut CudaStorage, stream: std::sync::Arc<CudaStream>) -> (Locked, PendingWrite) {
    let (locked, event) = write_base(storage, &stream);
    (locked, PendingWrite { stream, event })
}

/// Runs `then` with the base of `storage`, written on `stream`: `stream` first waits for
/// the slice's pending reads and writes, and the write is recorded on `stream` when `then`
/// has returned (after the kernel was enqueued).
pub(super) fn write<R>(
    storage: &mut CudaStorage,
    stream: &CudaStream,
    then: impl FnOnce(Locked) -> Result<R, CandleError>,
) -> Result<R, CandleError> {
    let (locked, event) = write_base(storage, stream);
    let result = then(locked);
    record_write(stream, event);
    result
}

/// The CUDA context that was current on the thread when a kernelized call began, made current
/// again once the call's last CUDA value is let go. Candle binds a tensor's context to allocate,
/// wait on events and record them, and a kernel may make its device current: without this, the
/// code after the call (the CUDA runtime API, another library's kernels) would run on whichever
/// device the call's tensors live on. All keepers alive at once on a thread (the values of one
/// call) share the context noted by the first; the last one dropped restores it.
pub(super) struct KeepContext {
    /// Bound to the thread whose count it holds (`!Send`).
    _thread: core::marker::PhantomData<*const ()>,
}

/// The keepers alive on this thread, and the context the first of them found current (null:
/// none).
struct CallContext {
    keepers: core::cell::Cell<usize>,
    found: core::cell::Cell<sys::CUcontext>,
}

thread_local! {
    static CALL_CONTEXT: CallContext = const {
        CallContext { keepers: core::cell::Cell::new(0), found: core::cell::Cell::new(core::ptr::null_mut()) }
    };
}

/// A keeper of the caller's context for a call on this thread: the first alive notes the
/// current context now, the others share it. Make one before anything binds a context for
/// the call. `None` if the driver cannot say which context is current (then nothing is
/// restored). It allocates nothing.
pub(super) fn keep_context() -> Option<KeepContext> {
    CALL_CONTEXT.with(|call| {
        let keepers = call.keepers.get();
        if keepers == 0 {
            call.found.set(cudarc_result::ctx::get_current().ok()?.unwrap_or(core::ptr::null_mut()));
        }
        call.keepers.set(keepers + 1);
        Some(KeepContext { _thread: core::marker::PhantomData })
    })
}

impl Drop for KeepContext {
    fn drop(&mut self) {
        // `try_with`: a keeper dropped while the thread's locals are torn down restores nothing.
        let _ = CALL_CONTEXT.try_with(|call| {
            let keepers = call.keepers.get().saturating_sub(1);
            call.keepers.set(keepers);
            if keepers > 0 {
                return;
            }
            let found = call.found.get();
            let now = cudarc_result::ctx::get_current().ok().flatten().unwrap_or(core::ptr::null_mut());
            if now != found {
                // SAFETY: the context was current on this thread when the call began, and the
                // call's values (which keep their contexts' devices in use) are gone; setting a
                // null context only unbinds the thread. An error leaves the thread as it is.
                let _ = unsafe { cudarc_result::ctx::set_current(found) };
            }
        });
    }
}
