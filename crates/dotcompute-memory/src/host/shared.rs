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

use crate::element::{Element, TypeTag};
use crate::error::{byte_len, Error, Result};
use crate::stats::StatCounters;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Size of the header at the start of every segment.
pub const HEADER_SIZE: usize = 64;
/// The first eight bytes of every segment this crate creates.
pub const MAGIC: [u8; 8] = *b"DCMEMSHM";
/// The header layout version this build writes and accepts.
pub const LAYOUT_VERSION: u32 = 1;
/// Longest accepted name in bytes (POSIX shm names are file names; macOS allows 31 bytes
/// including the leading slash).
pub const MAX_NAME_LEN: usize = if cfg!(target_os = "macos") { 30 } else { 250 };

/// The validated header of a shared segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedHeader {
    /// Layout version ([`LAYOUT_VERSION`]).
    pub version: u32,
    /// Element type tag ([`TypeTag::id`]).
    pub type_id: u32,
    /// Element size in bytes.
    pub elem_size: u32,
    /// Element alignment in bytes.
    pub elem_align: u32,
    /// Number of elements.
    pub len: u64,
    /// Offset of the first element from the start of the segment.
    pub data_offset: u64,
    /// Process id of the creator.
    pub creator_pid: u32,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl SharedHeader {
    /// The header for `len` elements of `T` created by `creator_pid`.
    ///
    /// Errors: [`Error::LengthOverflow`]; [`Error::InvalidAlignment`] when `T` needs more
    /// alignment than a page (the segment mapping guarantees no more).
    pub fn for_type<T: Element>(len: usize, creator_pid: u32) -> Result<Self> {
        let bytes = byte_len::<T>(len)?;
        let align = std::mem::align_of::<T>();
        if align > 4096 {
            return Err(Error::InvalidAlignment {
                alignment: align,
                type_name: std::any::type_name::<T>(),
                element_align: align,
                reason: "shared buffers support element alignments up to 4096 bytes",
            });
        }
        let data_offset = HEADER_SIZE.max(align);
        let overflow = Error::LengthOverflow {
            len,
            element_size: std::mem::size_of::<T>(),
            type_name: std::any::type_name::<T>(),
        };
        bytes.checked_add(data_offset).filter(|&t| t <= isize::MAX as usize).ok_or(overflow)?;
        Ok(SharedHeader {
            version: LAYOUT_VERSION,
            type_id: T::TYPE_TAG.id,
            elem_size: std::mem::size_of::<T>() as u32,
            elem_align: align as u32,
            len: len as u64,
            data_offset: data_offset as u64,
            creator_pid,
        })
    }

    /// Total segment size: data offset plus the data (saturating at `u64::MAX` for
    /// headers that [`SharedHeader::parse`] would reject).
    pub fn segment_size(&self) -> u64 {
        self.len.saturating_mul(u64::from(self.elem_size)).saturating_add(self.data_offset)
    }

    /// The 64 header bytes, checksum included.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.type_id.to_le_bytes());
        b[20..24].copy_from_slice(&self.elem_size.to_le_bytes());
        b[24..28].copy_from_slice(&self.elem_align.to_le_bytes());
        // 28..32 flags, 0
        b[32..40].copy_from_slice(&self.len.to_le_bytes());
        b[40..48].copy_from_slice(&self.data_offset.to_le_bytes());
        b[48..52].copy_from_slice(&self.creator_pid.to_le_bytes());
        // 52..56 reserved, 0
        let sum = fnv1a(&b[..56]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses and validates the header of segment `name`, given the first bytes of the
    /// segment (at most [`HEADER_SIZE`] are read) and the segment's size. Does not check the
    /// element type (see [`SharedHeader::check_type`]). Never panics, whatever the bytes.
    ///
    /// Errors: [`Error::SharedCorrupt`] naming the field and the values.
    pub fn parse(name: &str, bytes: &[u8], segment_size: u64) -> Result<Self> {
        let corrupt = |field: &'static str, expected: String, found: String| Error::SharedCorrupt {
            name: name.to_string(),
            field,
            expected,
            found,
        };
        if bytes.len() < HEADER_SIZE || segment_size < HEADER_SIZE as u64 {
            return Err(corrupt(
                "segment size",
                format!("at least {HEADER_SIZE} bytes (the header)"),
                format!("{} bytes (truncated segment)", segment_size.min(bytes.len() as u64)),
            ));
        }
        let b = &bytes[..HEADER_SIZE];
        if b[..8] != MAGIC {
            let found = if b[..8].iter().all(|&x| x == 0) {
                "all zero (the creator has not finished writing the header, or crashed while creating it)".to_string()
            } else {
                format!("{:?}", String::from_utf8_lossy(&b[..8]))
            };
            return Err(corrupt("magic", format!("{:?}", "DCMEMSHM"), found));
        }
        let version = u32_at(b, 8);
        if version != LAYOUT_VERSION {
            return Err(corrupt("layout version", LAYOUT_VERSION.to_string(), version.to_string()));
        }
        let header_size = u32_at(b, 12);
        if header_size as usize != HEADER_SIZE {
            return Err(corrupt("header size", HEADER_SIZE.to_string(), header_size.to_string()));
        }
        let stored = u64_at(b, 56);
        let computed = fnv1a(&b[..56]);
        if stored != computed {
            return Err(corrupt("checksum", format!("{computed:#018x}"), format!("{stored:#018x}")));
        }
        let h = SharedHeader {
            version,
            type_id: u32_at(b, 16),
            elem_size: u32_at(b, 20),
            elem_align: u32_at(b, 24),
            len: u64_at(b, 32),
            data_offset: u64_at(b, 40),
            creator_pid: u32_at(b, 48),
        };
        if !h.elem_align.is_power_of_two() || h.elem_align > 4096 {
            return Err(corrupt("element alignment", "a power of two up to 4096".into(), h.elem_align.to_string()));
        }
        if h.data_offset < HEADER_SIZE as u64 || h.data_offset % u64::from(h.elem_align) != 0 {
            return Err(corrupt(
                "data offset",
                format!("at least {HEADER_SIZE} and a multiple of {}", h.elem_align),
                h.data_offset.to_string(),
            ));
        }
        let needed = h.len.checked_mul(u64::from(h.elem_size)).and_then(|d| d.checked_add(h.data_offset));
        match needed {
            Some(n) if n <= segment_size => Ok(h),
            _ => Err(corrupt(
                "length",
                format!(
                    "at most {} elements of {} bytes (segment is {segment_size} bytes)",
                    {
                        let room = segment_size.saturating_sub(h.data_offset);
                        room.checked_div(u64::from(h.elem_size)).unwrap_or(u64::MAX)
                    },
                    h.elem_size
                ),
                format!("{} elements", h.len),
            )),
        }
    }

    /// Checks that the segment holds `T`s: same type tag, size and alignment.
    ///
    /// Errors: [`Error::SharedTypeMismatch`] with both sides' tag and size.
    pub fn check_type<T: Element>(&self, name: &str) -> Result<()> {
        let tag: TypeTag = T::TYPE_TAG;
        let size = std::mem::size_of::<T>() as u32;
        let align = std::mem::align_of::<T>() as u32;
        if self.type_id != tag.id || self.elem_size != size || self.elem_align != align {
            return Err(Error::SharedTypeMismatch {
                name: name.to_string(),
                expected_type: tag.name,
                expected_id: tag.id,
                expected_size: size,
                found_id: self.type_id,
                found_size: self.elem_size,
            });
        }
        if self.data_offset != HEADER_SIZE.max(align as usize) as u64 {
            return Err(Error::SharedCorrupt {
                name: name.to_string(),
                field: "data offset",
                expected: HEADER_SIZE.max(align as usize).to_string(),
                found: self.data_offset.to_string(),
            });
        }
        Ok(())
    }
}

