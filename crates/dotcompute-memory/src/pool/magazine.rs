//! Per-thread magazines: the blocks of small buffers a thread dropped, kept by that thread for
//! its next allocations of the same size class.
//!
//! A buffer allocated and dropped on one thread is the common case (temporaries, per-request
//! scratch). Served through the shared caches, that pair costs several atomic read-modify-writes
//! (queue pop and push, the cached-bytes counter, the manager's reference count) at ~8.5 ns each
//! here. Served from the thread's magazine (Bonwick & Adams' name; tcmalloc's and jemalloc's
//! thread caches, .NET's per-thread `ArrayPool` storage) it costs none: the magazine is a plain
//! thread-local stack of whole retired buffer nodes (`buffer::node`), each still holding its
//! block and its manager reference, so reusing one is a pop and a reset of a few fields.
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
use crate::buffer::raw::RawBuffer;
use crate::host::HostBlock;
use crate::manager::ManagerShared;
use crate::pool::size_class::class_of;
use crate::stats::Shard;
use crossbeam_utils::CachePadded;
use std::cell::RefCell;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Largest block a magazine keeps.
pub(crate) const MAX_BLOCK: usize = 1 << 20;
/// Size classes up to [`MAX_BLOCK`] (`class_of(MAX_BLOCK).0 + 1`, checked by a test).
const CLASSES: usize = 45;
/// Nodes kept per size class and kind.
pub(crate) const PER_CLASS: usize = 8;
/// Upper bound of a thread's magazine, in bytes.
pub(crate) const MAX_THREAD_BYTES: usize = 2 << 20;
/// A closed epoch: the manager has no handle left, so nothing more is parked for it.
pub(crate) const CLOSED: u64 = u64::MAX;

/// The kinds of node a magazine keeps apart, by the block made at allocation.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// Unified memory: one region is both parts.
    Unified = 0,
    /// Discrete backend, a buffer allocated with its host part.
    Host = 1,
    /// Discrete backend, a device-only buffer (`allocate_device`).
    Device = 2,
}

const KINDS: usize = 3;

/// The magazine slot of a buffer of `kind` whose block is `size` bytes of size class `class`:
/// `(slot, size)`, `None` if it may not be parked.
#[inline]
pub(crate) fn slot_of(kind: Kind, class: usize, size: usize) -> Option<(usize, usize)> {
    (class < CLASSES && size <= MAX_BLOCK).then_some((kind as usize * CLASSES + class, size))
}

/// The magazine slot of a buffer whose block is `region` (unified memory, or the device part
/// of a device-only buffer).
#[inline]
pub(crate) fn slot_of_region(kind: Kind, region: &DeviceRegion) -> Option<(usize, usize)> {
    slot_of(kind, region.class, region.size())
}

/// As [`slot_of_region`], for a buffer whose block is the host block `host` (exactly a class
/// size when it comes from the manager).
#[inline]
pub(crate) fn slot_of_host(host: &HostBlock) -> Option<(usize, usize)> {
    let size = host.size();
    let class = class_of(size).filter(|&(_, c)| c == size)?.0;
    slot_of(Kind::Host, class, size)
}

/// One thread's magazine. Empty (and allocation-free) until the thread first drops a buffer.
struct Magazine {
    owner: u64,
    epoch: u64,
    bytes: usize,
    /// The owner's statistics shard of this thread (looked up once, not per allocation).
    shard: Option<Arc<CachePadded<Shard>>>,
    /// Retired nodes with their block sizes, by slot (`Kind` × size class).
    slots: Vec<Vec<(Box<RawBuffer>, usize)>>,
}

impl Magazine {
    const EMPTY: Magazine = Magazine { owner: 0, epoch: 0, bytes: 0, shard: None, slots: Vec::new() };
}

/// Hands every parked block back to its manager's shared caches (dropping a node releases its
/// memory): when a stale magazine is replaced, when it is flushed, and when its thread exits.
impl Drop for Magazine {
    fn drop(&mut self) {
        if let Some(shard) = &self.shard {
            shard.magazine_bytes.store(0, Relaxed);
        }
    }
}

thread_local! {
    static MAGAZINE: RefCell<Magazine> = const { RefCell::new(Magazine::EMPTY) };
}

/// A retired node of `mm` of `kind` for a new buffer of `bytes` bytes in size class `class`,
/// from this thread's magazine; `None` when it has none. Counts the buffer as created (the
/// caller resets the node with `RawBuffer::reuse`).
#[inline]
pub(crate) fn take(mm: &ManagerShared, kind: Kind, class: usize, bytes: usize) -> Option<Box<RawBuffer>> {
    if class >= CLASSES || !mm.stats.thread_ready() {
        return None;
    }
    let slot = kind as usize * CLASSES + class;
    let epoch = mm.recycle_epoch.load(Relaxed);
    MAGAZINE
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            if m.owner != mm.id || m.epoch != epoch {
                return None;
            }
            let (node, size) = m.slots.get_mut(slot)?.pop()?;
            m.bytes -= size;
            if let Some(shard) = &m.shard {
                mm.stats.buffer_created_from_magazine(shard, bytes, m.bytes);
            }
            Some(node)
        })
        .ok()
        .flatten()
}

