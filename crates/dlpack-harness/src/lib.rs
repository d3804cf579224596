//! C entry points for `tests/python/test_dlpack.py`, which loads this library with ctypes and
//! hands buffers to NumPy (and takes NumPy arrays back) through DLPack: a real consumer and a
//! real producer on the other side of the ABI.
//!
//! - `dlh_manager_new` / `dlh_manager_free`, `dlh_live_buffers`: a cpu manager and its count of
//!   live buffers.
//! - `dlh_export`: a buffer of known values exported as a versioned or legacy tensor, whose
//!   deleter is wrapped to count its runs (`dlh_deleter_runs`).
//! - `dlh_call_deleter_versioned` / `dlh_call_deleter_legacy`: what a capsule destructor calls
//!   for a tensor nobody consumed.
//! - `dlh_import`, `dlh_imported_len`, `dlh_imported_values`, `dlh_imported_scale`,
//!   `dlh_imported_free`: a producer's tensor wrapped as a buffer, read, written and dropped.
//!
//! Element types are named as in Rust (`"f32"`, `"i64"`, `"u8"`, ...); errors are written, as
//! text, into the caller's buffer.

use dotcompute_memory::{
    Access, DLManagedTensor, DLManagedTensorVersioned, Element, ManagerOptions, MemoryManager, UnifiedBuffer,
};
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};

/// Export deleters run so far, in this process.
static DELETER_RUNS: AtomicU64 = AtomicU64::new(0);

/// Writes `message` into the caller's `len`-byte buffer `out`, NUL-terminated and cut to fit.
fn report(out: *mut c_char, len: usize, message: &str) {
    if out.is_null() || len == 0 {
        return;
    }
    let n = message.len().min(len - 1);
    // SAFETY: the caller passes `out` valid for writes of `len` bytes (every entry point's
    // contract), and `n + 1 <= len`.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), out.cast::<u8>(), n);
        *out.add(n) = 0;
    }
}

/// A manager on the cpu backend without the maintenance thread; free it with
/// [`dlh_manager_free`].
#[no_mangle]
pub extern "C" fn dlh_manager_new() -> *mut MemoryManager {
    let options = ManagerOptions::default().with_maintenance_interval(None);
    match MemoryManager::with_backend(dotcompute_memory::CpuBackend::new(), options) {
        Ok(mm) => Box::into_raw(Box::new(mm)),
        Err(_) => std::ptr::null_mut(),
    }
}

/// Frees a manager from [`dlh_manager_new`] (buffers it made stay valid).
///
/// # Safety
///
/// `mm` is null or from `dlh_manager_new`, freed once.
#[no_mangle]
pub unsafe extern "C" fn dlh_manager_free(mm: *mut MemoryManager) {
    if !mm.is_null() {
        // SAFETY: the contract.
        drop(unsafe { Box::from_raw(mm) });
    }
}

/// Buffers of `mm` alive now (exported ones included, until their deleter runs).
///
/// # Safety
///
/// `mm` is a live manager from `dlh_manager_new`.
#[no_mangle]
pub unsafe extern "C" fn dlh_live_buffers(mm: *const MemoryManager) -> u64 {
    // SAFETY: the contract.
    unsafe { &*mm }.diagnostics().live_count()
}

/// Export deleters run so far.
#[no_mangle]
pub extern "C" fn dlh_deleter_runs() -> u64 {
    DELETER_RUNS.load(Ordering::SeqCst)
}

/// The context and deleter a counting deleter stands in for.
struct Wrapped<M> {
    ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut M)>,
}

/// Counts a run, puts the library's own context and deleter back, and calls it.
unsafe extern "C" fn counting_versioned(managed: *mut DLManagedTensorVersioned) {
    // SAFETY: set up by `count_deletions_versioned`: the context is the boxed `Wrapped`, and the
    // deleter runs once.
    unsafe {
        let wrapped = Box::from_raw((*managed).manager_ctx.cast::<Wrapped<DLManagedTensorVersioned>>());
        (*managed).manager_ctx = wrapped.ctx;
        (*managed).deleter = wrapped.deleter;
        DELETER_RUNS.fetch_add(1, Ordering::SeqCst);
        if let Some(deleter) = wrapped.deleter {
            deleter(managed);
        }
    }
}

/// As [`counting_versioned`], for a legacy tensor.
unsafe extern "C" fn counting_legacy(managed: *mut DLManagedTensor) {
    // SAFETY: as in `counting_versioned`.
    unsafe {
        let wrapped = Box::from_raw((*managed).manager_ctx.cast::<Wrapped<DLManagedTensor>>());
        (*managed).manager_ctx = wrapped.ctx;
        (*managed).deleter = wrapped.deleter;
        DELETER_RUNS.fetch_add(1, Ordering::SeqCst);
        if let Some(deleter) = wrapped.deleter {
            deleter(managed);
        }
    }
}