/// Checks a shared-memory name: non-empty, at most [`MAX_NAME_LEN`] bytes, no `/` or NUL,
/// not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: String| Err(Error::SharedName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return bad(format!("the name is {} bytes long; at most {MAX_NAME_LEN} are allowed", name.len()));
    }
    if let Some(pos) = name.find('/') {
        return bad(format!("it contains '/' (at byte {pos}); names are single path components"));
    }
    if name.contains('\0') {
        return bad("it contains a NUL byte".into());
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not names".into());
    }
    Ok(())
}

/// A named buffer of `T`s in POSIX shared memory, visible to other processes by name.
///
/// Dereferences to `[T]`. Made by
/// [`MemoryManager::allocate_shared`](crate::MemoryManager::allocate_shared) (the creator) and
/// [`MemoryManager::open_shared`](crate::MemoryManager::open_shared); a process has at most one
/// handle to a segment. See the [module docs](self) for the header, the name's lifetime and the
/// crash case.
pub struct SharedBuffer<T> {
    name: String,
    map: NonNull<u8>,
    map_len: usize,
    data: NonNull<T>,
    len: usize,
    header: SharedHeader,
    creator: bool,
    /// Dropping this handle removes the name (the creator's, until `unlink` or `persist`).
    removes_name: AtomicBool,
    #[cfg_attr(not(all(unix, not(miri))), allow(dead_code))]
    key: (u64, u64),
    stats: Option<Arc<StatCounters>>,
}

