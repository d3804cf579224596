//! Per-thread magazines: the blocks of small buffers a thread dropped, kept by that thread for
//! its next allocations of the same size class.
//!
//! A buffer allocated and dropped on one thread is the common case (temporaries, per-request
//! scratch). Served through the shared caches, that pair costs several atomic read-modify-writes
//! (queue pop and push, the cached-bytes counter, the manager's reference count). Served from
//! the thread's magazine (Bonwick & Adams' name; tcmalloc's and jemalloc's thread caches, .NET's
//! per-thread `ArrayPool` storage) it costs none: the magazine is a plain thread-local stack, and
//! each entry keeps the strong manager reference of the buffer that dropped it, which the next
//! buffer takes over, so not even the reference count is touched.
//!
//! # Bounds and reclaim
//!
//! - Only blocks up to [`MAX_BLOCK`] are kept, at most [`PER_CLASS`] per size class, and at most
//!   the manager's `magazine_cap` bytes per thread (`min(2 MiB, max_pool_bytes / 16)`, 0 without
//!   pooling).
//! - A magazine serves one manager at a time; using another manager on the thread hands the
//!   blocks back to the first one's shared caches.
//! - `trim_excess`, each maintenance pass and an out-of-memory retry bump the manager's
//!   *recycle epoch*: every thread hands its magazine back the next time it drops a buffer of
//!   that manager. `trim_excess` and the out-of-memory retry also empty the calling thread's
//!   magazine at once; other threads' magazines cannot be reached without making every
//!   allocation pay for synchronisation, so up to `magazine_cap` bytes per thread stay there
//!   until that thread uses the manager again or exits (thread exit hands them back).
//! - When the last `MemoryManager` handle is dropped the epoch is closed: buffers dropped later
//!   go straight back to the shared caches, so the manager (and its backend memory) is released
//!   once its buffers are gone, except for blocks parked in magazines of other threads that are
//!   still running, which go back when those threads next use any manager or exit.
//!
//! Blocks in magazines count as cached memory in [`crate::MemoryStatistics::cached_bytes`].

use crate::backend::region::DeviceRegion;
use crate::host::HostBlock;
use crate::manager::ManagerShared;
use crate::pool::size_class::class_of;
use crate::stats::Shard;
use crossbeam_utils::CachePadded;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Largest block a magazine keeps.
pub(crate) const MAX_BLOCK: usize = 1 << 20;
/// Size classes up to [`MAX_BLOCK`] (`class_of(MAX_BLOCK).0 + 1`, checked by a test).
const CLASSES: usize = 45;
/// Blocks kept per size class and kind.
pub(crate) const PER_CLASS: usize = 8;
/// Upper bound of a thread's magazine, in bytes.
pub(crate) const MAX_THREAD_BYTES: usize = 2 << 20;
/// A closed epoch: the manager has no handle left, so nothing more is parked for it.
pub(crate) const CLOSED: u64 = u64::MAX;

/// The region of a buffer on unified memory, with the host address of its bytes.
pub(crate) struct UnifiedBlock {
    pub(crate) region: DeviceRegion,
    pub(crate) ptr: NonNull<u8>,
}

/// What a buffer parks: the block made at its allocation. Each kind has its own stacks, so
/// the fast path copies plain structs, not an enum whose tag shares bytes with its payload (a
/// 16-byte copy of bytes just written piecewise stalls store forwarding, which measured at a
/// fifth of a small allocate + drop).
pub(crate) trait Parkable: Sized {
    /// This kind's stacks, one per size class.
    fn stacks(m: &mut Magazine) -> &mut Vec<Vec<Parked<Self>>>;
    /// Hands the block back to its manager's shared caches.
    fn release(self, mm: &ManagerShared);
}

impl Parkable for UnifiedBlock {
    fn stacks(m: &mut Magazine) -> &mut Vec<Vec<Parked<Self>>> {
        &mut m.unified
    }
    fn release(self, mm: &ManagerShared) {
        mm.release_device(self.region);
    }
}

impl Parkable for HostBlock {
    fn stacks(m: &mut Magazine) -> &mut Vec<Vec<Parked<Self>>> {
        &mut m.host
    }
    fn release(self, mm: &ManagerShared) {
        mm.release_host(self);
    }
}

/// Where a buffer's block would be parked: `(size class, block size)`, `None` if it may not
/// be. Read from the buffer before the block is moved out of it (same reason as above).
#[inline]
pub(crate) fn slot_of_region(region: &DeviceRegion) -> Option<(usize, usize)> {
    (region.class < CLASSES && region.size() <= MAX_BLOCK).then_some((region.class, region.size()))
}

/// As [`slot_of_region`], for a host block (exactly a class size when it comes from the
/// manager).
#[inline]
pub(crate) fn slot_of_host(host: &HostBlock) -> Option<(usize, usize)> {
    let size = host.size();
    let class = class_of(size).filter(|&(_, c)| c == size)?.0;
    (class < CLASSES && size <= MAX_BLOCK).then_some((class, size))
}

/// A parked block with the manager reference that came with it.
pub(crate) struct Parked<B> {
    mm: Arc<ManagerShared>,
    block: B,
    size: usize,
}

/// One thread's magazine. Empty (and allocation-free) until the thread first drops a buffer.
pub(crate) struct Magazine {
    owner: u64,
    epoch: u64,
    bytes: usize,
    /// The owner's statistics shard of this thread (looked up once, not per allocation).
    shard: Option<Arc<CachePadded<Shard>>>,
    unified: Vec<Vec<Parked<UnifiedBlock>>>,
    host: Vec<Vec<Parked<HostBlock>>>,
}

