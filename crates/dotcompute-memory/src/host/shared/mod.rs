//! Named cross-process buffers over POSIX shared memory: [`SharedBuffer<T>`].
//!
//! ```text
//!   /dev/shm/<name>   (shm_open("/<name>", O_CREAT | O_EXCL | O_RDWR, 0600))
//!   ┌──────────────────────── 64-byte header ─────────────────────────┬─ pad ─┬── data ──┐
//!   │ magic "DCMEMSHM" │ version │ header size │ type tag │ elem size │       │ len × T  │
//!   │ elem align │ flags │ len (u64) │ data offset (u64) │ creator pid │      │          │
//!   │ reserved │ checksum (FNV-1a 64 of bytes 0..56)                  │       │          │
//!   └─────────────────────────────────────────────────────────────────┴───────┴──────────┘
//!   all fields little-endian; data offset = 64 rounded up to align_of::<T>()
//! ```
//!
//! [`MemoryManager::allocate_shared`](crate::MemoryManager::allocate_shared) creates a segment
//! (failing with [`Error::SharedExists`] if the name is taken), sizes it, maps it and writes
//! the header, magic last. [`MemoryManager::open_shared`](crate::MemoryManager::open_shared)
//! reads the header with `pread` and validates it ([`SharedHeader::parse`]: magic, version,
//! checksum, layout, length against the segment size, then element type and size) before it
//! maps anything, so a foreign, damaged or truncated segment is an error that names the field,
//! never a crash.
//!
//! # One handle per process
//!
//! A process holds at most one handle to a segment: opening a segment that this process
//! already has open (as its creator or by an earlier `open_shared`) is
//! [`Error::SharedAlreadyOpen`], until that handle drops. So the `&mut [T]` a handle gives out
//! is exclusive within the process, as `&mut` must be.
//!
//! # Lifetime of the name
//!
//! The creator's handle removes the name when it drops. Other processes' handles stay valid
//! after that (POSIX keeps the memory until the last mapping goes), but the name can no longer
//! be opened. [`SharedBuffer::unlink`] removes the name earlier; [`SharedBuffer::persist`]
//! closes the creator's handle and keeps the name, so the segment can be opened later (by this
//! process too) until [`SharedBuffer::remove`] removes it.
//!
//! If the creator crashes (or is killed, or leaks its buffer with `mem::forget`), nothing
//! removes the name: the segment stays in `/dev/shm` until reboot, and creating the same name
//! again fails with [`Error::SharedExists`] naming the dead creator's pid. Remove it with
//! [`SharedBuffer::remove`] or, only when the recorded creator is no longer running,
//! [`SharedBuffer::remove_stale`]. (A leaked handle also keeps its segment open in its
//! process, which cannot open it again.)
//!
//! # Concurrency
//!
//! Several processes may map one segment. Like every shared mapping (memmap2, etc.) this
//! crate cannot stop another process from writing while you hold a `&[T]`: coordinate by
//! protocol (one writer at a time, a hand-off through a pipe, a process exit, atomics in the
//! data). Shrinking the segment from outside (`ftruncate`) while it is mapped makes accesses
//! fault (SIGBUS); this crate never does that.
//!
//! [`Error::SharedAlreadyOpen`]: crate::Error::SharedAlreadyOpen
//! [`Error::SharedExists`]: crate::Error::SharedExists

mod buffer;
mod header;
mod name;
mod posix;

pub use buffer::SharedBuffer;
pub use header::{SharedHeader, HEADER_SIZE, LAYOUT_VERSION, MAGIC};
pub use name::{validate_name, MAX_NAME_LEN};