// SAFETY: the mapping is owned by the handle like a Box<[T]> (other processes aside, see
// the module docs; no other handle in this process maps it); moving it moves that ownership.
unsafe impl<T: Send> Send for SharedBuffer<T> {}
// SAFETY: `&SharedBuffer` only gives out `&[T]`; mutation needs `&mut`.
unsafe impl<T: Sync> Sync for SharedBuffer<T> {}

impl<T: Element> SharedBuffer<T> {
    /// Creates segment `name` holding `len` zeroed `T`s (prefer
    /// [`MemoryManager::allocate_shared`](crate::MemoryManager::allocate_shared), which also
    /// counts it in the manager's statistics).
    ///
    /// Errors: [`Error::SharedName`], [`Error::SharedExists`], [`Error::LengthOverflow`],
    /// [`Error::Os`], [`Error::Unsupported`] (no POSIX shared memory, or Miri).
    pub fn create(name: &str, len: usize) -> Result<Self> {
        validate_name(name)?;
        let _ = byte_len::<T>(len)?;
        sys::create::<T>(name, len)
    }

    /// Opens segment `name` as `T`s (prefer
    /// [`MemoryManager::open_shared`](crate::MemoryManager::open_shared)).
    ///
    /// Errors: [`Error::SharedName`], [`Error::SharedNotFound`], [`Error::SharedCorrupt`],
    /// [`Error::SharedTypeMismatch`], [`Error::SharedAlreadyOpen`] (this process has a handle
    /// to the segment), [`Error::Os`], [`Error::Unsupported`].
    pub fn open(name: &str) -> Result<Self> {
        validate_name(name)?;
        sys::open::<T>(name)
    }
}

impl<T> SharedBuffer<T> {
    /// The name (without the leading slash).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start of the data.
    pub fn as_ptr(&self) -> *const T {
        self.data.as_ptr()
    }