impl Magazine {
    const EMPTY: Magazine =
        Magazine { owner: 0, epoch: 0, bytes: 0, shard: None, unified: Vec::new(), host: Vec::new() };
}

/// Hands every parked block back to its manager's shared caches: when a stale magazine is
/// replaced, when it is flushed, and when its thread exits.
impl Drop for Magazine {
    fn drop(&mut self) {
        if let Some(shard) = &self.shard {
            shard.magazine_bytes.store(0, Relaxed);
        }
        for p in self.unified.drain(..).flatten() {
            p.block.release(&p.mm);
        }
        for p in self.host.drain(..).flatten() {
            p.block.release(&p.mm);
        }
    }
}

thread_local! {
    static MAGAZINE: RefCell<Magazine> = const { RefCell::new(Magazine::EMPTY) };
}

/// A block of `class` for a new buffer of `bytes` bytes of `mm`, from this thread's magazine,
/// with the manager reference the buffer is to keep; `None` when the magazine has none.
/// Counts the buffer as created.
#[inline]
pub(crate) fn take<B: Parkable>(mm: &ManagerShared, class: usize, bytes: usize) -> Option<(Arc<ManagerShared>, B)> {
    let epoch = mm.recycle_epoch.load(Relaxed);
    let parked = MAGAZINE
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            if m.owner != mm.id || m.epoch != epoch {
                return None;
            }
            let parked = B::stacks(&mut m).get_mut(class)?.pop()?;
            m.bytes -= parked.size;
            if let Some(shard) = &m.shard {
                mm.stats.buffer_created_from_magazine(shard, bytes, m.bytes);
            }
            Some(parked)
        })
        .ok()
        .flatten()?;
    Some((parked.mm, parked.block))
}

/// Takes back the block of a dropped buffer of `bytes` bytes of `mm` (`slot` from
/// [`slot_of_region`] / [`slot_of_host`]): parks it in this thread's magazine when it fits,
/// else hands it to the manager's shared caches. Counts the buffer as dropped.
#[inline]
pub(crate) fn recycle<B: Parkable>(mm: Arc<ManagerShared>, block: B, slot: Option<(usize, usize)>, bytes: usize) {
    let epoch = mm.recycle_epoch.load(Relaxed);
    let (class, size) = match slot {
        Some(slot) if mm.magazine_cap != 0 && epoch != CLOSED => slot,
        _ => {
            mm.stats.buffer_dropped(bytes);
            block.release(&mm);
            return;
        }
    };
    let mut parked = Some(Parked { mm, block, size });
    let current = MAGAZINE.try_with(|m| {
        let mut m = m.try_borrow_mut().ok()?;
        let p = parked.as_ref()?;
        if m.owner != p.mm.id || m.epoch != epoch {
            return Some(false);
        }
        let held = m.bytes + size;
        if held <= p.mm.magazine_cap && B::stacks(&mut m).get(class).is_some_and(|s| s.len() < PER_CLASS) {
            m.bytes = held;
            if let Some(shard) = &m.shard {
                p.mm.stats.buffer_dropped_into_magazine(shard, bytes, held);
            }
            B::stacks(&mut m)[class].extend(parked.take());
        }
        Some(true)
    });
    if let Ok(Some(false)) = current {
        restock(&mut parked, epoch, class, bytes);
    }
    // Not parked: the magazine is full, busy, or gone (the thread is exiting).
    if let Some(p) = parked {
        p.mm.stats.buffer_dropped(bytes);
        p.block.release(&p.mm);
    }
}

/// The magazine belongs to another manager or an older epoch: hand its blocks back and start
/// a fresh one for `parked`'s manager, holding `parked`.
#[cold]
fn restock<B: Parkable>(parked: &mut Option<Parked<B>>, epoch: u64, class: usize, bytes: usize) {
    // First the stale magazine goes, outside the borrow (handing blocks back calls into the
    // pools) and before the fresh one counts its bytes (both may share a statistics shard).
    let stale = MAGAZINE.try_with(|m| m.try_borrow_mut().ok().map(|mut m| std::mem::replace(&mut *m, Magazine::EMPTY)));
    drop(stale);
    let _ = MAGAZINE.try_with(|m| {
        let mut m = m.try_borrow_mut().ok()?;
        let p = parked.as_ref()?;
        if m.owner != 0 || p.size > p.mm.magazine_cap {
            return None;
        }
        let (size, shard) = (p.size, p.mm.stats.thread_shard());
        p.mm.stats.buffer_dropped_into_magazine(&shard, bytes, size);
        let mut fresh = Magazine {
            owner: p.mm.id,
            epoch,
            bytes: size,
            shard: Some(shard),
            unified: (0..CLASSES).map(|_| Vec::new()).collect(),
            host: (0..CLASSES).map(|_| Vec::new()).collect(),
        };
        B::stacks(&mut fresh)[class].extend(parked.take());
        *m = fresh;
        Some(())
    });
}

/// Empties this thread's magazine if it holds blocks of `mm`; true if it held any.
pub(crate) fn flush_current(mm: &ManagerShared) -> bool {
    let old = MAGAZINE
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            (m.owner == mm.id && m.bytes > 0).then(|| std::mem::replace(&mut *m, Magazine::EMPTY))
        })
        .ok()
        .flatten();
    old.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_count_matches_max_block() {
        assert_eq!(class_of(MAX_BLOCK).map(|(i, _)| i + 1), Some(CLASSES));
    }
}
