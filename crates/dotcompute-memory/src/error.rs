//! The one error type of the crate.
//!
//! Every variant carries the values that made the operation fail, so a message read in a log
//! is enough to see what was wrong without a debugger. A failed operation never leaves a
//! buffer half-updated: each entry point validates before it touches memory.

use crate::units::format_bytes;
use std::fmt;

/// Result alias used by every fallible call in the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which side of a transfer an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// Host memory to device memory.
    HostToDevice,
    /// Device memory to host memory.
    DeviceToHost,
    /// Device memory to device memory.
    DeviceToDevice,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::HostToDevice => "host-to-device",
            Direction::DeviceToHost => "device-to-host",
            Direction::DeviceToDevice => "device-to-device",
        })
    }
}

/// Everything that can go wrong in `dotcompute-memory`.
///
/// `Debug` prints the same message as `Display`, so `fn main() -> Result<()>` shows the
/// explanation; match on the variant to branch on the kind.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `len * size_of::<T>()` does not fit in `usize`.
    #[error("length overflow: {len} elements of {element_size} bytes ({type_name}) do not fit in usize")]
    LengthOverflow {
        /// Requested element count.
        len: usize,
        /// Size of one element in bytes.
        element_size: usize,
        /// Element type name.
        type_name: &'static str,
    },

    /// Source and destination of a copy have different lengths.
    #[error("length mismatch in {operation}: the buffer or view holds {expected} elements but the other side holds {actual}; copies never truncate, pass a slice of exactly {expected} elements")]
    LengthMismatch {
        /// The call that failed, e.g. `copy_from`.
        operation: &'static str,
        /// Length of the buffer or view the call was made on.
        expected: usize,
        /// Length of the other side.
        actual: usize,
    },

    /// A reader given to a streaming upload yielded more or fewer bytes than the buffer holds.
    #[error("length mismatch in {operation}: the buffer holds {expected} bytes but the reader yielded {}{actual} bytes; the reader must yield exactly the buffer's size", if *at_least { "at least " } else { "" })]
    ReaderLengthMismatch {
        /// The call that failed, e.g. `stream_to_device`.
        operation: &'static str,
        /// Bytes the buffer holds (what the reader must yield).
        expected: u64,
        /// Bytes the reader yielded before the call stopped reading.
        actual: u64,
        /// True when the reader had more than `expected` bytes: it was not read to its end, so
        /// `actual` is a lower bound.
        at_least: bool,
    },

    /// A range does not lie within `0..len`.
    #[error("range {start}..{end} is out of bounds for a buffer or view of length {len}")]
    OutOfRange {
        /// First element of the requested range.
        start: usize,
        /// One past the last element of the requested range.
        end: usize,
        /// Length of the buffer or view being sliced.
        len: usize,
    },

    /// A range whose start lies after its end.
    #[error("range {start}..{end} is reversed: start must not exceed end")]
    ReversedRange {
        /// Start of the range.
        start: usize,
        /// End of the range.
        end: usize,
    },

    /// The backend has no room for the allocation, even after the cache was released.
    #[error("out of memory on {backend}: requested {}; {} after rounding up to the pool's size class; {} free on the device, {} still cached by the pool (largest free block {}) after releasing what could be released and retrying; free buffers or allocate less", format_bytes(*requested), format_bytes(*rounded), format_bytes(*free), format_bytes(*cached), format_bytes(*largest_free_block))]
    OutOfMemory {
        /// Backend name.
        backend: &'static str,
        /// Bytes the caller asked for (the pools report the request before rounding it up to
        /// a size class).
        requested: u64,
        /// Bytes the allocation needed once rounded up to the pool's size class (equal to
        /// `requested` where nothing rounds it).
        rounded: u64,
        /// Bytes the backend reports free.
        free: u64,
        /// Bytes still held by this manager's pool cache when the request failed.
        cached: u64,
        /// Largest free block in the pool's segments (fragmentation shows as a small value).
        largest_free_block: u64,
    },

    /// The manager's own device-memory cap ([`crate::ManagerOptions::device_memory_limit`]) has
    /// no room for the allocation, even after the cache was released.
    #[error("device memory limit reached on {backend}: requested {}; {} after rounding up to the pool's size class; this manager holds {} of its {} limit ({} of them cached but not releasable: parts of segments still in use) after releasing what could be released and retrying; free buffers, allocate less, or raise ManagerOptions::device_memory_limit", format_bytes(*requested), format_bytes(*rounded), format_bytes(*held), format_bytes(*limit), format_bytes(*cached))]
    MemoryLimitExceeded {
        /// Backend name.
        backend: &'static str,
        /// Bytes the caller asked for.
        requested: u64,
        /// `requested` rounded up to the pool's size class: the bytes the pool needed under the
        /// limit (`held + rounded > limit`).
        rounded: u64,
        /// The limit, in bytes.
        limit: u64,
        /// Device bytes this manager held from the backend when the request failed.
        held: u64,
        /// Of those, bytes cached (free within partly used segments).
        cached: u64,
    },

    /// A backend is compiled out, has no driver, or has no device.
    #[error("backend `{backend}` is unavailable: {reason}")]
    BackendUnavailable {
        /// Backend name.
        backend: String,
        /// Why it could not be used, and what to do about it.
        reason: String,
    },

    /// A backend name that this crate does not know.
    #[error("unknown backend `{name}`; valid names are: {valid}")]
    UnknownBackend {
        /// The name given.
        name: String,
        /// The names this build accepts.
        valid: String,
    },

    /// The backend driver reported an error.
    #[error("{backend} error during {operation}: {message} (code {code}{})", if *transient { ", transient: retrying may succeed" } else { "" })]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// Operation that failed, e.g. `clEnqueueWriteBuffer`.
        operation: &'static str,
        /// The driver's own error code.
        code: i64,
        /// The driver's name for the code, or a description.
        message: String,
        /// True when the condition may clear by itself, so a retry can succeed.
        transient: bool,
    },

    /// Both sides of a buffer were written without a synchronize in between.
    #[error("concurrent modification in {operation}: the host side has unsynchronized writes (host epoch {host_epoch}, device epoch {device_epoch}); call synchronize() before writing on the device, or the host writes would be lost")]
    ConcurrentModification {
        /// The call that detected the conflict.
        operation: &'static str,
        /// Host modification epoch at the time.
        host_epoch: u64,
        /// Device modification epoch at the time.
        device_epoch: u64,
    },

    /// Two buffers that belong to different managers were combined.
    #[error("{operation}: the buffers belong to different memory managers (manager {left} and manager {right}); copy through the host or allocate both from one manager")]
    ManagerMismatch {
        /// The call that failed.
        operation: &'static str,
        /// Id of the manager of the destination.
        left: u64,
        /// Id of the manager of the source.
        right: u64,
    },

    /// A device stopped answering (reset, removed, or its driver failed): its memory and every
    /// buffer on it are gone.
    #[error("{backend} device {device} was lost during {operation}: its memory and the buffers on it are gone; drop its manager and open a new one on a working device")]
    DeviceLost {
        /// Backend name.
        backend: &'static str,
        /// The device's label ([`Backend::device_label`](crate::backend::Backend::device_label)).
        device: String,
        /// The call that failed.
        operation: &'static str,
    },

    /// A reinterpreting cast whose sizes or alignment do not fit.
    #[error("cannot cast {len} elements of {from} ({from_size} bytes each) to {to} ({to_size} bytes each): {reason}")]
    CastMismatch {
        /// Element count of the source.
        len: usize,
        /// Source type name.
        from: &'static str,
        /// Source element size.
        from_size: usize,
        /// Target type name.
        to: &'static str,
        /// Target element size.
        to_size: usize,
        /// What does not fit.
        reason: &'static str,
    },

    /// An option or argument with a value that can never work.
    #[error("invalid value for {option}: {value} ({reason})")]
    InvalidArgument {
        /// Name of the option or argument.
        option: &'static str,
        /// The value given, formatted.
        value: String,
        /// Why it is not acceptable.
        reason: &'static str,
    },

    /// A device handle passed to a backend that did not create it, or already released.
    #[error("invalid device memory handle for backend {backend}: {reason}")]
    InvalidHandle {
        /// Backend name.
        backend: &'static str,
        /// What was wrong with the handle.
        reason: String,
    },

    /// `ArrayPool::rent` (or `rent_raw`) asked for more elements than the pool hands out.
    #[error("array of {requested} elements is too large for this pool: ArrayPoolOptions::max_array_len is {max_array_len}; allocate it directly or raise the limit")]
    ArrayTooLarge {
        /// Elements requested.
        requested: usize,
        /// The pool's `max_array_len`.
        max_array_len: usize,
    },

    /// A raw array handle was returned a second time.
    #[error("array handle {handle} was already returned to pool {pool}; a raw handle may be returned once")]
    DoubleReturn {
        /// Id of the pool.
        pool: u64,
        /// The handle's id (slot and generation).
        handle: u64,
    },

    /// A raw array handle was returned to (or used with) a pool that did not issue it.
    #[error("array handle belongs to pool {handle_pool}, not to pool {pool}; return it to the pool that rented it")]
    ForeignHandle {
        /// Pool id recorded in the handle.
        handle_pool: u64,
        /// Id of the pool it was given to.
        pool: u64,
    },

    /// A helper thread (e.g. a pool's maintenance thread) could not be started.
    #[error("could not start thread `{thread}`: {message}")]
    ThreadSpawn {
        /// Name of the thread.
        thread: &'static str,
        /// The operating system's error.
        message: String,
    },

    /// An alignment that is not a power of two, is below the element's own alignment, or is
    /// larger than this crate supports.
    #[error("invalid alignment {alignment} for {type_name} (which needs at least {element_align}): {reason}")]
    InvalidAlignment {
        /// The alignment requested, in bytes.
        alignment: usize,
        /// Element type name.
        type_name: &'static str,
        /// `align_of` the element type.
        element_align: usize,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A NUMA node that does not exist on this machine.
    #[error("NUMA node {node} does not exist on this machine (online nodes: {online})")]
    NumaNodeUnavailable {
        /// The node requested.
        node: u32,
        /// The kernel's list of online nodes, e.g. `0` or `0-3`.
        online: String,
    },

    /// An operating-system call failed.
    #[error("{operation} failed for {target}: {message} (errno {errno})")]
    Os {
        /// The call, e.g. `mmap` or `shm_open`.
        operation: &'static str,
        /// What it was applied to, e.g. `8388608 bytes` or a shared-memory name.
        target: String,
        /// The raw OS error number.
        errno: i32,
        /// The OS's description of the error.
        message: String,
    },

    /// Locking pages in memory hit the locked-memory limit.
    #[error("cannot lock {} in memory: RLIMIT_MEMLOCK is {} (hard limit {}) and this process may not exceed it (errno {errno}); raise it with `ulimit -l`, /etc/security/limits.conf or CAP_IPC_LOCK, or pin less memory", format_bytes(*requested as u64), fmt_limit(*soft_limit), fmt_limit(*hard_limit))]
    MemoryLockLimit {
        /// Bytes asked to lock.
        requested: usize,
        /// Soft RLIMIT_MEMLOCK in bytes (`None`: unlimited).
        soft_limit: Option<u64>,
        /// Hard RLIMIT_MEMLOCK in bytes (`None`: unlimited).
        hard_limit: Option<u64>,
        /// The errno mlock returned (ENOMEM or EPERM).
        errno: i32,
    },

    /// The operation is not available on this platform or build.
    #[error("{operation} is not supported here: {reason}")]
    Unsupported {
        /// What was attempted.
        operation: &'static str,
        /// Why it is unavailable.
        reason: &'static str,
    },

    /// A native handle passed in (an OpenCL context, device, queue) is null.
    #[error("{backend}: the {what} handle is null; pass a live object")]
    NullHandle {
        /// The backend that was given the handle.
        backend: &'static str,
        /// Which handle (`cl_context`, `cl_device_id`, `cl_command_queue`, ...).
        what: &'static str,
    },

    /// A native object (a command queue, an event) belongs to another context than the one it
    /// must be used with.
    #[error("{backend}: {what} {handle} belongs to context {found}, not to context {expected}; objects of different contexts cannot be mixed")]
    ForeignContext {
        /// The backend that was given the object.
        backend: &'static str,
        /// What the object is (`command queue`, `completion event`, ...).
        what: &'static str,
        /// The object's handle.
        handle: String,
        /// The context it had to belong to.
        expected: String,
        /// The context it belongs to.
        found: String,
    },

    /// A device that is not one of a context's devices.
    #[error("{backend}: device {device} is not a device of context {context} (the context's devices: {devices})")]
    DeviceNotInContext {
        /// The backend that was given the device.
        backend: &'static str,
        /// The device's handle.
        device: String,
        /// The context's handle.
        context: String,
        /// The handles of the context's devices.
        devices: String,
    },

    /// An OpenCL sub-buffer whose origin is not a multiple of `CL_DEVICE_MEM_BASE_ADDR_ALIGN`
    /// (of every device of the buffer's context), which OpenCL requires.
    #[error("sub-buffer at byte offset {byte_offset} is misaligned: its origin must be a multiple of CL_DEVICE_MEM_BASE_ADDR_ALIGN, {alignment_bits} bits ({alignment} bytes) here, and {byte_offset} is {} bytes past a multiple; pass the parent cl_mem with the byte offset to the kernel instead, or slice at an aligned element", byte_offset % (*alignment).max(1))]
    MisalignedSubBuffer {
        /// The sub-buffer's origin in its parent, in bytes.
        byte_offset: usize,
        /// The alignment required, in bytes.
        alignment: usize,
        /// The same alignment as the device reports it, in bits.
        alignment_bits: u64,
    },

    /// A DLPack tensor that cannot become a buffer (`UnifiedBuffer::from_dlpack`): which field
    /// is wrong, what it holds and what was needed. The tensor was not consumed: its deleter did
    /// not run, and it is still the caller's to hand back or free.
    #[error("DLPack tensor refused: {field} = {found}; needed: {expected}. The tensor was not consumed (its deleter did not run) and is still the caller's")]
    DlpackRefused {
        /// The field of the tensor (or of its managed struct) that is wrong, e.g. `strides`.
        field: &'static str,
        /// What the field holds, formatted (with the values it depends on, e.g. the shape).
        found: String,
        /// What was needed instead, and where that applies.
        expected: String,
    },

    /// A buffer that cannot be exported as a DLPack tensor (`UnifiedBuffer::to_dlpack`).
    #[error(
        "cannot export the {side} part of a buffer of {element} on backend {backend} as a DLPack tensor: {reason}"
    )]
    DlpackExport {
        /// Backend name.
        backend: &'static str,
        /// The part that would be exported: `host` or `device`.
        side: &'static str,
        /// The buffer's element type.
        element: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },

    /// A shared-memory name that cannot be used.
    #[error("invalid shared buffer name {name:?}: {reason}")]
    SharedName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// `allocate_shared` with a name that already exists.
    #[error("shared buffer {name:?} already exists{}; open it with open_shared, pick another name, or remove a stale one with SharedBuffer::remove", match creator_pid { Some(pid) => format!(" (created by pid {pid})"), None => String::new() })]
    SharedExists {
        /// The name given.
        name: String,
        /// The pid recorded in the existing segment's header, when it has a readable one.
        creator_pid: Option<u32>,
    },

    /// `open_shared` with a name no process has created (or that was already removed).
    #[error("shared buffer {name:?} does not exist (never created, or its creator dropped or unlinked it)")]
    SharedNotFound {
        /// The name given.
        name: String,
    },

    /// `open_shared` of a segment this process already has a handle to: a second handle would
    /// alias the first one's (possibly mutable) access to the memory.
    #[error("shared buffer {name:?} is already open in this process; use the existing handle (a second one would alias its memory)")]
    SharedAlreadyOpen {
        /// The name given.
        name: String,
    },

    /// `open_shared` as a different element type than the buffer was created with.
    #[error("shared buffer {name:?} holds {found_size}-byte elements with type tag {found_id}, but it was opened as {expected_type} (tag {expected_id}, {expected_size} bytes)")]
    SharedTypeMismatch {
        /// The name given.
        name: String,
        /// The type it was opened as.
        expected_type: &'static str,
        /// That type's tag.
        expected_id: u32,
        /// That type's size.
        expected_size: u32,
        /// The tag in the header.
        found_id: u32,
        /// The element size in the header.
        found_size: u32,
    },

    /// A shared segment whose header is not one this crate wrote, or is damaged or truncated.
    #[error("shared buffer {name:?} has a corrupt header: {field} is {found}, expected {expected}")]
    SharedCorrupt {
        /// The name given.
        name: String,
        /// The header field (or `segment size`) that failed validation.
        field: &'static str,
        /// What validation expected.
        expected: String,
        /// What was found.
        found: String,
    },

    /// A line of an allocation trace that is not what its format needs (see
    /// [`crate::trace::parse`]).
    #[error("line {line} of the trace: {found}; expected {expected}")]
    MalformedTrace {
        /// 1-based line number in the trace.
        line: u64,
        /// What is wrong with the line (its text, shortened, or the field that failed).
        found: String,
        /// What a line in this place must hold.
        expected: &'static str,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn fmt_limit(limit: Option<u64>) -> String {
    match limit {
        Some(bytes) => format_bytes(bytes),
        None => "unlimited".to_string(),
    }
}