    /// Start of the data, for writing (see the concurrency notes in the module docs).
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.data.as_ptr()
    }

    /// The segment's header.
    pub fn header(&self) -> &SharedHeader {
        &self.header
    }

    /// Pid of the process that created the segment.
    pub fn creator_pid(&self) -> u32 {
        self.header.creator_pid
    }

    /// True for the handle returned by `allocate_shared` in the creating process.
    pub fn is_creator(&self) -> bool {
        self.creator
    }

    /// Removes the name now (if it still names this segment); mappings stay valid, and the
    /// name can be created afresh. Dropping the creator afterwards removes nothing.
    pub fn unlink(&self) -> Result<()> {
        self.removes_name.store(false, Ordering::Relaxed);
        sys::unlink_if_ours(&self.name, self.key)
    }

    /// Closes this handle without removing the name: the segment stays, and this or any
    /// process can open it, until [`SharedBuffer::remove`] (or a reboot) removes it.
    pub fn persist(self) {
        self.removes_name.store(false, Ordering::Relaxed);
    }

    pub(crate) fn with_stats(mut self, stats: Arc<StatCounters>) -> Self {
        stats.buffer_created(std::mem::size_of::<T>() * self.len);
        self.stats = Some(stats);
        self
    }
}

impl SharedBuffer<()> {
    /// Removes the name `name` whoever created it (for cleaning up after a crashed creator).
    /// Processes that mapped the segment keep their mappings.
    ///
    /// Errors: [`Error::SharedName`], [`Error::SharedNotFound`], [`Error::Os`].
    pub fn remove(name: &str) -> Result<()> {
        validate_name(name)?;
        sys::remove(name)
    }

    /// Removes `name` only if its header names a creator process that is no longer running;
    /// returns whether it removed it. Pids are reused, so a live process with the dead
    /// creator's pid keeps the segment (which errs on the side of not deleting data).
    pub fn remove_stale(name: &str) -> Result<bool> {
        validate_name(name)?;
        sys::remove_stale(name)
    }
}

impl<T> Deref for SharedBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: data is aligned (page-aligned mapping + data offset multiple of align_of T)
        // and valid for `len` initialised T (validated against the segment size; Pod) while
        // the mapping lives, i.e. as long as self.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for SharedBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref; &mut self makes the access exclusive within this process, where
        // no other handle maps the segment (`open` refuses a second one).
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.len) }
    }
}

impl<T> fmt::Debug for SharedBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("name", &self.name)
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len)
            .field("creator", &self.creator)
            .field("header", &self.header)
            .finish()
    }
}

impl<T> Drop for SharedBuffer<T> {
    fn drop(&mut self) {
        if let Some(stats) = &self.stats {
            stats.buffer_dropped(std::mem::size_of::<T>() * self.len);
        }
        sys::release(&self.name, self.map, self.map_len, self.key, *self.removes_name.get_mut());
    }
}

#[cfg(all(unix, not(miri)))]
mod sys {
    use super::*;
    use crate::host::os;
    use rustix::fs::Mode;
    use rustix::io::Errno;
    use rustix::mm::{MapFlags, ProtFlags};
    use rustix::shm::OFlags;
    use std::collections::BTreeSet;
    use std::fs::File;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::sync::Mutex;

    /// Segments a live handle in this process maps, by (device, inode): at most one handle
    /// per segment. An entry is made before the handle's mapping and removed after its unmap.
    static OPEN: Mutex<BTreeSet<(u64, u64)>> = Mutex::new(BTreeSet::new());

    fn registry<R>(f: impl FnOnce(&mut BTreeSet<(u64, u64)>) -> R) -> R {
        f(&mut OPEN.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn path(name: &str) -> String {
        format!("/{name}")
    }

    fn key_of(file: &File, name: &str) -> Result<(u64, u64, u64)> {
        let meta = file.metadata().map_err(|e| os::io_error("fstat", name, &e))?;
        Ok((meta.dev(), meta.ino(), meta.size()))
    }

    /// Maps `len` bytes of `file` shared read-write.
    fn map(file: &File, len: usize, name: &str) -> Result<NonNull<u8>> {
        // SAFETY: a fresh shared mapping of our own open segment at an address of the
        // kernel's choosing aliases nothing in this process.
        let raw = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, file, 0)
        }
        .map_err(|e| os::os_error("mmap", format!("shared buffer {name:?} ({len} bytes)"), e))?;
        Ok(NonNull::new(raw.cast::<u8>()).expect("mmap never returns null on success"))
    }