/// Parks the retired `node` (of a buffer of `bytes` bytes, whose block of `size` bytes goes to
/// `slot`) in this thread's magazine and counts the buffer as dropped; gives it back when it
/// does not fit (full, busy, or the thread is exiting).
#[inline]
pub(crate) fn park(node: Box<RawBuffer>, slot: usize, size: usize, bytes: usize) -> Option<Box<RawBuffer>> {
    let mm = node.manager();
    let epoch = mm.recycle_epoch.load(Relaxed);
    if mm.magazine_cap == 0 || epoch == CLOSED || !mm.stats.thread_ready() {
        flush_if_owner_closed();
        return Some(node);
    }
    let mut node = Some(node);
    let current = MAGAZINE.try_with(|m| {
        let mut m = m.try_borrow_mut().ok()?;
        let mm = node.as_ref()?.manager();
        if m.owner != mm.id || m.epoch != epoch {
            return Some(false);
        }
        let held = m.bytes + size;
        if held <= mm.magazine_cap && m.slots.get(slot).is_some_and(|s| s.len() < PER_CLASS) {
            if let Some(shard) = &m.shard {
                mm.stats.buffer_dropped_into_magazine(shard, bytes, held);
            }
            m.bytes = held;
            if let Some(n) = node.take() {
                m.slots[slot].push((n, size));
            }
        }
        Some(true)
    });
    if let Ok(Some(false)) = current {
        restock(&mut node, epoch, slot, size, bytes);
    }
    node
}

/// The magazine belongs to another manager or an older epoch: hand its nodes back and start a
/// fresh one for `node`'s manager, holding `node`.
#[cold]
fn restock(node: &mut Option<Box<RawBuffer>>, epoch: u64, slot: usize, size: usize, bytes: usize) {
    // First the stale magazine goes, outside the borrow (dropping nodes calls into the pools)
    // and before the fresh one counts its bytes (both may share a statistics shard).
    drop(take_out_if(|_| true));
    let _ = MAGAZINE.try_with(|m| {
        let mut m = m.try_borrow_mut().ok()?;
        let mm = node.as_ref()?.manager().clone();
        if m.owner != 0 || size > mm.magazine_cap {
            return None;
        }
        let shard = mm.stats.thread_shard()?;
        mm.stats.buffer_dropped_into_magazine(&shard, bytes, size);
        let mut slots: Vec<Vec<(Box<RawBuffer>, usize)>> = (0..KINDS * CLASSES).map(|_| Vec::new()).collect();
        slots[slot].extend(node.take().map(|n| (n, size)));
        *m = Magazine { owner: mm.id, epoch, bytes: size, shard: Some(shard), slots };
        Some(())
    });
}

/// Empties this thread's magazine if its manager has no handle left, so that a thread that
/// goes on using other managers (or large buffers) does not keep a closed manager alive. Called
/// on the paths that do not park (large buffers, managers without magazines, allocations that
/// miss the magazine), where a look at one parked node costs little.
#[inline(never)]
pub(crate) fn flush_if_owner_closed() {
    drop(take_out_if(|m| {
        m.bytes > 0
            && m.slots
                .iter()
                .find_map(|s| s.first())
                .is_some_and(|(node, _)| node.manager().recycle_epoch.load(Relaxed) == CLOSED)
    }));
}

/// Empties this thread's magazine if it holds nodes of `mm`; true if it held any.
pub(crate) fn flush_current(mm: &ManagerShared) -> bool {
    take_out_if(|m| m.owner == mm.id && m.bytes > 0).is_some()
}

/// This thread's magazine, taken out (an empty one left in its place) when `stale` says so.
/// Dropping it hands its nodes back to the pools, which callers do after the borrow has ended.
fn take_out_if(stale: impl FnOnce(&Magazine) -> bool) -> Option<Magazine> {
    // Before a thread is ready its magazine is empty; touching it would register its
    // destructor too early (see `stats::THREAD_STATE`).
    if !crate::stats::thread_is_ready() {
        return None;
    }
    MAGAZINE
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            stale(&m).then(|| std::mem::replace(&mut *m, Magazine::EMPTY))
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_count_matches_max_block() {
        assert_eq!(class_of(MAX_BLOCK).map(|(i, _)| i + 1), Some(CLASSES));
    }
}
