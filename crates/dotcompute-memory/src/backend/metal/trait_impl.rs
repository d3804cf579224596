//! The `Backend` implementation of `MetalBackend`: allocation with zeroing, host copies on
//! shared storage, blits with completion events on private storage, markers.

use super::backend::{blit, copy, fill, Allocation, MetalBackend};
use super::handles::{round_up_to_word, word_aligned, HostPtr, BACKEND, WORD};
use crate::backend::{Backend, BackendId, DeviceMemory, Event, MemoryInfo, PinnedHost, ReadyEvent};
use crate::error::{Error, Result};
use objc2_metal::MTLDevice;
use std::ptr::NonNull;

/// GiB with one decimal, for the description.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl MetalBackend {
    /// Host-to-device copy on private storage (see [`Backend::write_async`]).
    ///
    /// # Safety
    ///
    /// As [`Backend::write_async`].
    unsafe fn write_private(
        &self,
        queue: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<Event> {
        let (buffer, base) = self.allocation(dst, dst_offset, len)?;
        if len == 0 {
            return Ok(Box::new(ReadyEvent));
        }
        let at = base + dst_offset;
        if !word_aligned(at, len) {
            // SAFETY: `src` is readable for `len` bytes until this call returns (the caller's
            // contract), and the partial-word write has finished by then.
            let bytes = unsafe { std::slice::from_raw_parts(src, len) };
            self.rewrite(&buffer, at, len, |range| range.copy_from_slice(bytes))?;
            return Ok(Box::new(ReadyEvent));
        }
        let (staging, from) = match self.pinned.find(src, len) {
            Some(found) => found,
            // SAFETY: `src` is readable for `len` bytes (the caller's contract).
            None => (unsafe { self.staging_from(src, len) }?, 0),
        };
        let event = self.submit(
            queue,
            "copyFromBuffer",
            |cb| {
                // SAFETY: the staging range holds `len` bytes (a fresh copy, or the caller's
                // pinned memory, which stays unwritten until the event completes); the device
                // range was checked; all offsets and `len` are multiples of WORD.
                blit(cb, |e| unsafe { copy(e, &staging, from, &buffer, at, len) })
            },
            None,
        )?;
        Ok(Box::new(event))
    }

    /// Device-to-host copy on private storage (see [`Backend::read_async`]).
    ///
    /// # Safety
    ///
    /// As [`Backend::read_async`].
    unsafe fn read_private(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<Event> {
        let (buffer, base) = self.allocation(src, src_offset, len)?;
        if len == 0 {
            return Ok(Box::new(ReadyEvent));
        }
        let at = base + src_offset;
        if word_aligned(at, len) {
            if let Some((pinned, to)) = self.pinned.find(dst, len) {
                // Straight into the caller's pinned memory, which nobody touches until the
                // event completes (the caller's contract).
                // SAFETY: both ranges hold `len` bytes, checked or found above; all offsets and
                // `len` are multiples of WORD.
                let event = self.submit(
                    queue,
                    "copyFromBuffer",
                    |cb| blit(cb, |e| unsafe { copy(e, &buffer, at, &pinned, to, len) }),
                    None,
                )?;
                return Ok(Box::new(event));
            }
        }
        // The words covering the range, into staging; the handler copies the range out.
        let lo = at / WORD * WORD;
        let hi = round_up_to_word(at + len).ok_or_else(|| self.out_of_memory(len))?;
        let staging = self.staging(hi - lo)?;
        let (from, out, kept) = (at - lo, HostPtr::new(dst), staging.clone());
        let then = Box::new(move || {
            // SAFETY: the completed blit wrote `hi - lo` bytes of the shared staging buffer
            // (kept alive by `kept`); `out` is writable for `len` bytes and untouched by anyone
            // else until the event completes, which happens after this copy (the caller's
            // contract).
            unsafe { std::ptr::copy_nonoverlapping(kept.contents().add(from), out.get(), len) }
        });
        let event = self.submit(
            queue,
            "copyFromBuffer",
            // SAFETY: `lo..hi` lies inside the buffer (its length is a multiple of WORD at or
            // past `at + len`) and the staging buffer holds `hi - lo` bytes; all are multiples of
            // WORD.
            |cb| blit(cb, |e| unsafe { copy(e, &buffer, lo, &staging, 0, hi - lo) }),
            Some(then),
        )?;
        Ok(Box::new(event))
    }

    /// Device-to-device copy on private storage (see [`Backend::copy_async`]).
    fn copy_private(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        let (from, from_base) = self.allocation(src, src_offset, len)?;
        let (to, to_base) = self.allocation(dst, dst_offset, len)?;
        if len == 0 {
            return Ok(Box::new(ReadyEvent));
        }
        let (s, d) = (from_base + src_offset, to_base + dst_offset);
        if !word_aligned(s, len) || !d.is_multiple_of(WORD) {
            // A blit cannot move bytes between positions that are not whole words: read the
            // range to the host on `queue` (so after the copies enqueued there), then write it
            // as a partial-word write.
            let mut bytes = vec![0u8; len];
            // SAFETY: `bytes` is ours, `len` bytes long, and the event is waited for before it
            // is used or dropped.
            unsafe { self.read_private(queue, src, src_offset, bytes.as_mut_ptr(), len) }?.wait()?;
            self.rewrite(&to, d, len, |range| range.copy_from_slice(&bytes))?;
            return Ok(Box::new(ReadyEvent));
        }
        let overlap = src.handle() == dst.handle() && s < d + len && d < s + len;
        let event = if overlap {
            // Metal leaves overlapping copies within one buffer undefined: go through a
            // temporary buffer, in two passes (Metal orders passes that share a tracked buffer).
            let tmp = self.new_buffer(len, false).ok_or_else(|| self.out_of_memory(len))?;
            self.submit(
                queue,
                "copyFromBuffer",
                |cb| {
                    // SAFETY: both ranges were checked and `tmp` holds `len` bytes; all offsets
                    // and `len` are multiples of WORD; neither pass overlaps itself.
                    blit(cb, |e| unsafe { copy(e, &from, s, &tmp, 0, len) })?;
                    // SAFETY: as above.
                    blit(cb, |e| unsafe { copy(e, &tmp, 0, &to, d, len) })
                },
                None,
            )?
        } else {
            // SAFETY: both ranges were checked and do not overlap; all offsets and `len` are
            // multiples of WORD.
            self.submit(queue, "copyFromBuffer", |cb| blit(cb, |e| unsafe { copy(e, &from, s, &to, d, len) }), None)?
        };
        Ok(Box::new(event))
    }
}

// SAFETY: allocations are tracked per instance and checked on every call; shared-storage
// `host_ptr`s are the buffers' CPU addresses, valid until freed (the table holds a reference);
// events complete from the command buffers' completed handlers, after their work.
unsafe impl Backend for MetalBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn id(&self) -> BackendId {
        self.id
    }

    fn description(&self) -> String {
        format!(
            "Metal device \"{}\" ({} memory), {} storage, {} recommended working set, {} largest buffer, {} queues",
            self.name,
            if self.unified_memory { "unified" } else { "discrete" },
            self.storage().name(),
            gib(self.device.recommendedMaxWorkingSetSize()),
            gib(self.max_buffer as u64),
            self.queues.len()
        )
    }

    fn is_unified(&self) -> bool {
        self.shared
    }

    fn memory_info(&self) -> MemoryInfo {
        MemoryInfo {
            total: self.device.recommendedMaxWorkingSetSize(),
            free: self.free_bytes(),
            max_allocation: self.max_buffer as u64,
        }
    }

    fn allocate(&self, size: usize, align: usize) -> Result<DeviceMemory> {
        if !align.is_power_of_two() {
            return Err(Error::InvalidArgument {
                option: "alignment",
                value: align.to_string(),
                reason: "must be a power of two",
            });
        }
        let too_large = || Error::InvalidArgument {
            option: "Metal allocation size",
            value: format!(
                "{size} bytes (aligned to {align}), above this device's largest buffer of {} bytes (maxBufferLength)",
                self.max_buffer
            ),
            reason: "one Metal buffer cannot exceed maxBufferLength; split the data into several buffers",
        };
        // Lengths are whole words, so a blit may always cover the words around a range.
        let bytes = round_up_to_word(size.max(1)).filter(|&b| b <= self.max_buffer).ok_or_else(too_large)?;
        let buffer = self.new_buffer(bytes, self.shared).ok_or_else(|| self.out_of_memory(size))?;
        // Private buffers have no CPU address to align; a shared one whose address misses
        // `align` (Metal gives page-aligned memory in practice) is made again with room to skip.
        let (buffer, base) = if !self.shared || (buffer.contents() as usize).is_multiple_of(align) {
            (buffer, 0)
        } else {
            drop(buffer);
            let padded = bytes.checked_add(align).filter(|&b| b <= self.max_buffer).ok_or_else(too_large)?;
            let buffer = self.new_buffer(padded, true).ok_or_else(|| self.out_of_memory(size))?;
            let base = buffer.contents().align_offset(align);
            (buffer, base)
        };
        self.zero(&buffer, buffer.length())?;
        let mut table = self.lock();
        let handle = table.next;
        table.next += 1;
        table.live.insert(handle, Allocation { buffer, base });
        drop(table);
        // SAFETY: `handle` names the allocation just inserted, of at least `size` bytes from
        // `base`; ids are never reused, so this DeviceMemory is its only owner.
        Ok(unsafe { DeviceMemory::from_raw(self.id, handle, size) })
    }

    fn free(&self, memory: DeviceMemory) -> Result<()> {
        memory.check(self, 0, 0)?;
        match self.lock().live.remove(&memory.handle()) {
            // Command buffers retain the buffers their commands use, so copies still in flight
            // keep the memory until they complete: releasing ours is stream-ordered.
            Some(_allocation) => Ok(()),
            None => Err(Error::InvalidHandle {
                backend: BACKEND,
                reason: format!("no live Metal allocation with id {} (already freed?)", memory.handle()),
            }),
        }
    }

    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn PinnedHost>> {
        Ok(Box::new(self.pinned(size)?))
    }

    fn host_ptr(&self, memory: &DeviceMemory) -> Option<NonNull<u8>> {
        if !self.shared {
            return None;
        }
        let (_buffer, at) = self.host_range(memory, 0, 0).ok()?;
        NonNull::new(at)
    }

    fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()> {
        // SAFETY: `src` is borrowed for the whole call, which waits for the event.
        unsafe { self.write_async(0, dst, dst_offset, src.as_ptr(), src.len()) }?.wait()
    }

    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
        // SAFETY: `dst` is borrowed exclusively for the whole call, which waits for the event.
        unsafe { self.read_async(0, src, src_offset, dst.as_mut_ptr(), dst.len()) }?.wait()
    }

    fn copy(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.copy_async(0, src, src_offset, dst, dst_offset, len)?.wait()
    }

    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
        if self.shared {
            let (_buffer, at) = self.host_range(dst, offset, len)?;
            // SAFETY: the range lies inside a live shared allocation (checked; `_buffer` keeps
            // it alive).
            unsafe { std::ptr::write_bytes(at, value, len) };
            return Ok(());
        }
        let (buffer, base) = self.allocation(dst, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let at = base + offset;
        if word_aligned(at, len) {
            self.run(0, "fillBuffer", |cb| blit(cb, |e| fill(e, &buffer, at, len, value)))
        } else {
            self.rewrite(&buffer, at, len, |range| range.fill(value))
        }
    }

    fn queue_count(&self) -> usize {
        self.queues.len()
    }

    unsafe fn write_async(
        &self,
        queue: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<Event> {
        if !self.shared {
            // SAFETY: forwarded from this function's contract.
            return unsafe { self.write_private(queue, dst, dst_offset, src, len) };
        }
        let (_buffer, at) = self.host_range(dst, dst_offset, len)?;
        // SAFETY: the range lies inside a live shared allocation (checked); `src` is readable
        // for `len` bytes (the caller's contract); `copy` allows the two to overlap.
        unsafe { std::ptr::copy(src, at, len) };
        Ok(Box::new(ReadyEvent))
    }

    unsafe fn read_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<Event> {
        if !self.shared {
            // SAFETY: forwarded from this function's contract.
            return unsafe { self.read_private(queue, src, src_offset, dst, len) };
        }
        let (_buffer, at) = self.host_range(src, src_offset, len)?;
        // SAFETY: as in `write_async`, with roles reversed (`dst` is writable for `len` bytes
        // and used by nobody else until this returns).
        unsafe { std::ptr::copy(at, dst, len) };
        Ok(Box::new(ReadyEvent))
    }

    fn copy_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        if !self.shared {
            return self.copy_private(queue, src, src_offset, dst, dst_offset, len);
        }
        let (_from, s) = self.host_range(src, src_offset, len)?;
        let (_to, d) = self.host_range(dst, dst_offset, len)?;
        // SAFETY: both ranges lie inside live shared allocations (checked); `copy` allows
        // overlap.
        unsafe { std::ptr::copy(s, d, len) };
        Ok(Box::new(ReadyEvent))
    }

    fn synchronize(&self) -> Result<()> {
        self.drain()
    }

    /// An empty command buffer committed on `queue`: it completes after every command buffer
    /// committed there before it, kernels included.
    fn enqueue_marker(&self, queue: usize) -> Result<Option<Event>> {
        Ok(Some(Box::new(self.submit(queue, "commit", |_| Ok(()), None)?)))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