/// An exported buffer of `len` values `start + i * step` (converted with `as`), handed over.
fn export<T: Number>(
    mm: &MemoryManager,
    len: usize,
    start: f64,
    step: f64,
    access: Access,
    versioned: bool,
) -> Result<*mut c_void, String> {
    let values: Vec<T> = (0..len).map(|i| T::from_f64(start + i as f64 * step)).collect();
    let buf = mm.allocate_from(&values).map_err(|e| e.to_string())?;
    if versioned {
        let raw = buf.to_dlpack(access, None).map_err(|e| e.to_string())?.into_raw();
        // SAFETY: a live export just handed over to us; its deleter is swapped for one that
        // counts and then calls it.
        unsafe {
            let wrapped = Wrapped { ctx: (*raw).manager_ctx, deleter: (*raw).deleter };
            (*raw).manager_ctx = Box::into_raw(Box::new(wrapped)).cast();
            (*raw).deleter = Some(counting_versioned);
        }
        Ok(raw.cast())
    } else {
        let raw = buf.to_dlpack_legacy(access, None).map_err(|e| e.to_string())?.into_raw();
        // SAFETY: as above.
        unsafe {
            let wrapped = Wrapped { ctx: (*raw).manager_ctx, deleter: (*raw).deleter };
            (*raw).manager_ctx = Box::into_raw(Box::new(wrapped)).cast();
            (*raw).deleter = Some(counting_legacy);
        }
        Ok(raw.cast())
    }
}

/// Calls `$body` with `T` bound to the element type named `$name`, or evaluates to an error.
macro_rules! with_type {
    ($name:expr, $T:ident => $body:expr) => {
        match $name {
            "f32" => {
                type $T = f32;
                $body
            }
            "f64" => {
                type $T = f64;
                $body
            }
            "i8" => {
                type $T = i8;
                $body
            }
            "i16" => {
                type $T = i16;
                $body
            }
            "i32" => {
                type $T = i32;
                $body
            }
            "i64" => {
                type $T = i64;
                $body
            }
            "u8" => {
                type $T = u8;
                $body
            }
            "u16" => {
                type $T = u16;
                $body
            }
            "u32" => {
                type $T = u32;
                $body
            }
            "u64" => {
                type $T = u64;
                $body
            }
            other => Err(format!("unknown element type {other:?}: use f32, f64, i8..i64 or u8..u64")),
        }
    };
}

/// The element type named by the C string `dtype`.
///
/// # Safety
///
/// `dtype` is a NUL-terminated string.
unsafe fn type_name<'a>(dtype: *const c_char) -> Result<&'a str, String> {
    // SAFETY: the contract.
    unsafe { CStr::from_ptr(dtype) }.to_str().map_err(|e| format!("element type name is not UTF-8: {e}"))
}

/// Exports a buffer of `mm` holding `len` values `start + i * step` of element type `dtype`, with
/// `access` 0 (Read), 1 (ReadWrite) or 2 (Overwrite), as a `DLManagedTensorVersioned*`
/// (`versioned` != 0) or a `DLManagedTensor*`. The caller owns the tensor: it must call its
/// deleter once. Null on error, with the message in `err`.
///
/// # Safety
///
/// `mm` is a live manager from `dlh_manager_new`, `dtype` a NUL-terminated string, `err` valid
/// for writes of `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn dlh_export(
    mm: *const MemoryManager,
    dtype: *const c_char,
    len: usize,
    start: f64,
    step: f64,
    access: i32,
    versioned: i32,
    err: *mut c_char,
    err_len: usize,
) -> *mut c_void {
    // SAFETY: the contract.
    let mm = unsafe { &*mm };
    let access = match access {
        0 => Access::Read,
        1 => Access::ReadWrite,
        2 => Access::Overwrite,
        other => {
            report(err, err_len, &format!("access {other} is not 0 (Read), 1 (ReadWrite) or 2 (Overwrite)"));
            return std::ptr::null_mut();
        }
    };
    // SAFETY: the contract.
    let result = unsafe { type_name(dtype) }
        .and_then(|name| with_type!(name, T => export::<T>(mm, len, start, step, access, versioned != 0)));
    result.unwrap_or_else(|message| {
        report(err, err_len, &message);
        std::ptr::null_mut()
    })
}

/// Runs the deleter of a versioned tensor nobody consumed (what a capsule destructor does).
///
/// # Safety
///
/// `managed` is a live `DLManagedTensorVersioned*` whose deleter has not run.
#[no_mangle]
pub unsafe extern "C" fn dlh_call_deleter_versioned(managed: *mut DLManagedTensorVersioned) {
    // SAFETY: the contract.
    if let Some(deleter) = unsafe { (*managed).deleter } {
        // SAFETY: the contract: it runs once, here.
        unsafe { deleter(managed) }
    }
}

/// Runs the deleter of a legacy tensor nobody consumed (what a capsule destructor does).
///
/// # Safety
///
/// `managed` is a live `DLManagedTensor*` whose deleter has not run.
#[no_mangle]
pub unsafe extern "C" fn dlh_call_deleter_legacy(managed: *mut DLManagedTensor) {
    // SAFETY: the contract.
    if let Some(deleter) = unsafe { (*managed).deleter } {
        // SAFETY: the contract: it runs once, here.
        unsafe { deleter(managed) }
    }
}

