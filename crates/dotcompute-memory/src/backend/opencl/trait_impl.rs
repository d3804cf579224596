//! The `Backend` implementation of `OpenClBackend`: allocation with zeroing and accounting,
//! blocking and enqueued copies, fills, markers.

use super::backend::OpenClBackend;
use super::discovery::mib;
use super::error::{cl_error, is_oom, BACKEND};
use super::event::{wait_raw, OpenClEvent};
use super::handles::{Mem, RawEvent};
use crate::backend::{Backend, BackendId, DeviceEvent, DeviceMemory, Event, MemoryInfo, PinnedHost, ReadyEvent};
use crate::error::{Error, Result};
use opencl3::command_queue::{enqueue_read_buffer, enqueue_write_buffer, finish};
use opencl3::types::{cl_int, CL_BLOCKING, CL_NON_BLOCKING};
use std::ptr::{self, NonNull};
use std::sync::Arc;

// events follow the trait's contract (see the module docs and each method).
// SAFETY: allocations are tracked per instance and checked on every call; `host_ptr` and
// events follow the trait's contract (see the module docs and each method).
unsafe impl Backend for OpenClBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn id(&self) -> BackendId {
        self.id
    }

    fn device_label(&self) -> String {
        format!("opencl:{}", self.summary.index)
    }

    fn can_copy_from_peer(&self, src: &dyn Backend) -> bool {
        src.downcast_ref::<OpenClBackend>().is_some_and(|peer| self.shares_context_with(peer))
    }

    fn copy_from_peer(
        &self,
        src_backend: &dyn Backend,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.copy_from_context_peer(src_backend, src, src_offset, dst, dst_offset, len)
    }

    fn description(&self) -> String {
        let s = &self.summary;
        format!(
            "OpenCL platform \"{}\" ({}), device \"{}\" ({}, {}), {} global memory, {} max allocation, {} queues",
            s.platform_name,
            s.platform_version,
            s.name,
            s.kind,
            s.version,
            mib(s.global_mem),
            mib(s.max_alloc),
            self.queues.len()
        )
    }

    fn is_unified(&self) -> bool {
        false
    }

    fn memory_info(&self) -> MemoryInfo {
        let used = self.lock().used;
        MemoryInfo {
            total: self.summary.global_mem,
            free: self.summary.global_mem.saturating_sub(used),
            max_allocation: self.summary.max_alloc,
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
        // OpenCL buffers start at CL_DEVICE_MEM_BASE_ADDR_ALIGN; device addresses are never
        // exposed through this API, so a larger `align` has nothing to apply to.
        let bytes = size.max(1);
        if self.options.check_max_alloc
            && bytes as u64 > self.summary.max_alloc
            && bytes as u64 <= self.summary.global_mem
        {
            return Err(Error::InvalidArgument {
                option: "OpenCL allocation size",
                value: format!(
                    "{size} bytes, above this device's largest single allocation of {} bytes (CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
                    self.summary.max_alloc
                ),
                reason: "one OpenCL buffer cannot exceed CL_DEVICE_MAX_MEM_ALLOC_SIZE; split the data into several buffers",
            });
        }
        // Reserve the bytes first, so concurrent allocations cannot both pass the check.
        let free = {
            let mut table = self.lock();
            let free = self.summary.global_mem.saturating_sub(table.used);
            if bytes as u64 > free {
                return Err(Error::allocator_out_of_memory(BACKEND, size as u64, free));
            }
            table.used += bytes as u64;
            free
        };
        let oom = |e: Error| match e {
            Error::Backend { code, .. } if is_oom(code as cl_int) => {
                Error::allocator_out_of_memory(BACKEND, size as u64, free)
            }
            other => other,
        };
        let made = self.create_mem(bytes).map_err(|code| cl_error("clCreateBuffer", code)).and_then(|raw| {
            let mem = Mem { raw, bytes };
            // Fresh memory is zeroed, as the trait promises (clCreateBuffer leaves it
            // undefined). Many drivers commit memory only at first use, so an out-of-memory
            // may show up here rather than in clCreateBuffer.
            let ev = self.enqueue_fill(0, &mem, 0, bytes, 0)?;
            wait_raw(&ev, "clEnqueueFillBuffer")?;
            Ok(mem)
        });
        let mut table = self.lock();
        let mem = match made {
            Ok(mem) => mem,
            Err(e) => {
                table.used -= bytes as u64;
                return Err(oom(e));
            }
        };
        let handle = table.next;
        table.next += 1;
        table.mems.insert(handle, Arc::new(mem));
        drop(table);
        // SAFETY: `handle` names the allocation just inserted, of at least `size` bytes; ids are
        // never reused, so this DeviceMemory is its only owner.
        Ok(unsafe { DeviceMemory::from_raw(self.id, handle, size) })
    }

    fn free(&self, memory: DeviceMemory) -> Result<()> {
        memory.check(self, 0, 0)?;
        let mut table = self.lock();
        match table.mems.remove(&memory.handle()) {
            Some(mem) => {
                table.used -= mem.bytes as u64;
                drop(table);
                // clReleaseMemObject happens when the last Arc goes (here, or when an event
                // that still uses the buffer is dropped); the driver deletes the buffer only once
                // the commands queued on it have finished, so this is stream-ordered.
                drop(mem);
                Ok(())
            }
            None => Err(Error::InvalidHandle {
                backend: BACKEND,
                reason: format!("no live OpenCL allocation with id {} (already freed?)", memory.handle()),
            }),
        }
    }

    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn PinnedHost>> {
        Ok(Box::new(OpenClBackend::allocate_pinned(self, size)?))
    }

    fn host_ptr(&self, _memory: &DeviceMemory) -> Option<NonNull<u8>> {
        None
    }

    fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()> {
        let mem = self.mem(dst, dst_offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the buffer is live and the range checked; `src` is a borrowed slice that stays
        // valid for the whole blocking call, and the event is waited for before returning.
        let ev = unsafe {
            enqueue_write_buffer(
                self.queue_at(0),
                mem.raw.0,
                CL_BLOCKING,
                dst_offset,
                src.len(),
                src.as_ptr().cast(),
                0,
                ptr::null(),
            )
        }
        .map(RawEvent)
        .map_err(|code| cl_error("clEnqueueWriteBuffer", code))?;
        // A blocking write may return once `src` is copied; wait for the command itself so the
        // data is visible to every queue.
        wait_raw(&ev, "clEnqueueWriteBuffer")
    }

    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
        let mem = self.mem(src, src_offset, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: the buffer is live and the range checked; `dst` is an exclusive borrow valid
        // for the whole blocking call, which returns only when the data is in `dst`.
        let ev = unsafe {
            enqueue_read_buffer(
                self.queue_at(0),
                mem.raw.0,
                CL_BLOCKING,
                src_offset,
                dst.len(),
                dst.as_mut_ptr().cast(),
                0,
                ptr::null(),
            )
        }
        .map(RawEvent)
        .map_err(|code| cl_error("clEnqueueReadBuffer", code))?;
        wait_raw(&ev, "clEnqueueReadBuffer")
    }

    fn copy(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        match self.enqueue_copy(0, src, src_offset, dst, dst_offset, len)? {
            Some(ev) => ev.wait(),
            None => Ok(()),
        }
    }

    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
        let mem = self.mem(dst, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let ev = self.enqueue_fill(0, &mem, offset, len, value)?;
        wait_raw(&ev, "clEnqueueFillBuffer")
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
        let mem = self.mem(dst, dst_offset, len)?;
        if len == 0 {
            return Ok(Box::new(ReadyEvent));
        }
        let q = self.queue_at(queue);
        // SAFETY: the buffer is live and the range checked; the caller guarantees `src` stays
        // valid for reads of `len` bytes, unwritten, until the returned event completes.
        let ev =
            unsafe { enqueue_write_buffer(q, mem.raw.0, CL_NON_BLOCKING, dst_offset, len, src.cast(), 0, ptr::null()) }
                .map(RawEvent)
                .map_err(|code| cl_error("clEnqueueWriteBuffer", code))?;
        Ok(Box::new(OpenClEvent::new(ev, "clEnqueueWriteBuffer", q, vec![mem])))
    }

    unsafe fn read_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<Event> {
        let mem = self.mem(src, src_offset, len)?;
        if len == 0 {
            return Ok(Box::new(ReadyEvent));
        }
        let q = self.queue_at(queue);
        // SAFETY: the buffer is live and the range checked; the caller guarantees `dst` stays
        // valid for exclusive writes of `len` bytes until the returned event completes.
        let ev =
            unsafe { enqueue_read_buffer(q, mem.raw.0, CL_NON_BLOCKING, src_offset, len, dst.cast(), 0, ptr::null()) }
                .map(RawEvent)
                .map_err(|code| cl_error("clEnqueueReadBuffer", code))?;
        Ok(Box::new(OpenClEvent::new(ev, "clEnqueueReadBuffer", q, vec![mem])))
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
        match self.enqueue_copy(queue, src, src_offset, dst, dst_offset, len)? {
            Some(ev) => Ok(Box::new(ev)),
            None => Ok(Box::new(ReadyEvent)),
        }
    }

    fn synchronize(&self) -> Result<()> {
        for q in &self.queues {
            finish(q.0).map_err(|code| cl_error("clFinish", code))?;
        }
        Ok(())
    }

    fn enqueue_marker(&self, queue: usize) -> Result<Option<Event>> {
        Ok(Some(Box::new(self.marker(queue)?)))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
