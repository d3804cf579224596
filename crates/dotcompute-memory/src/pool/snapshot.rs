//! `MemorySnapshot`: the device pool's segments and blocks at one moment, for finding where
//! memory goes and how fragmented it is (PyTorch's `torch.cuda.memory_snapshot`).

use serde::Serialize;

/// The device memory a manager holds, segment by segment ([`crate::MemoryManager::memory_snapshot`]).
///
/// A block is "in use" when the arena has handed it out: it belongs to a live buffer, or it is
/// parked whole in the pool's per-size-class front cache or in a thread's magazine (those are
/// counted in `front_cached_bytes` and `magazine_bytes`, not marked per block: they are
/// lock-free or thread-local and are not walked).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorySnapshot {
    /// Backend name.
    pub backend: String,
    /// Segments held from the backend, largest first.
    pub segments: Vec<SegmentSnapshot>,
    /// Bytes of all segments (what the manager holds from the backend for device memory).
    pub reserved_bytes: u64,
    /// Bytes in blocks handed out by the arena (live buffers and whole cached regions).
    pub in_use_bytes: u64,
    /// Bytes in free blocks within segments.
    pub free_bytes: u64,
    /// Bytes of whole regions in the pool's front cache (a part of `in_use_bytes` that no
    /// buffer uses).
    pub front_cached_bytes: u64,
    /// Bytes parked in per-thread magazines for this manager (host blocks on discrete
    /// backends, device regions otherwise; see `ManagerOptions::max_pool_bytes`).
    pub magazine_bytes: u64,
    /// The largest free block: the biggest request served without a new segment.
    pub largest_free_block: u64,
}

impl MemorySnapshot {
    /// `1 - largest_free_block / free_bytes`: 0 when the free memory is one block (or there is
    /// none), near 1 when it is scattered in many small blocks.
    pub fn fragmentation(&self) -> f64 {
        if self.free_bytes == 0 {
            0.0
        } else {
            1.0 - self.largest_free_block as f64 / self.free_bytes as f64
        }
    }
}

/// One backend allocation and the blocks the arena cut it into.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentSnapshot {
    /// Segment id within its manager.
    pub id: u64,
    /// Bytes.
    pub size: u64,
    /// False for an oversize segment that serves one request whole.
    pub splittable: bool,
    /// Its blocks by offset; together they cover the segment.
    pub blocks: Vec<BlockSnapshot>,
}

/// A block of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockSnapshot {
    /// Offset in the segment.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
    /// Free in the arena (false: handed out).
    pub free: bool,
}