    fn existing_creator(name: &str) -> Option<u32> {
        let fd = rustix::shm::open(path(name), OFlags::RDONLY, Mode::empty()).ok()?;
        let file = File::from(fd);
        let mut b = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut b, 0).ok()?;
        let size = file.metadata().ok()?.size();
        SharedHeader::parse(name, &b, size).ok().map(|h| h.creator_pid)
    }

    pub(super) fn create<T: Element>(name: &str, len: usize) -> Result<SharedBuffer<T>> {
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        let header = SharedHeader::for_type::<T>(len, pid)?;
        let size = header.segment_size();
        let fd = match rustix::shm::open(
            path(name),
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        ) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                return Err(Error::SharedExists { name: name.into(), creator_pid: existing_creator(name) })
            }
            Err(e) => return Err(os::os_error("shm_open", format!("shared buffer {name:?}"), e)),
        };
        let file = File::from(fd);
        // From here on a failure must remove the half-made segment.
        let cleanup = |err: Error| {
            let _ = rustix::shm::unlink(path(name));
            err
        };
        file.set_len(size).map_err(|e| cleanup(os::io_error("ftruncate", format!("shared buffer {name:?}"), &e)))?;
        let (dev, ino, _) = key_of(&file, name).map_err(cleanup)?;
        // Registered before the header is written, so an `open` in this process that sees the
        // header also sees the entry. A fresh inode has none (a mapped one is never reused).
        if !registry(|r| r.insert((dev, ino))) {
            return Err(cleanup(Error::SharedAlreadyOpen { name: name.into() }));
        }
        let map_len = size as usize;
        let base = map(&file, map_len, name).map_err(|e| {
            registry(|r| r.remove(&(dev, ino)));
            cleanup(e)
        })?;
        let bytes = header.encode();
        // SAFETY: the mapping is map_len >= HEADER_SIZE bytes, freshly created by us; we write
        // the header body first, then (after a release fence) the magic, so a reader that sees
        // the magic sees the whole header.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes[8..].as_ptr(), base.as_ptr().add(8), HEADER_SIZE - 8);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.as_ptr(), 8);
        }
        // SAFETY: data_offset < map_len, inside the mapping.
        let data = unsafe { base.as_ptr().add(header.data_offset as usize) }.cast::<T>();
        Ok(SharedBuffer {
            name: name.into(),
            map: base,
            map_len,
            data: NonNull::new(data).expect("inside a mapping"),
            len,
            header,
            creator: true,
            removes_name: AtomicBool::new(true),
            key: (dev, ino),
            stats: None,
        })
    }

    pub(super) fn open<T: Element>(name: &str) -> Result<SharedBuffer<T>> {
        let fd = match rustix::shm::open(path(name), OFlags::RDWR, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(Error::SharedNotFound { name: name.into() }),
            Err(e) => return Err(os::os_error("shm_open", format!("shared buffer {name:?}"), e)),
        };
        let file = File::from(fd);
        let (dev, ino, size) = key_of(&file, name)?;
        let mut bytes = [0u8; HEADER_SIZE];
        let got = if size >= HEADER_SIZE as u64 {
            file.read_exact_at(&mut bytes, 0)
                .map_err(|e| os::io_error("pread", format!("shared buffer {name:?}"), &e))?;
            HEADER_SIZE
        } else {
            0
        };
        let header = SharedHeader::parse(name, &bytes[..got], size)?;
        header.check_type::<T>(name)?;
        let map_len = usize::try_from(header.segment_size()).map_err(|_| Error::SharedCorrupt {
            name: name.into(),
            field: "length",
            expected: "a size that fits in this process's address space".into(),
            found: format!("{} bytes", header.segment_size()),
        })?;
        let len = usize::try_from(header.len).expect("segment size fits usize, so len does");
        // Checked and registered in one step, so of concurrent opens only one gets a handle.
        if !registry(|r| r.insert((dev, ino))) {
            return Err(Error::SharedAlreadyOpen { name: name.into() });
        }
        let base = map(&file, map_len, name).inspect_err(|_| {
            registry(|r| r.remove(&(dev, ino)));
        })?;
        // SAFETY: data_offset <= map_len (validated), inside or one past the mapping.
        let data = unsafe { base.as_ptr().add(header.data_offset as usize) }.cast::<T>();
        Ok(SharedBuffer {
            name: name.into(),
            map: base,
            map_len,
            data: NonNull::new(data).expect("inside a mapping"),
            len,
            header,
            creator: false,
            removes_name: AtomicBool::new(false),
            key: (dev, ino),
            stats: None,
        })
    }

    /// Unlinks `name` if it still names segment `key`.
    pub(super) fn unlink_if_ours(name: &str, key: (u64, u64)) -> Result<()> {
        let fd = match rustix::shm::open(path(name), OFlags::RDONLY, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(os::os_error("shm_open", format!("shared buffer {name:?}"), e)),
        };
        let (dev, ino, _) = key_of(&File::from(fd), name)?;
        if (dev, ino) != key {
            return Ok(()); // someone re-created the name: not ours to remove
        }
        match rustix::shm::unlink(path(name)) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(os::os_error("shm_unlink", format!("shared buffer {name:?}"), e)),
        }
    }

    /// Unmaps a handle's mapping, removes the name if `remove_name`, then lets this process
    /// open the segment again.
    pub(super) fn release(name: &str, map: NonNull<u8>, map_len: usize, key: (u64, u64), remove_name: bool) {
        // SAFETY: the mapping is this handle's own and nothing borrows from it any more.
        let _ = unsafe { rustix::mm::munmap(map.as_ptr().cast(), map_len) };
        if remove_name {
            let _ = unlink_if_ours(name, key);
        }
        registry(|r| r.remove(&key));
    }

    pub(super) fn remove(name: &str) -> Result<()> {
        match rustix::shm::unlink(path(name)) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => Err(Error::SharedNotFound { name: name.into() }),
            Err(e) => Err(os::os_error("shm_unlink", format!("shared buffer {name:?}"), e)),
        }
    }

    pub(super) fn remove_stale(name: &str) -> Result<bool> {
        let fd = match rustix::shm::open(path(name), OFlags::RDONLY, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(Error::SharedNotFound { name: name.into() }),
            Err(e) => return Err(os::os_error("shm_open", format!("shared buffer {name:?}"), e)),
        };
        let file = File::from(fd);
        let (_, _, size) = key_of(&file, name)?;
        let mut bytes = [0u8; HEADER_SIZE];
        let got = if size >= HEADER_SIZE as u64 && file.read_exact_at(&mut bytes, 0).is_ok() { HEADER_SIZE } else { 0 };
        let header = SharedHeader::parse(name, &bytes[..got], size)?;
        let alive = match rustix::process::Pid::from_raw(header.creator_pid as i32) {
            Some(pid) => !matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH)),
            None => false,
        };
        if alive {
            return Ok(false);
        }
        remove(name).map(|()| true)
    }
}

