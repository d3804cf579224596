//! File-backed buffers: [`MappedBuffer<T>`] (read-only) and [`MappedBufferMut<T>`]
//! (read-write, changes go to the file), over `memmap2`.
//!
//! The file's pages are loaded on first touch and can be evicted again by the kernel, so a
//! data set larger than RAM can be used as a `[T]`, and loading a file costs no copy.
//! Element counts come from the file size, which must be a multiple of `size_of::<T>()`.
//!
//! Opening is `unsafe` for the same reason as `memmap2::Mmap::map`: the slice is only sound
//! while nobody else modifies or truncates the file (truncation makes accesses fault with
//! SIGBUS; modification changes a `&[T]` under our feet).

use crate::element::Element;
use crate::error::{byte_len, Error, Result};
use std::fs::{File, OpenOptions};
use std::ops::{Deref, DerefMut};
use std::path::Path;

fn element_count<T: Element>(size: u64) -> Result<usize> {
    let elem = std::mem::size_of::<T>() as u64;
    let size_usize = usize::try_from(size).map_err(|_| Error::LengthOverflow {
        len: usize::MAX,
        element_size: 1,
        type_name: "u8 (file size does not fit in usize)",
    })?;
    if elem == 0 || !size.is_multiple_of(elem) {
        return Err(Error::CastMismatch {
            len: size_usize,
            from: "u8 (file bytes)",
            from_size: 1,
            to: std::any::type_name::<T>(),
            to_size: elem as usize,
            reason: "the file size is not a multiple of the element size (is this the right file and type?)",
        });
    }
    Ok((size / elem) as usize)
}

fn slice_of<T: Element>(bytes: &[u8], len: usize) -> &[T] {
    if len == 0 {
        return &[];
    }
    // The mapping starts on a page boundary, so every Element alignment (<= page) holds.
    bytemuck::cast_slice(&bytes[..len * std::mem::size_of::<T>()])
}

/// A read-only file mapping viewed as `[T]`.
#[derive(Debug)]
pub struct MappedBuffer<T> {
    map: Option<memmap2::Mmap>,
    len: usize,
    _marker: std::marker::PhantomData<T>,
}

impl<T: Element> MappedBuffer<T> {
    /// Maps the file at `path` read-only.
    ///
    /// Errors: [`Error::Os`] (open/mmap), [`Error::CastMismatch`] when the file size is not
    /// a multiple of `size_of::<T>()`.
    ///
    /// # Safety
    ///
    /// While the buffer lives, no one (in this or another process) may modify or truncate
    /// the file.
    pub unsafe fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::from_io("open", path.display().to_string(), &e))?;
        let size = file.metadata().map_err(|e| Error::from_io("fstat", path.display().to_string(), &e))?.len();
        let len = element_count::<T>(size)?;
        let map = if size == 0 {
            None
        } else {
            // SAFETY: the caller promises nobody modifies or truncates the file meanwhile.
            Some(
                unsafe { memmap2::Mmap::map(&file) }
                    .map_err(|e| Error::from_io("mmap", path.display().to_string(), &e))?,
            )
        };
        Ok(MappedBuffer { map, len, _marker: std::marker::PhantomData })
    }
}

impl<T: Element> Deref for MappedBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        slice_of(self.map.as_deref().unwrap_or(&[]), self.len)
    }
}

/// A read-write shared file mapping viewed as `[T]`; writes reach the file (call
/// [`MappedBufferMut::flush`] to wait for them to be on disk).
#[derive(Debug)]
pub struct MappedBufferMut<T> {
    map: Option<memmap2::MmapMut>,
    len: usize,
    _marker: std::marker::PhantomData<T>,
}

impl<T: Element> MappedBufferMut<T> {
    /// Creates (or replaces) the file at `path` to hold `len` zeroed elements and maps it.
    /// The new file is made beside `path` under a temporary name and renamed over it only once
    /// it is sized and mapped, so a failure leaves an existing file at `path` as it was.
    ///
    /// Errors: [`Error::LengthOverflow`], [`Error::Os`].
    ///
    /// # Safety
    ///
    /// As [`MappedBuffer::open`]: nobody else may modify or truncate the file while mapped.
    pub unsafe fn create(path: impl AsRef<Path>, len: usize) -> Result<Self> {
        let path = path.as_ref();
        let bytes = byte_len::<T>(len)?;
        let temporary = temporary_beside(path);
        let name = || temporary.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(|e| Error::from_io("open", name(), &e))?;
        let discard = |e: Error| {
            let _ = std::fs::remove_file(&temporary);
            e
        };
        file.set_len(bytes as u64).map_err(|e| discard(Error::from_io("ftruncate", name(), &e)))?;
        // SAFETY: forwarded to the caller (the file is new, and `path` names it from the rename
        // below on).
        let mapped = unsafe { Self::map(file, path, len, bytes as u64) }.map_err(discard)?;
        std::fs::rename(&temporary, path)
            .map_err(|e| discard(Error::from_io("rename", format!("{} -> {}", name(), path.display()), &e)))?;
        Ok(mapped)
    }

    /// Maps an existing file read-write.
    ///
    /// Errors: [`Error::Os`], [`Error::CastMismatch`] (size not a multiple of the element).
    ///
    /// # Safety
    ///
    /// As [`MappedBuffer::open`].
    pub unsafe fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::from_io("open", path.display().to_string(), &e))?;
        let size = file.metadata().map_err(|e| Error::from_io("fstat", path.display().to_string(), &e))?.len();
        let len = element_count::<T>(size)?;
        // SAFETY: forwarded to the caller.
        unsafe { Self::map(file, path, len, size) }
    }

    /// # Safety
    ///
    /// As [`MappedBuffer::open`].
    unsafe fn map(file: File, path: &Path, len: usize, size: u64) -> Result<Self> {
        let map = if size == 0 {
            None
        } else {
            // SAFETY: the caller promises nobody else modifies or truncates the file.
            Some(
                unsafe { memmap2::MmapMut::map_mut(&file) }
                    .map_err(|e| Error::from_io("mmap", path.display().to_string(), &e))?,
            )
        };
        Ok(MappedBufferMut { map, len, _marker: std::marker::PhantomData })
    }

    /// Writes dirty pages to the file and waits (`msync(MS_SYNC)`).
    pub fn flush(&self) -> Result<()> {
        match &self.map {
            Some(m) => m.flush().map_err(|e| Error::from_io("msync", format!("{} bytes", m.len()), &e)),
            None => Ok(()),
        }
    }
}

impl<T: Element> Deref for MappedBufferMut<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        slice_of(self.map.as_deref().unwrap_or(&[]), self.len)
    }
}

impl<T: Element> DerefMut for MappedBufferMut<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let len = self.len;
        match self.map.as_deref_mut() {
            Some(bytes) if len > 0 => bytemuck::cast_slice_mut(&mut bytes[..len * std::mem::size_of::<T>()]),
            _ => &mut [],
        }
    }
}

/// A fresh name in `path`'s directory for a file that becomes `path` by renaming.
fn temporary_beside(path: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{base}.{}.{unique}.dcmem-tmp", std::process::id()))
}
