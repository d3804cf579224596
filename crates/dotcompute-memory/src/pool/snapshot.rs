//! `MemorySnapshot`: the device pool's segments and blocks at one moment, for finding where
//! memory goes and how fragmented it is (PyTorch's `torch.cuda.memory_snapshot`).

use crate::units::format_bytes_short;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The device memory a manager holds, segment by segment ([`crate::MemoryManager::memory_snapshot`]).
///
/// A block is "in use" when the arena has handed it out: it belongs to a live buffer, or it is
/// parked whole in the pool's per-size-class front cache or in a thread's magazine (those are
/// counted in `front_cached_bytes` and `magazine_bytes`, not marked per block: they are
/// lock-free or thread-local and are not walked).
///
/// ```
/// use dotcompute_memory::{MemoryManager, SimOptions};
///
/// # fn main() -> dotcompute_memory::Result<()> {
/// let mm = MemoryManager::sim(SimOptions::default());
/// let mut a = mm.allocate::<u8>(1 << 20)?;
/// a.ensure_on_device()?;
/// let snapshot = mm.memory_snapshot();
/// assert!(snapshot.device_reserved_bytes >= 1 << 20);
/// assert_eq!(snapshot.in_use_bytes + snapshot.free_bytes, snapshot.device_reserved_bytes);
/// println!("{snapshot}"); // totals, then one line per segment
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// Backend name.
    pub backend: String,
    /// Segments held from the backend, largest first. With expandable segments, each stretch
    /// of mapped memory in the reserved range, all with the range's id and offsets in it.
    pub segments: Vec<SegmentSnapshot>,
    /// Bytes of all segments: the device memory the manager holds from the backend. Host
    /// memory is not included (unlike [`crate::MemoryStatistics::reserved_bytes`]).
    pub device_reserved_bytes: u64,
    /// The same value as `device_reserved_bytes`.
    #[deprecated(note = "use `device_reserved_bytes`: `MemoryStatistics::reserved_bytes` counts host memory too")]
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
    /// Device segments of the small pool (requests up to 1 MiB) and of the large pool:
    /// current, peak and total bytes and counts since the manager was created.
    #[serde(default)]
    pub pools: PoolUsage,
    /// Device allocations that failed with out of memory or the manager's memory limit, after
    /// the pool had released what it could and retried.
    #[serde(default)]
    pub out_of_memory_errors: u64,
    /// Segment allocations the backend refused at first and that were retried after the pool
    /// released its cached memory (PyTorch's "cudaMalloc retries").
    #[serde(default)]
    pub segment_retries: u64,
}

/// Current, peak and total of one quantity (bytes or a count) since the manager was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Now.
    pub current: u64,
    /// Highest `current` seen.
    pub peak: u64,
    /// Sum of every increase.
    pub allocated: u64,
    /// Sum of every decrease.
    pub freed: u64,
}

impl Usage {
    pub(crate) fn add(&mut self, n: u64) {
        self.current += n;
        self.allocated += n;
        self.peak = self.peak.max(self.current);
    }

    pub(crate) fn remove(&mut self, n: u64) {
        self.current = self.current.saturating_sub(n);
        self.freed += n;
    }
}

/// The device pool's memory by pool, as PyTorch splits it: the small pool serves requests up
/// to 1 MiB from 2 MiB segments, the large pool everything else. A block belongs to the pool
/// of the segment it was cut from.
///
/// Reserved bytes are the segments; active bytes the blocks handed out (to live buffers, and
/// parked with dropped buffers in thread magazines); cached bytes the rest of the segments
/// (free blocks, and whole blocks in the pool's front cache), so `cached + active = reserved`
/// at any one moment. Peaks are exact when one thread uses the manager; with several, a peak
/// of active or cached bytes may miss a moment between two threads' updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolUsage {
    /// Bytes of all segments.
    pub bytes: Usage,
    /// Number of segments.
    pub segments: Usage,
    /// Bytes of small-pool segments.
    pub small_bytes: Usage,
    /// Bytes of large-pool segments.
    pub large_bytes: Usage,
    /// Number of small-pool segments.
    pub small_segments: Usage,
    /// Number of large-pool segments.
    pub large_segments: Usage,
    /// Bytes of blocks handed out, both pools.
    pub active_bytes: Usage,
    /// Bytes of blocks handed out from small-pool segments.
    pub small_active_bytes: Usage,
    /// Bytes of blocks handed out from large-pool segments.
    pub large_active_bytes: Usage,
    /// Bytes of segments not handed out, both pools (`allocated`: bytes that became cached, as
    /// segments were added or blocks came back; `freed`: bytes that left, as blocks were handed
    /// out or segments released).
    pub cached_bytes: Usage,
    /// Bytes of small-pool segments not handed out.
    pub small_cached_bytes: Usage,
    /// Bytes of large-pool segments not handed out.
    pub large_cached_bytes: Usage,
}

impl PoolUsage {
    pub(crate) fn segment_added(&mut self, small: bool, bytes: u64) {
        let (b, n) = if small {
            (&mut self.small_bytes, &mut self.small_segments)
        } else {
            (&mut self.large_bytes, &mut self.large_segments)
        };
        b.add(bytes);
        n.add(1);
        self.bytes.add(bytes);
        self.segments.add(1);
    }

    pub(crate) fn segment_removed(&mut self, small: bool, bytes: u64) {
        let (b, n) = if small {
            (&mut self.small_bytes, &mut self.small_segments)
        } else {
            (&mut self.large_bytes, &mut self.large_segments)
        };
        b.remove(bytes);
        n.remove(1);
        self.bytes.remove(bytes);
        self.segments.remove(1);
    }
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

impl fmt::Display for MemorySnapshot {
    /// A summary line with the totals, then one line per segment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = format_bytes_short;
        write!(
            f,
            "device memory on {}: {} in {} segment(s), {} in use, {} free (largest free block {}, fragmentation {:.2}); {} in the front cache, {} in magazines",
            self.backend,
            b(self.device_reserved_bytes),
            self.segments.len(),
            b(self.in_use_bytes),
            b(self.free_bytes),
            b(self.largest_free_block),
            self.fragmentation(),
            b(self.front_cached_bytes),
            b(self.magazine_bytes),
        )?;
        for s in &self.segments {
            let free = s.blocks.iter().filter(|b| b.free).count();
            write!(
                f,
                "\n  segment {} ({} pool): {}{}, {} block(s), {} free",
                s.id,
                if s.small_pool { "small" } else { "large" },
                b(s.size),
                if s.splittable { "" } else { " (oversize, one request)" },
                s.blocks.len(),
                free
            )?;
        }
        Ok(())
    }
}

/// One backend allocation and the blocks the arena cut it into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSnapshot {
    /// Segment id within its manager.
    pub id: u64,
    /// Bytes.
    pub size: u64,
    /// False for an oversize segment that serves one request whole.
    pub splittable: bool,
    /// In the small pool (requests up to 1 MiB); false: the large pool.
    #[serde(default)]
    pub small_pool: bool,
    /// Its blocks by offset; together they cover the segment.
    pub blocks: Vec<BlockSnapshot>,
}

/// A block of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSnapshot {
    /// Offset in the segment.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
    /// Free in the arena (false: handed out).
    pub free: bool,
}