impl Error {
    /// An allocator's refusal of `requested` bytes with `free` bytes left, where no pool is
    /// involved: nothing is cached and nothing was rounded.
    pub(crate) fn allocator_out_of_memory(backend: &'static str, requested: u64, free: u64) -> Self {
        Error::OutOfMemory { backend, requested, rounded: requested, free, cached: 0, largest_free_block: 0 }
    }

    /// `Error::Os` for `operation` on `target` from a std io error, its description without
    /// the `(os error N)` that the errno field already gives.
    pub(crate) fn from_io(operation: &'static str, target: impl Into<String>, err: &std::io::Error) -> Self {
        let errno = err.raw_os_error().unwrap_or(0);
        let text = err.to_string();
        let message = text.strip_suffix(&format!(" (os error {errno})")).unwrap_or(&text).to_string();
        Error::Os { operation, target: target.into(), errno, message }
    }

    /// True when retrying the same call may succeed (a transient device condition).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::OutOfMemory { .. } | Error::MemoryLimitExceeded { .. } | Error::Backend { transient: true, .. }
        )
    }
}

/// Checked `len * size_of::<T>()`, the one place element counts become byte counts.
pub(crate) fn byte_len<T>(len: usize) -> Result<usize> {
    len.checked_mul(std::mem::size_of::<T>()).filter(|&b| b <= isize::MAX as usize).ok_or_else(|| {
        Error::LengthOverflow { len, element_size: std::mem::size_of::<T>(), type_name: std::any::type_name::<T>() }
    })
}