#[cfg(not(all(unix, not(miri))))]
mod sys {
    use super::*;

    const WHY: &str = if cfg!(miri) {
        "Miri cannot call shm_open or mmap"
    } else {
        "POSIX shared memory is only implemented on unix"
    };

    fn unsupported<R>() -> Result<R> {
        Err(Error::Unsupported { operation: "named shared buffers", reason: WHY })
    }

    pub(super) fn create<T: Element>(_: &str, _: usize) -> Result<SharedBuffer<T>> {
        unsupported()
    }
    pub(super) fn open<T: Element>(_: &str) -> Result<SharedBuffer<T>> {
        unsupported()
    }
    pub(super) fn unlink_if_ours(_: &str, _: (u64, u64)) -> Result<()> {
        unsupported()
    }
    pub(super) fn release(_: &str, _: NonNull<u8>, _: usize, _: (u64, u64), _: bool) {}
    pub(super) fn remove(_: &str) -> Result<()> {
        unsupported()
    }
    pub(super) fn remove_stale(_: &str) -> Result<bool> {
        unsupported()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = SharedHeader::for_type::<f64>(1000, 42).unwrap();
        assert_eq!(h.data_offset, 64);
        assert_eq!(h.segment_size(), 64 + 8000);
        let b = h.encode();
        assert_eq!(SharedHeader::parse("x", &b, h.segment_size()).unwrap(), h);
        h.check_type::<f64>("x").unwrap();
        let err = h.check_type::<u64>("x").unwrap_err();
        assert!(matches!(err, Error::SharedTypeMismatch { found_id: 10, expected_id: 7, .. }), "{err:?}");
    }