/// A producer's tensor wrapped as a buffer of one of the harness's element types.
pub struct Imported(Box<dyn ImportedBuffer>);

/// What the harness does with an imported buffer, whatever its element type.
trait ImportedBuffer {
    fn len(&self) -> usize;
    fn values(&self) -> Result<Vec<f64>, String>;
    fn scale(&mut self, factor: f64) -> Result<(), String>;
}

/// `value as f64` and back, for the element types the harness handles.
trait Number: Element + AsF64 {}
impl<T: Element + AsF64> Number for T {}

trait AsF64: Sized {
    fn to_f64(self) -> f64;
    fn from_f64(value: f64) -> Self;
}

macro_rules! as_f64 {
    ($($t:ty),*) => {$(impl AsF64 for $t {
        fn to_f64(self) -> f64 {
            self as f64
        }
        fn from_f64(value: f64) -> Self {
            value as $t
        }
    })*};
}
as_f64!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);

impl<T: Number> ImportedBuffer for UnifiedBuffer<T> {
    fn len(&self) -> usize {
        UnifiedBuffer::len(self)
    }

    fn values(&self) -> Result<Vec<f64>, String> {
        Ok(self.as_slice().map_err(|e| e.to_string())?.iter().map(|&v| v.to_f64()).collect())
    }

    fn scale(&mut self, factor: f64) -> Result<(), String> {
        for v in self.as_mut_slice().map_err(|e| e.to_string())? {
            *v = T::from_f64(v.to_f64() * factor);
        }
        Ok(())
    }
}

/// Wraps the producer's tensor `managed` (a `DLManagedTensorVersioned*` when `versioned` != 0,
/// else a `DLManagedTensor*`) as a buffer of `mm` with element type `dtype`. On success the
/// tensor is the buffer's (rename its capsule `used_...`) and the handle is freed with
/// [`dlh_imported_free`]; on error (null, message in `err`) the tensor is still the caller's.
///
/// # Safety
///
/// `mm` is a live manager from `dlh_manager_new`, `managed` as `UnifiedBuffer::from_dlpack`
/// (or `from_dlpack_legacy`) requires, `dtype` a NUL-terminated string, `err` valid for writes
/// of `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn dlh_import(
    mm: *const MemoryManager,
    managed: *mut c_void,
    versioned: i32,
    dtype: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> *mut Imported {
    // SAFETY: the contract.
    let mm = unsafe { &*mm };
    // SAFETY: the contract.
    let result = unsafe { type_name(dtype) }.and_then(|name| {
        with_type!(name, T => {
            // SAFETY: the contract, forwarded.
            let buffer = unsafe {
                if versioned != 0 {
                    UnifiedBuffer::<T>::from_dlpack(mm, managed.cast())
                } else {
                    UnifiedBuffer::<T>::from_dlpack_legacy(mm, managed.cast())
                }
            };
            buffer.map(|b| Imported(Box::new(b))).map_err(|e| e.to_string())
        })
    });
    match result {
        Ok(imported) => Box::into_raw(Box::new(imported)),
        Err(message) => {
            report(err, err_len, &message);
            std::ptr::null_mut()
        }
    }
}

/// Elements of an imported buffer.
///
/// # Safety
///
/// `h` is a live handle from `dlh_import`.
#[no_mangle]
pub unsafe extern "C" fn dlh_imported_len(h: *const Imported) -> usize {
    // SAFETY: the contract.
    unsafe { &*h }.0.len()
}

/// Copies up to `n` of the buffer's values, as `f64`, into `out`; returns how many, or
/// `usize::MAX` when reading failed.
///
/// # Safety
///
/// `h` is a live handle from `dlh_import`, `out` valid for writes of `n` values.
#[no_mangle]
pub unsafe extern "C" fn dlh_imported_values(h: *const Imported, out: *mut f64, n: usize) -> usize {
    // SAFETY: the contract.
    let Ok(values) = unsafe { &*h }.0.values() else { return usize::MAX };
    let k = values.len().min(n);
    // SAFETY: the contract; `k <= n`.
    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out, k) };
    k
}

/// Multiplies every element by `factor` in place, through the buffer's mutable host slice;
/// returns 0, or -1 when that failed.
///
/// # Safety
///
/// `h` is a live handle from `dlh_import`.
#[no_mangle]
pub unsafe extern "C" fn dlh_imported_scale(h: *mut Imported, factor: f64) -> i32 {
    // SAFETY: the contract.
    match unsafe { &mut *h }.0.scale(factor) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// Drops an imported buffer: the producer's deleter runs now.
///
/// # Safety
///
/// `h` is null or a live handle from `dlh_import`, freed once.
#[no_mangle]
pub unsafe extern "C" fn dlh_imported_free(h: *mut Imported) {
    if !h.is_null() {
        // SAFETY: the contract.
        drop(unsafe { Box::from_raw(h) });
    }
}