/// `Error::LengthMismatch` unless the two sides of a copy have the same length.
pub(crate) fn check_len(operation: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected != actual {
        return Err(Error::LengthMismatch { operation, expected, actual });
    }
    Ok(())
}

/// Validates `range` against `len` and returns `(start, end)`.
pub(crate) fn check_range(range: impl std::ops::RangeBounds<usize>, len: usize) -> Result<(usize, usize)> {
    use std::ops::Bound;
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1).ok_or(Error::OutOfRange { start: s, end: s, len })?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1).ok_or(Error::OutOfRange { start, end: e, len })?,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    if start > len {
        return Err(Error::OutOfRange { start, end, len });
    }
    if start > end {
        return Err(Error::ReversedRange { start, end });
    }
    if end > len {
        return Err(Error::OutOfRange { start, end, len });
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_len_overflow_names_the_values() {
        let err = byte_len::<u64>(usize::MAX / 4).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&(usize::MAX / 4).to_string()), "{msg}");
        assert!(msg.contains("8 bytes"), "{msg}");
        assert_eq!(byte_len::<u32>(10).unwrap(), 40);
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(check_range(2..5, 10).unwrap(), (2, 5));
        assert_eq!(check_range(.., 10).unwrap(), (0, 10));
        assert_eq!(check_range(3..=3, 10).unwrap(), (3, 4));
        assert_eq!(check_range(10..10, 10).unwrap(), (10, 10));
        assert!(matches!(check_range(5..11, 10), Err(Error::OutOfRange { start: 5, end: 11, len: 10 })));
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = check_range(6..2, 10);
        assert!(matches!(reversed, Err(Error::ReversedRange { start: 6, end: 2 })));
        assert!(matches!(check_range(11.., 10), Err(Error::OutOfRange { start: 11, .. })));
        assert!(check_range(0..=usize::MAX, 10).is_err());
    }
}
