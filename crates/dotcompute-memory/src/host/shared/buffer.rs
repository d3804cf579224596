//! `SharedBuffer<T>`: the handle to a named shared segment, its accessors, and what dropping
//! it does to the name (see the `shared` docs).

use super::header::SharedHeader;
use super::name::validate_name;
use super::posix::{self, Mapping};
use crate::element::Element;
#[cfg(doc)]
use crate::error::Error;
use crate::error::{byte_len, Result};
use crate::stats::StatCounters;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A named buffer of `T`s in POSIX shared memory, visible to other processes by name.
///
/// Dereferences to `[T]`. Made by
/// [`MemoryManager::allocate_shared`](crate::MemoryManager::allocate_shared) (the creator) and
/// [`MemoryManager::open_shared`](crate::MemoryManager::open_shared); a process has at most one
/// handle to a segment. See the [module docs](super) for the header, the name's lifetime and the
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
        posix::create::<T>(name, len).map(|m| Self::from_mapping(name, m, true))
    }

    /// Opens segment `name` as `T`s (prefer
    /// [`MemoryManager::open_shared`](crate::MemoryManager::open_shared)).
    ///
    /// Errors: [`Error::SharedName`], [`Error::SharedNotFound`], [`Error::SharedCorrupt`],
    /// [`Error::SharedTypeMismatch`], [`Error::SharedAlreadyOpen`] (this process has a handle
    /// to the segment), [`Error::Os`], [`Error::Unsupported`].
    pub fn open(name: &str) -> Result<Self> {
        validate_name(name)?;
        posix::open::<T>(name).map(|m| Self::from_mapping(name, m, false))
    }
}

impl<T> SharedBuffer<T> {
    /// The handle to a segment `posix` mapped: the creator's removes the name when dropped.
    fn from_mapping(name: &str, m: Mapping, creator: bool) -> Self {
        SharedBuffer {
            name: name.into(),
            map: m.map,
            map_len: m.map_len,
            data: m.data.cast::<T>(),
            len: m.len,
            header: m.header,
            creator,
            removes_name: AtomicBool::new(creator),
            key: m.key,
            stats: None,
        }
    }

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
        posix::unlink_if_ours(&self.name, self.key)
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
        posix::remove(name)
    }

    /// Removes `name` only if its header names a creator process that is no longer running;
    /// returns whether it removed it. Pids are reused, so a live process with the dead
    /// creator's pid keeps the segment (which errs on the side of not deleting data).
    pub fn remove_stale(name: &str) -> Result<bool> {
        validate_name(name)?;
        posix::remove_stale(name)
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
        posix::release(&self.name, self.map, self.map_len, self.key, *self.removes_name.get_mut());
    }
}

crate::buffer_trait::slice_backed_buffer!(SharedBuffer);

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(miri)]
    fn miri_reports_unsupported() {
        use super::SharedBuffer;
        use crate::error::Error;
        assert!(matches!(SharedBuffer::<u8>::create("x", 1), Err(Error::Unsupported { .. })));
    }
}
