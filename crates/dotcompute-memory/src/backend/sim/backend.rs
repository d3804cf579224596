//! The `Backend` implementation of the simulated device: every call is checked, counted for
//! the fault plan, performed on the simulated memory, and timed as the options say.

use super::device::{SimBackend, ALIGN, VM_GRANULARITY};
use crate::backend::{Backend, BackendId, BatchWrite, DeviceMemory, Event, MemoryInfo, PinnedHost};
use crate::error::{Direction, Error, Result};
use crate::host::HostBlock;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::time::Instant;

// SAFETY: allocations are tracked per instance and checked on every call; `host_ptr` and
// events follow the trait's contract (see the module docs and each method).
unsafe impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn id(&self) -> BackendId {
        self.id
    }

    fn description(&self) -> String {
        format!(
            "simulated discrete device: {} MiB, latency {:?}, bandwidth {}",
            self.options.capacity >> 20,
            self.options.latency,
            self.options.bandwidth.map(|b| format!("{:.1} GB/s", b / 1e9)).unwrap_or_else(|| "uncapped".into())
        )
    }

    fn device_label(&self) -> String {
        self.label()
    }

    fn is_unified(&self) -> bool {
        false
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn can_copy_from_peer(&self, src: &dyn Backend) -> bool {
        src.downcast_ref::<SimBackend>().is_some_and(|peer| self.reaches(peer))
    }

    /// A direct copy between two devices of one group, taking the simulated time of
    /// [`SimOptions::peer_bandwidth`](super::SimOptions::peer_bandwidth). A fault on either
    /// device (counted on both) fails it before anything is copied.
    fn copy_from_peer(
        &self,
        src_backend: &dyn Backend,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let started = Instant::now();
        let peer =
            src_backend.downcast_ref::<SimBackend>().filter(|peer| self.reaches(peer)).ok_or(Error::Unsupported {
                operation: "SimBackend::copy_from_peer",
                reason: "the source is not a reachable device of this device's group; copy through host memory",
            })?;
        src.check(peer, src_offset, len)?;
        dst.check(self, dst_offset, len)?;
        peer.inject("copy_from_peer")?;
        self.inject("copy_from_peer")?;
        // Locks are taken in instance order, so copies in both directions at once cannot
        // deadlock.
        let copy = |from: &[u8], to: &mut [u8]| crate::ops::copy_into(to, from);
        if peer.id.get() < self.id.get() {
            peer.with_range(src, src_offset, len, |s| self.with_range(dst, dst_offset, len, |d| copy(s, d)))??;
        } else {
            self.with_range(dst, dst_offset, len, |d| peer.with_range(src, src_offset, len, |s| copy(s, d)))??;
        }
        self.sleep_for_peer_copy(started, len);
        Ok(())
    }

    fn memory_info(&self) -> MemoryInfo {
        let used = self.lock().used;
        MemoryInfo {
            total: self.options.capacity as u64,
            free: (self.options.capacity - used) as u64,
            max_allocation: self.options.capacity as u64,
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
        self.inject("allocate")?;
        let mut dev = self.lock();
        let free = self.options.capacity - dev.used;
        if size > free {
            return Err(Error::allocator_out_of_memory("sim", size as u64, free as u64));
        }
        let handle = dev.next;
        dev.next += 1;
        dev.used += size;
        let block = HostBlock::allocate_zeroed(size, ALIGN)?;
        dev.allocations.insert(handle, block);
        // SAFETY: `handle` names the allocation just inserted, of exactly `size` bytes, and is
        // never reused (ids only grow), so this DeviceMemory is its only owner.
        Ok(unsafe { DeviceMemory::from_raw(self.id, handle, size) })
    }

    fn free(&self, memory: DeviceMemory) -> Result<()> {
        memory.check(self, 0, 0)?;
        let mut dev = self.lock();
        match dev.allocations.remove(&memory.handle()) {
            Some(block) => {
                // A reservation counts only its mapped granules.
                dev.used -= match dev.reservations.remove(&memory.handle()) {
                    Some(granules) => granules.iter().filter(|&&m| m).count() * VM_GRANULARITY,
                    None => block.size(),
                };
                Ok(())
            }
            None => Err(Error::InvalidHandle {
                backend: "sim",
                reason: format!("no live allocation with id {}", memory.handle()),
            }),
        }
    }

    fn virtual_memory_granularity(&self) -> Option<usize> {
        self.options.virtual_memory.then_some(VM_GRANULARITY)
    }

    /// Address space costs nothing: the stand-in block is mapped lazily by the host, and only
    /// mapped granules count against the capacity.
    fn reserve_address_space(&self, size: usize) -> Result<DeviceMemory> {
        if !self.options.virtual_memory {
            return Err(Error::Unsupported {
                operation: "SimBackend::reserve_address_space",
                reason: "this simulated device was made with virtual_memory: false",
            });
        }
        let size = size.checked_next_multiple_of(VM_GRANULARITY).ok_or(Error::LengthOverflow {
            len: size,
            element_size: 1,
            type_name: "u8 (rounded to the 2 MiB granularity)",
        })?;
        self.inject("reserve_address_space")?;
        let block = HostBlock::allocate_zeroed(size, ALIGN)?;
        let mut dev = self.lock();
        let handle = dev.next;
        dev.next += 1;
        dev.allocations.insert(handle, block);
        dev.reservations.insert(handle, vec![false; size / VM_GRANULARITY]);
        // SAFETY: `handle` names the reservation just inserted, of exactly `size` bytes, and is
        // never reused, so this DeviceMemory is its only owner.
        Ok(unsafe { DeviceMemory::from_raw(self.id, handle, size) })
    }

    fn map_memory(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        self.change_mapping(reservation, offset, len, true)
    }

    fn unmap_memory(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        self.change_mapping(reservation, offset, len, false)
    }

    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn PinnedHost>> {
        // Page-locked with mlock; over RLIMIT_MEMLOCK this is Error::MemoryLockLimit.
        Ok(Box::new(crate::host::pinned::PinnedBuffer::<u8>::new(size)?))
    }

    fn host_ptr(&self, _memory: &DeviceMemory) -> Option<NonNull<u8>> {
        None
    }

    /// The simulated device memory itself: kernels written as closures run on it.
    fn device_ptr_on_host(&self, memory: &DeviceMemory) -> Option<NonNull<u8>> {
        if memory.owner() != self.id {
            return None;
        }
        NonNull::new(self.lock().allocations.get(&memory.handle())?.as_ptr())
    }

    fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()> {
        let started = Instant::now();
        dst.check(self, dst_offset, src.len())?;
        self.inject("write")?;
        self.with_range(dst, dst_offset, src.len(), |d| crate::ops::copy_into(d, src))?;
        self.sleep_for(started, src.len(), Direction::HostToDevice);
        Ok(())
    }

    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
        let started = Instant::now();
        src.check(self, src_offset, dst.len())?;
        self.inject("read")?;
        let len = dst.len();
        self.with_range(src, src_offset, len, |s| crate::ops::copy_into(dst, s))?;
        self.sleep_for(started, len, Direction::DeviceToHost);
        Ok(())
    }

    fn copy(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let started = Instant::now();
        self.copy_data(src, src_offset, dst, dst_offset, len)?;
        self.sleep_for(started, len, Direction::DeviceToDevice);
        Ok(())
    }

    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
        dst.check(self, offset, len)?;
        self.inject("fill")?;
        self.with_range(dst, offset, len, |d| d.fill(value))
    }

    fn queue_count(&self) -> usize {
        self.options.queues.max(1)
    }

    unsafe fn write_async(
        &self,
        queue: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<Event> {
        let started = Instant::now();
        dst.check(self, dst_offset, len)?;
        if let Some(failed) = self.inject_async("write_async", queue, len, Direction::HostToDevice)? {
            return Ok(failed);
        }
        // SAFETY: the caller guarantees `src` is valid for `len` bytes of reads until the event
        // completes; the simulator reads it now, before returning.
        let bytes = unsafe { std::slice::from_raw_parts(src, len) };
        self.with_range(dst, dst_offset, len, |d| crate::ops::copy_into(d, bytes))?;
        Ok(self.event_for(started, queue, len, Direction::HostToDevice))
    }

    unsafe fn read_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<Event> {
        let started = Instant::now();
        src.check(self, src_offset, len)?;
        if let Some(failed) = self.inject_async("read_async", queue, len, Direction::DeviceToHost)? {
            return Ok(failed);
        }
        // SAFETY: the caller guarantees `dst` is valid for `len` bytes of exclusive writes until
        // the event completes; the simulator writes it now, before returning.
        let out = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        self.with_range(src, src_offset, len, |s| crate::ops::copy_into(out, s))?;
        Ok(self.event_for(started, queue, len, Direction::DeviceToHost))
    }

    unsafe fn write_batch_async(&self, queue: usize, writes: &[BatchWrite<'_>]) -> Result<Event> {
        let started = Instant::now();
        for w in writes {
            w.dst.check(self, w.dst_offset, w.len)?;
        }
        self.submissions.fetch_add(1, Ordering::Relaxed);
        let bytes: usize = writes.iter().map(|w| w.len).sum();
        if let Some(failed) = self.inject_async("write_batch_async", queue, bytes, Direction::HostToDevice)? {
            return Ok(failed);
        }
        let mut total = 0;
        for w in writes {
            // SAFETY: the caller guarantees each `src` is valid for `len` bytes of reads until
            // the event completes; the simulator reads them now.
            let bytes = unsafe { std::slice::from_raw_parts(w.src, w.len) };
            self.with_range(w.dst, w.dst_offset, w.len, |d| crate::ops::copy_into(d, bytes))?;
            total += w.len;
        }
        // One submission: the latency is paid once, the bandwidth for all bytes.
        Ok(self.event_for(started, queue, total, Direction::HostToDevice))
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
        let started = Instant::now();
        self.copy_data(src, src_offset, dst, dst_offset, len)?;
        Ok(self.event_for(started, queue, len, Direction::DeviceToDevice))
    }
}