    #[test]
    fn corrupt_headers_name_the_field() {
        let h = SharedHeader::for_type::<u32>(10, 1).unwrap();
        let good = h.encode();
        let field = |bytes: &[u8], size: u64| match SharedHeader::parse("seg", bytes, size) {
            Err(Error::SharedCorrupt { field, name, .. }) => {
                assert_eq!(name, "seg");
                field
            }
            other => panic!("expected SharedCorrupt, got {other:?}"),
        };
        assert_eq!(field(&good[..10], 10), "segment size");
        assert_eq!(field(&good, 32), "segment size");
        let mut b = good;
        b[0] = b'X';
        assert_eq!(field(&b, 104), "magic");
        assert_eq!(field(&[0u8; 64], 104), "magic");
        let mut b = good;
        b[8] = 2;
        assert_eq!(field(&b, 104), "layout version");
        let mut b = good;
        b[33] = 1; // len changed without a new checksum
        assert_eq!(field(&b, 104), "checksum");
        // A consistent header whose length exceeds the segment.
        let big = SharedHeader { len: 1000, ..h };
        assert_eq!(field(&big.encode(), 104), "length");
        let huge = SharedHeader { len: u64::MAX, ..h };
        assert_eq!(field(&huge.encode(), u64::MAX), "length");
        let odd = SharedHeader { data_offset: 65, ..h };
        assert_eq!(field(&odd.encode(), 1000), "data offset");
        let bad_align = SharedHeader { elem_align: 3, ..h };
        assert_eq!(field(&bad_align.encode(), 1000), "element alignment");
    }

    #[test]
    fn names_are_checked() {
        for (name, fragment) in
            [("", "empty"), ("a/b", "'/'"), ("nul\0", "NUL"), ("..", "not names"), (&"x".repeat(300)[..], "300 bytes")]
        {
            let err = validate_name(name).unwrap_err();
            assert!(matches!(err, Error::SharedName { .. }), "{err:?}");
            assert!(err.to_string().contains(fragment), "{err}");
        }
        validate_name("dcmem-test.1").unwrap();
    }

    #[test]
    #[cfg(miri)]
    fn miri_reports_unsupported() {
        assert!(matches!(SharedBuffer::<u8>::create("x", 1), Err(Error::Unsupported { .. })));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: if cfg!(miri) { 8 } else { 512 },
            failure_persistence: None,
            ..Default::default()
        })]
        /// Arbitrary bytes (and arbitrary mutations of a valid header) never panic the parser,
        /// and whatever it accepts fits the segment.
        #[test]
        fn parse_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            flip in 0usize..64,
            value in proptest::prelude::any::<u8>(),
            size in proptest::prelude::any::<u64>(),
        ) {
            if let Ok(h) = SharedHeader::parse("p", &bytes, size) {
                proptest::prop_assert!(h.segment_size() <= size);
            }
            let mut b = SharedHeader::for_type::<u16>(7, 3).unwrap().encode();
            b[flip] = value;
            if let Ok(h) = SharedHeader::parse("p", &b, size) {
                proptest::prop_assert!(h.data_offset + h.len * u64::from(h.elem_size) <= size);
            }
        }
    }
}
