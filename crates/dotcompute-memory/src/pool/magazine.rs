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

/// A block as a buffer holds it: its device region with the region's host address (unified
/// backends), or its host block (discrete backends: the part made at allocation).
pub(crate) enum Block {
    /// A region of unified memory and where the host sees it.
    Unified(DeviceRegion, NonNull<u8>),
    /// A host block (the host part of a buffer on a discrete backend).
    Host(HostBlock),
}

impl Block {
    fn size(&self) -> usize {
        match self {
            Block::Unified(r, _) => r.size(),
            Block::Host(h) => h.size(),
        }
    }

    /// Slot of the block in a magazine, if it may be kept there.
    fn slot(&self) -> Option<usize> {
        let (kind, class) = match self {
            Block::Unified(r, _) => (0, r.class),
            // Host blocks are exactly a class size when they come from the manager.
            Block::Host(h) => (1, class_of(h.size()).filter(|&(_, c)| c == h.size())?.0),
        };
        (class < CLASSES && self.size() <= MAX_BLOCK).then_some(kind * CLASSES + class)
    }
}

/// A parked block with the manager reference that came with it.
struct Parked {
    mm: Arc<ManagerShared>,
    block: Block,
    size: usize,
}

/// One thread's magazine. Empty (and allocation-free) until the thread first drops a buffer.
struct Magazine {
    owner: u64,
    epoch: u64,
    bytes: usize,
    /// The owner's statistics shard of this thread (looked up once, not per allocation).
    shard: Option<Arc<CachePadded<Shard>>>,
    slots: Vec<Vec<Parked>>,
}

impl Magazine {
    const EMPTY: Magazine = Magazine { owner: 0, epoch: 0, bytes: 0, shard: None, slots: Vec::new() };
}

/// Hands every parked block back to its manager's shared caches: when a stale magazine is
/// replaced, when it is flushed, and when its thread exits.
impl Drop for Magazine {
    fn drop(&mut self) {
        if let Some(shard) = &self.shard {
            shard.magazine_bytes.store(0, Relaxed);
        }
        for parked in self.slots.drain(..).flatten() {
            parked.mm.release_block(parked.block);
        }
    }
}

thread_local! {
    static MAGAZINE: RefCell<Magazine> = const { RefCell::new(Magazine::EMPTY) };
}

/// A block of `class` (a host block if `host`, else unified memory) for a new buffer of `bytes`
/// bytes of `mm`, from this thread's magazine, with the manager reference the buffer is to
/// keep; `None` when the magazine has none. Counts the buffer as created.
#[inline]
pub(crate) fn take(mm: &ManagerShared, host: bool, class: usize, bytes: usize) -> Option<(Arc<ManagerShared>, Block)> {
    if class >= CLASSES {
        return None;
    }
    let slot = usize::from(host) * CLASSES + class;
    let epoch = mm.recycle_epoch.load(Relaxed);
    let parked = MAGAZINE
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            if m.owner != mm.id || m.epoch != epoch {
                return None;
            }
            let parked = m.slots.get_mut(slot)?.pop()?;
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

/// Takes back the block of a dropped buffer of `bytes` bytes of `mm`: parks it in this
/// thread's magazine when it fits, else hands it to the manager's shared caches. Counts the
/// buffer as dropped.
#[inline]
pub(crate) fn recycle(mm: Arc<ManagerShared>, block: Block, bytes: usize) {
    let epoch = mm.recycle_epoch.load(Relaxed);
    let slot = match block.slot() {
        Some(slot) if mm.magazine_cap != 0 && epoch != CLOSED => slot,
        _ => {
            mm.stats.buffer_dropped(bytes);
            mm.release_block(block);
            return;
        }
    };
    let size = block.size();
    let mut parked = Some(Parked { mm, block, size });
    let current = MAGAZINE.try_with(|m| {
        let mut m = m.try_borrow_mut().ok()?;
        let p = parked.as_ref()?;
        if m.owner != p.mm.id || m.epoch != epoch {
            return Some(false);
        }
        let Magazine { bytes: held, shard, slots, .. } = &mut *m;
        if *held + size <= p.mm.magazine_cap {
            if let (Some(shard), Some(stack)) = (shard, slots.get_mut(slot)) {
                if stack.len() < PER_CLASS {
                    *held += size;
                    p.mm.stats.buffer_dropped_into_magazine(shard, bytes, *held);
                    stack.extend(parked.take());
                }
            }
        }
        Some(true)
    });
    if let Ok(Some(false)) = current {
        restock(&mut parked, epoch, slot, bytes);
    }
    // Not parked: the magazine is full, busy, or gone (the thread is exiting).
    if let Some(p) = parked {
        p.mm.stats.buffer_dropped(bytes);
        p.mm.release_block(p.block);
    }
}

/// The magazine belongs to another manager or an older epoch: hand its blocks back and start
/// a fresh one for `parked`'s manager, holding `parked`.
#[cold]
fn restock(parked: &mut Option<Parked>, epoch: u64, slot: usize, bytes: usize) {
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
        let (owner, size, shard) = (p.mm.id, p.size, p.mm.stats.thread_shard());
        p.mm.stats.buffer_dropped_into_magazine(&shard, bytes, size);
        let mut slots: Vec<Vec<Parked>> = (0..2 * CLASSES).map(|_| Vec::new()).collect();
        slots[slot].extend(parked.take());
        *m = Magazine { owner, epoch, bytes: size, shard: Some(shard), slots };
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
