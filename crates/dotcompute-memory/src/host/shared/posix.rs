//! The POSIX calls behind `SharedBuffer`: `shm_open`, `ftruncate`, `pread`, `mmap`,
//! `shm_unlink`, and the registry that keeps one handle per segment in this process. Without
//! POSIX shared memory (and under Miri) every call is `Error::Unsupported`.

use super::header::SharedHeader;
use crate::element::Element;
use crate::error::{Error, Result};
use std::ptr::NonNull;

/// A segment mapped by [`create`] or [`open`], for a `SharedBuffer` to own.
#[cfg_attr(not(all(unix, not(miri))), allow(dead_code))]
pub(super) struct Mapping {
    /// Start of the mapping (the header).
    pub(super) map: NonNull<u8>,
    /// Length of the mapping.
    pub(super) map_len: usize,
    /// Start of the data, `header.data_offset` bytes in.
    pub(super) data: NonNull<u8>,
    /// Number of elements.
    pub(super) len: usize,
    pub(super) header: SharedHeader,
    /// (device, inode) of the segment.
    pub(super) key: (u64, u64),
}

pub(super) use sys::{create, open, release, remove, remove_stale, unlink_if_ours};

#[cfg(all(unix, not(miri)))]
mod sys {
    use super::*;
    use crate::host::shared::header::HEADER_SIZE;
    use crate::host::{mmap, os};
    use rustix::fs::Mode;
    use rustix::io::Errno;
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
        let meta = file.metadata().map_err(|e| Error::from_io("fstat", name, &e))?;
        Ok((meta.dev(), meta.ino(), meta.size()))
    }

    /// Maps `len` bytes of `file` shared read-write.
    fn map(file: &File, len: usize, name: &str) -> Result<NonNull<u8>> {
        mmap::shared(file, len).map_err(|e| os::os_error("mmap", format!("shared buffer {name:?} ({len} bytes)"), e))
    }

    fn existing_creator(name: &str) -> Option<u32> {
        let fd = rustix::shm::open(path(name), OFlags::RDONLY, Mode::empty()).ok()?;
        let file = File::from(fd);
        let mut b = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut b, 0).ok()?;
        let size = file.metadata().ok()?.size();
        SharedHeader::parse(name, &b, size).ok().map(|h| h.creator_pid)
    }

    pub(crate) fn create<T: Element>(name: &str, len: usize) -> Result<Mapping> {
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
        file.set_len(size).map_err(|e| cleanup(Error::from_io("ftruncate", format!("shared buffer {name:?}"), &e)))?;
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
        let data = unsafe { base.as_ptr().add(header.data_offset as usize) };
        Ok(Mapping {
            map: base,
            map_len,
            data: NonNull::new(data).expect("inside a mapping"),
            len,
            header,
            key: (dev, ino),
        })
    }

    pub(crate) fn open<T: Element>(name: &str) -> Result<Mapping> {
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
                .map_err(|e| Error::from_io("pread", format!("shared buffer {name:?}"), &e))?;
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
        let data = unsafe { base.as_ptr().add(header.data_offset as usize) };
        Ok(Mapping {
            map: base,
            map_len,
            data: NonNull::new(data).expect("inside a mapping"),
            len,
            header,
            key: (dev, ino),
        })
    }

    /// Unlinks `name` if it still names segment `key`.
    pub(crate) fn unlink_if_ours(name: &str, key: (u64, u64)) -> Result<()> {
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
    pub(crate) fn release(name: &str, map: NonNull<u8>, map_len: usize, key: (u64, u64), remove_name: bool) {
        // SAFETY: the mapping is this handle's own and nothing borrows from it any more.
        unsafe { mmap::unmap(map, map_len) };
        if remove_name {
            let _ = unlink_if_ours(name, key);
        }
        registry(|r| r.remove(&key));
    }

    pub(crate) fn remove(name: &str) -> Result<()> {
        match rustix::shm::unlink(path(name)) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => Err(Error::SharedNotFound { name: name.into() }),
            Err(e) => Err(os::os_error("shm_unlink", format!("shared buffer {name:?}"), e)),
        }
    }

    pub(crate) fn remove_stale(name: &str) -> Result<bool> {
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

    pub(crate) fn create<T: Element>(_: &str, _: usize) -> Result<Mapping> {
        unsupported()
    }
    pub(crate) fn open<T: Element>(_: &str) -> Result<Mapping> {
        unsupported()
    }
    pub(crate) fn unlink_if_ours(_: &str, _: (u64, u64)) -> Result<()> {
        unsupported()
    }
    pub(crate) fn release(_: &str, _: NonNull<u8>, _: usize, _: (u64, u64), _: bool) {}
    pub(crate) fn remove(_: &str) -> Result<()> {
        unsupported()
    }
    pub(crate) fn remove_stale(_: &str) -> Result<bool> {
        unsupported()
    }
}
