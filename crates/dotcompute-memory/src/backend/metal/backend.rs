//! `MetalBackend`: the device, its command queues and the allocation table, opening the
//! system's default device, and the helpers the trait implementation builds on: staging
//! buffers, blits committed with an event, and the read-modify-write of partial words.

use super::event::{MetalEvent, Then};
use super::handles::{nil, round_up_to_word, unavailable, Buffer, BACKEND, WORD};
use super::options::{MetalOptions, MetalStorage};
use super::pinned::PinnedRegistry;
use crate::backend::{BackendId, DeviceMemory};
use crate::error::{Error, Result};
use objc2::rc::{autoreleasepool, Retained};
use objc2::runtime::ProtocolObject;
use objc2_metal::{
    MTLBlitCommandEncoder, MTLBuffer, MTLCommandBuffer, MTLCommandEncoder, MTLCommandQueue,
    MTLCreateSystemDefaultDevice, MTLDevice, MTLResourceOptions,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

// `MTLCreateSystemDefaultDevice` finds no device in a process that does not link CoreGraphics
// (the objc2-metal documentation's advice).
#[link(name = "CoreGraphics", kind = "framework")]
extern "C" {}

/// One live allocation: its buffer, and where the allocation starts in it (non-zero only when
/// a shared-storage buffer had to be padded to reach the requested alignment).
pub(super) struct Allocation {
    pub(super) buffer: Buffer,
    pub(super) base: usize,
}

/// The live allocations by id, and the next id (ids are never reused).
pub(super) struct Table {
    pub(super) live: HashMap<u64, Allocation>,
    pub(super) next: u64,
}

/// A Metal device's memory and command queues. See the [module docs](super).
///
/// Opening fails with [`Error::BackendUnavailable`](crate::Error::BackendUnavailable) where
/// the system has no Metal device, so a program can fall back:
///
/// ```no_run
/// use dotcompute_memory::{ManagerOptions, MemoryManager, MetalBackend};
///
/// # fn main() -> dotcompute_memory::Result<()> {
/// let mm = match MetalBackend::new() {
///     Ok(backend) => MemoryManager::with_backend(backend, ManagerOptions::default())?,
///     Err(e) => {
///         eprintln!("{e}; using the CPU");
///         MemoryManager::cpu()
///     }
/// };
/// let mut buf = mm.allocate_from(&[1.0f32; 1024])?;
/// buf.ensure_on_device()?;
/// assert_eq!(buf.to_vec()?, vec![1.0f32; 1024]);
/// # Ok(())
/// # }
/// ```
pub struct MetalBackend {
    pub(super) id: BackendId,
    // Field order is drop order: the allocations, then the queues, then the device.
    pub(super) table: Mutex<Table>,
    pub(super) queues: Vec<Retained<ProtocolObject<dyn MTLCommandQueue>>>,
    pub(super) device: Retained<ProtocolObject<dyn MTLDevice>>,
    /// The resolved storage mode: true for shared, false for private.
    pub(super) shared: bool,
    pub(super) unified_memory: bool,
    pub(super) name: String,
    pub(super) max_buffer: usize,
    pub(super) options: MetalOptions,
    /// Held while a write that covers part of a word is read, merged and written back (see
    /// [`MetalBackend::rewrite`]).
    pub(super) partial_words: Mutex<()>,
    pub(super) pinned: Arc<PinnedRegistry>,
}

impl std::fmt::Debug for MetalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetalBackend")
            .field("id", &self.id)
            .field("device", &self.name)
            .field("storage", &self.storage())
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl MetalBackend {
    /// Opens the system's default Metal device (`MTLCreateSystemDefaultDevice`) with the
    /// storage mode from `DCMEM_METAL_STORAGE` (see [`MetalOptions::from_env`]).
    pub fn new() -> Result<Self> {
        Self::with_options(MetalOptions::from_env()?)
    }

    /// Opens the system's default Metal device with `options`.
    pub fn with_options(options: MetalOptions) -> Result<Self> {
        let device = MTLCreateSystemDefaultDevice().ok_or_else(|| {
            unavailable("MTLCreateSystemDefaultDevice found no Metal device (no Metal-capable GPU in this Mac)")
        })?;
        let unified_memory = device.hasUnifiedMemory();
        let shared = match options.storage {
            MetalStorage::Auto => unified_memory,
            MetalStorage::Shared => true,
            MetalStorage::Private => false,
        };
        let mut queues = Vec::with_capacity(options.queues.max(1));
        for _ in 0..options.queues.max(1) {
            queues.push(device.newCommandQueue().ok_or_else(|| nil("newCommandQueue"))?);
        }
        Ok(MetalBackend {
            id: BackendId::next(),
            table: Mutex::new(Table { live: HashMap::new(), next: 1 }),
            queues,
            name: device.name().to_string(),
            max_buffer: device.maxBufferLength(),
            device,
            shared,
            unified_memory,
            options,
            partial_words: Mutex::new(()),
            pinned: Arc::new(PinnedRegistry::default()),
        })
    }

    /// The storage mode the allocations use: [`MetalStorage::Shared`] or
    /// [`MetalStorage::Private`] (`Auto` resolved).
    pub fn storage(&self) -> MetalStorage {
        if self.shared {
            MetalStorage::Shared
        } else {
            MetalStorage::Private
        }
    }

    /// The options the backend was opened with.
    pub fn options(&self) -> &MetalOptions {
        &self.options
    }

    /// The device, for making pipelines and libraries on it. Valid while the backend lives;
    /// keep it longer with `retain()`.
    pub fn device(&self) -> &ProtocolObject<dyn MTLDevice> {
        &self.device
    }

    /// The backend's command queue `index` (`None` from
    /// [`Backend::queue_count`](crate::backend::Backend::queue_count) on). Queue 0 is the one
    /// device views hand to kernels.
    pub fn queue(&self, index: usize) -> Option<&ProtocolObject<dyn MTLCommandQueue>> {
        self.queues.get(index).map(|q| &**q)
    }

    /// The `MTLBuffer` behind `memory` (a whole allocation: for a pool segment, the segment)
    /// and the byte offset at which the allocation starts in it. The buffer stays valid while
    /// the returned reference lives; its contents belong to `memory`'s owner.
    ///
    /// Errors: [`Error::InvalidHandle`] when `memory` is not a live allocation of this backend.
    pub fn buffer(&self, memory: &DeviceMemory) -> Result<(Retained<ProtocolObject<dyn MTLBuffer>>, usize)> {
        let (buffer, base) = self.allocation(memory, 0, 0)?;
        Ok((buffer.0, base))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks ownership and bounds of `memory`, then returns its buffer and base offset.
    pub(super) fn allocation(&self, memory: &DeviceMemory, offset: usize, len: usize) -> Result<(Buffer, usize)> {
        memory.check(self, offset, len)?;
        let table = self.lock();
        let a = table.live.get(&memory.handle()).ok_or_else(|| Error::InvalidHandle {
            backend: BACKEND,
            reason: format!("no live Metal allocation with id {} (already freed?)", memory.handle()),
        })?;
        Ok((a.buffer.clone(), a.base))
    }

    /// The CPU address of `offset` in a shared-storage allocation, after checking `len` bytes
    /// from there; the returned buffer keeps the memory alive.
    pub(super) fn host_range(&self, memory: &DeviceMemory, offset: usize, len: usize) -> Result<(Buffer, *mut u8)> {
        debug_assert!(self.shared);
        let (buffer, base) = self.allocation(memory, offset, len)?;
        let at = buffer.contents().wrapping_add(base + offset);
        Ok((buffer, at))
    }

    fn queue_at(&self, index: usize) -> &ProtocolObject<dyn MTLCommandQueue> {
        &self.queues[index % self.queues.len()]
    }

    /// A new buffer of `len` bytes (a multiple of [`WORD`]) in shared or private storage, with
    /// hazard tracking (Metal orders the command buffers that use it); `None` when Metal
    /// refuses (out of memory).
    pub(super) fn new_buffer(&self, len: usize, shared: bool) -> Option<Buffer> {
        let storage =
            if shared { MTLResourceOptions::StorageModeShared } else { MTLResourceOptions::StorageModePrivate };
        let options = storage | MTLResourceOptions::HazardTrackingModeTracked;
        self.device.newBufferWithLength_options(len, options).map(Buffer)
    }

    /// A shared-storage staging buffer of at least `len` bytes, or [`Error::OutOfMemory`].
    pub(super) fn staging(&self, len: usize) -> Result<Buffer> {
        let bytes = round_up_to_word(len.max(1)).ok_or_else(|| self.out_of_memory(len))?;
        self.new_buffer(bytes, true).ok_or_else(|| self.out_of_memory(len))
    }

    /// A shared-storage staging buffer holding a copy of `len` bytes at `src`.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of `len` bytes for the duration of the call.
    pub(super) unsafe fn staging_from(&self, src: *const u8, len: usize) -> Result<Buffer> {
        let staging = self.staging(len)?;
        // SAFETY: `src` is readable for `len` bytes (this function's contract); the staging
        // buffer is fresh, shared (so `contents` is a CPU address) and at least `len` long.
        unsafe { std::ptr::copy_nonoverlapping(src, staging.contents(), len) };
        Ok(staging)
    }

    pub(super) fn out_of_memory(&self, requested: usize) -> Error {
        Error::allocator_out_of_memory(BACKEND, requested as u64, self.free_bytes())
    }

    /// `recommendedMaxWorkingSetSize` less `currentAllocatedSize`: Metal's own figure of what
    /// the device can still take with good performance.
    pub(super) fn free_bytes(&self) -> u64 {
        self.device.recommendedMaxWorkingSetSize().saturating_sub(self.device.currentAllocatedSize() as u64)
    }

    /// Encodes into a new command buffer of `queue` with `encode`, commits it, and returns the
    /// event of its completion (`then` runs in the completed handler first, on success).
    pub(super) fn submit(
        &self,
        queue: usize,
        operation: &'static str,
        encode: impl FnOnce(&ProtocolObject<dyn MTLCommandBuffer>) -> Result<()>,
        then: Option<Then>,
    ) -> Result<MetalEvent> {
        // The command buffer is autoreleased by Metal; a pool here releases it on every thread,
        // including threads that have none of their own.
        autoreleasepool(|_| {
            let command_buffer = self.queue_at(queue).commandBuffer().ok_or_else(|| nil("commandBuffer"))?;
            encode(&command_buffer)?;
            Ok(MetalEvent::commit(&command_buffer, operation, then))
        })
    }

    /// [`submit`](Self::submit) and wait for it.
    pub(super) fn run(
        &self,
        queue: usize,
        operation: &'static str,
        encode: impl FnOnce(&ProtocolObject<dyn MTLCommandBuffer>) -> Result<()>,
    ) -> Result<()> {
        use crate::backend::DeviceEvent;
        self.submit(queue, operation, encode, None)?.wait()
    }

    /// Waits for everything committed so far on every queue: an empty command buffer on each
    /// completes after the ones committed before it.
    pub(super) fn drain(&self) -> Result<()> {
        for queue in 0..self.queues.len() {
            self.run(queue, "commit", |_| Ok(()))?;
        }
        Ok(())
    }

    /// Writes `len` bytes at byte `at` of the private buffer `buffer`, where `at` or `len` is
    /// not a multiple of [`WORD`] and so cannot be a blit's destination: under
    /// `partial_words`, after every queue has drained, copies the words covering the range to
    /// a staging buffer, lets `patch` write the range there, and copies the words back, waiting
    /// for each step.
    ///
    /// The bytes of the covering words outside the range belong to the same allocation (every
    /// allocation's length is a multiple of [`WORD`]) and are written back as read. Nothing
    /// else writes them meanwhile: a write covering a whole word would overlap this one, which
    /// no caller may enqueue concurrently, and every other partial-word write takes the same
    /// lock. Draining first puts this write after every copy enqueued before it, as on an
    /// in-order queue.
    pub(super) fn rewrite(&self, buffer: &Buffer, at: usize, len: usize, patch: impl FnOnce(&mut [u8])) -> Result<()> {
        let _serial = self.partial_words.lock().unwrap_or_else(|p| p.into_inner());
        self.drain()?;
        let lo = at / WORD * WORD;
        let hi = round_up_to_word(at + len).ok_or_else(|| self.out_of_memory(len))?;
        debug_assert!(hi <= buffer.length());
        let staging = self.staging(hi - lo)?;
        self.run(0, "copyFromBuffer", |cb| {
            // SAFETY: `lo..hi` lies inside the buffer (its length is a multiple of WORD at or
            // past `at + len`), the staging buffer holds `hi - lo` bytes, and all three numbers
            // are multiples of WORD.
            blit(cb, |e| unsafe { copy(e, buffer, lo, &staging, 0, hi - lo) })
        })?;
        // SAFETY: the staging buffer is shared (a CPU address), `hi - lo` bytes long, written by
        // the completed blit, and referenced by nothing else until it is dropped below.
        let words = unsafe { std::slice::from_raw_parts_mut(staging.contents(), hi - lo) };
        patch(&mut words[at - lo..][..len]);
        self.run(0, "copyFromBuffer", |cb| {
            // SAFETY: as above, in the other direction.
            blit(cb, |e| unsafe { copy(e, &staging, 0, buffer, lo, hi - lo) })
        })
    }

    /// Zeroes a fresh allocation of `len` bytes (a multiple of [`WORD`]).
    pub(super) fn zero(&self, buffer: &Buffer, len: usize) -> Result<()> {
        if self.shared {
            // SAFETY: a fresh shared buffer of at least `len` bytes that nothing else references.
            unsafe { std::ptr::write_bytes(buffer.contents(), 0, len) };
            Ok(())
        } else {
            self.run(0, "fillBuffer", |cb| blit(cb, |e| fill(e, buffer, 0, len, 0)))
        }
    }
}

/// Encodes one blit pass into `command_buffer` with `encode`.
pub(super) fn blit(
    command_buffer: &ProtocolObject<dyn MTLCommandBuffer>,
    encode: impl FnOnce(&ProtocolObject<dyn MTLBlitCommandEncoder>),
) -> Result<()> {
    let encoder = command_buffer.blitCommandEncoder().ok_or_else(|| nil("blitCommandEncoder"))?;
    encode(&encoder);
    encoder.endEncoding();
    Ok(())
}

/// Encodes a copy of `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`.
///
/// # Safety
///
/// Both ranges must lie inside their buffers, must not overlap if the buffers are the same,
/// and the offsets and `len` must be multiples of [`WORD`] (Metal checks none of this).
pub(super) unsafe fn copy(
    encoder: &ProtocolObject<dyn MTLBlitCommandEncoder>,
    src: &Buffer,
    src_offset: usize,
    dst: &Buffer,
    dst_offset: usize,
    len: usize,
) {
    debug_assert!(super::handles::word_aligned(src_offset, len) && dst_offset.is_multiple_of(WORD));
    // SAFETY: forwarded from this function's contract; the command buffer retains both
    // buffers until it has completed.
    unsafe {
        encoder.copyFromBuffer_sourceOffset_toBuffer_destinationOffset_size(&src.0, src_offset, &dst.0, dst_offset, len)
    }
}

/// Encodes a fill of `len` bytes at `offset` of `buffer` with `value`; the range lies inside
/// the buffer and both numbers are multiples of [`WORD`] (checked by the callers).
pub(super) fn fill(
    encoder: &ProtocolObject<dyn MTLBlitCommandEncoder>,
    buffer: &Buffer,
    offset: usize,
    len: usize,
    value: u8,
) {
    debug_assert!(super::handles::word_aligned(offset, len) && offset + len <= buffer.length());
    encoder.fillBuffer_range_value(&buffer.0, objc2_foundation::NSRange::new(offset, len), value);
}
