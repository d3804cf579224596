//! Per-thread magazines: the blocks of small buffers a thread dropped, kept by that thread for
//! its next allocations of the same size class.
//!
//! A buffer allocated and dropped on one thread is the common case (temporaries, per-request
//! scratch). Served through the shared caches, that pair costs several atomic read-modify-writes
//! (queue pop and push, the cached-bytes counter, the manager's reference count), each a
//! contended cache line in the worst case. Served from the thread's magazine (Bonwick & Adams' name; tcmalloc's and jemalloc's
//! thread caches, .NET's per-thread `ArrayPool` storage) it costs none: the magazine is a plain
//! thread-local stack of whole retired buffers (`buffer::boxed`), each still holding its
//! block and its manager reference, so reusing one is a pop and a reset of a few fields.
//!
//! # Bounds and reclaim
//!
//! - Only blocks up to [`MAX_BLOCK`] are kept, at most [`PER_CLASS`] per size class, and at most
//!   the manager's `magazine_cap` bytes per thread (`min(2 MiB, max_pool_bytes / 16)`, 0 without
//!   pooling or with a `device_memory_limit`).
//! - A magazine serves one manager at a time; using another manager on the thread hands the
//!   blocks back to the first one's shared caches.
//! - A thread parks nothing until it has allocated a buffer itself (of any manager; see
//!   `crate::thread_exit`): a thread that only drops buffers made elsewhere hands them straight
//!   to the shared caches.
//! - `trim_excess`, each maintenance pass and an out-of-memory retry bump the manager's
//!   *recycle epoch*: every thread hands its magazine back the next time it drops a buffer of
//!   that manager. `trim_excess` and the out-of-memory retry also empty the calling thread's
//!   magazine at once; other threads' magazines cannot be reached without making every
//!   allocation pay for synchronisation, so up to `magazine_cap` bytes per thread stay there
//!   until that thread uses the manager again or exits (thread exit hands them back, in the
//!   thread's thread-local destructors: `JoinHandle::join` waits for those, while
//!   `std::thread::scope` may return before they have run).
//! - When the last `MemoryManager` handle is dropped the epoch is closed: buffers dropped later
//!   go straight back to the shared caches, so the manager (and its backend memory) is released
//!   once its buffers are gone, except for blocks parked in magazines of other threads that are
//!   still running, which go back when those threads next use any manager or exit.
//!
//! Blocks in magazines count as cached memory in [`crate::MemoryStatistics::cached_bytes`].

use super::raw::RawBuffer;
use crate::backend::region::DeviceRegion;
use crate::host::HostBlock;
use crate::pool::context::{ManagerShared, CLOSED};
use crate::pool::size_class::class_of;
use crate::stats::Shard;
use crossbeam_utils::CachePadded;
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Largest block a magazine keeps.
pub(crate) const MAX_BLOCK: usize = 1 << 20;
/// Size classes up to [`MAX_BLOCK`] (`class_of(MAX_BLOCK).0 + 1`, checked by a test).
const CLASSES: usize = 45;
/// Buffers kept per size class and kind.
pub(crate) const PER_CLASS: usize = 8;

/// The kinds of buffer a magazine keeps apart, by the block made at allocation.
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
///
/// It has no drop glue (its owning fields are `ManuallyDrop`), so the thread-local that holds
/// it needs no destructor registration and no liveness check on access: the hot paths are
/// a plain thread-local load. Its contents are handed back by [`Retired`] whenever it is
/// replaced, and at thread exit by [`ExitFlush`], which [`restock`] registers before anything
/// is parked.
struct Magazine {
    owner: u64,
    epoch: u64,
    bytes: usize,
    /// The owner's statistics shard of this thread (looked up once, not per allocation).
    shard: ManuallyDrop<Option<Arc<CachePadded<Shard>>>>,
    /// Retired buffers by slot (`Kind` × size class).
    slots: ManuallyDrop<Vec<Stack>>,
}

impl Magazine {
    const EMPTY: Magazine =
        Magazine { owner: 0, epoch: 0, bytes: 0, shard: ManuallyDrop::new(None), slots: ManuallyDrop::new(Vec::new()) };
}

/// The retired buffers of one slot: a fixed array, so a push or pop touches no other memory
/// and never grows (a `Vec` per slot would make every pop two dependent loads deep and
/// every push a call).
#[derive(Default)]
struct Stack {
    len: usize,
    /// Block size of each buffer. Blocks of one size class may differ in size: the device pool's
    /// arena hands out a whole free block when the rest would be too small to split off.
    sizes: [usize; PER_CLASS],
    buffers: [Option<Box<RawBuffer>>; PER_CLASS],
}

impl Stack {
    /// The top buffer and its block size.
    #[inline(always)]
    fn pop(&mut self) -> Option<(Box<RawBuffer>, usize)> {
        let top = self.len.checked_sub(1)?;
        let size = *self.sizes.get(top)?;
        let buffer = self.buffers.get_mut(top)?.take()?;
        self.len = top;
        Some((buffer, size))
    }

    /// Pushes `buffer`, whose block is `size` bytes, if there is room; gives it back otherwise.
    #[inline(always)]
    fn push(&mut self, buffer: Box<RawBuffer>, size: usize) -> Option<Box<RawBuffer>> {
        let (Some(free), Some(slot_size)) = (self.buffers.get_mut(self.len), self.sizes.get_mut(self.len)) else {
            return Some(buffer);
        };
        *free = Some(buffer);
        *slot_size = size;
        self.len += 1;
        None
    }
}

/// A magazine taken out of its thread-local: dropping it hands every parked block back to its
/// manager's shared caches (dropping a buffer releases its memory). Callers drop it after the
/// thread-local's borrow has ended, since releasing calls into the pools.
struct Retired(Magazine);

impl Drop for Retired {
    fn drop(&mut self) {
        if let Some(shard) = &*self.0.shard {
            shard.magazine_bytes.store(0, Relaxed);
        }
        drop(std::mem::take(&mut *self.0.slots));
        drop(self.0.shard.take());
    }
}

/// Empties the thread's magazine when thread-local destructors reach it. Registered by
/// [`restock`] after the thread's statistics state (see `crate::thread_exit`), so it runs
/// while the thread's statistics shard can still be found.
struct ExitFlush;

impl Drop for ExitFlush {
    fn drop(&mut self) {
        drop(take_out_if(|_| true));
    }
}

thread_local! {
    static MAGAZINE: RefCell<Magazine> = const { RefCell::new(Magazine::EMPTY) };
    static EXIT_FLUSH: ExitFlush = const { ExitFlush };
}

/// A retired buffer of `mm` of `kind` for a new buffer of `bytes` bytes in size class `class`,
/// from this thread's magazine; `None` when it has none. Counts the buffer as created (the
/// caller resets the buffer with `RawBuffer::reuse`).
#[inline]
pub(crate) fn take(mm: &ManagerShared, kind: Kind, class: usize, bytes: usize) -> Option<Box<RawBuffer>> {
    if class >= CLASSES {
        return None;
    }
    let slot = kind as usize * CLASSES + class;
    let epoch = mm.recycle_epoch.load(Relaxed);
    MAGAZINE
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            let m = &mut *m;
            // Only a ready thread's magazine has an owner (`restock`), so this also keeps an
            // exiting thread from taking anything.
            if m.owner != mm.id || m.epoch != epoch {
                return None;
            }
            let (buffer, size) = m.slots.get_mut(slot)?.pop()?;
            m.bytes -= size;
            if let Some(shard) = &*m.shard {
                mm.stats.buffer_created_from_magazine(shard, bytes, m.bytes);
            }
            Some(buffer)
        })
        .ok()
        .flatten()
}

/// Why [`try_park`] did not park a buffer.
#[derive(Clone, Copy)]
pub(crate) enum Miss {
    /// The manager keeps no magazines (no pooling, or no handle left).
    Off,
    /// This thread's magazine is another manager's, of an older epoch, or not made yet.
    Stale,
    /// No room (slot or byte bound), or the magazine is busy.
    Full,
}

/// Parks the retired `buffer` (of a buffer of `bytes` bytes, whose block of `size` bytes goes to
/// `slot`) in this thread's magazine and counts the buffer as dropped, if that takes nothing
/// but the current magazine; gives it back with the reason otherwise ([`park`] handles those).
/// It calls nothing, so a caller that inlines it needs no stack frame on this path.
#[inline(always)]
pub(crate) fn try_park(
    buffer: Box<RawBuffer>,
    slot: usize,
    size: usize,
    bytes: usize,
) -> Result<(), (Box<RawBuffer>, Miss)> {
    let mm = buffer.manager();
    let epoch = mm.recycle_epoch.load(Relaxed);
    if mm.magazine_cap == 0 || epoch == CLOSED {
        return Err((buffer, Miss::Off));
    }
    let mut buffer = Some(buffer);
    let outcome = MAGAZINE.try_with(|m| {
        let mut m = m.try_borrow_mut().map_err(|_| Miss::Full)?;
        let m = &mut *m;
        let mm = buffer.as_ref().ok_or(Miss::Full)?.manager();
        if m.owner != mm.id || m.epoch != epoch {
            return Err(Miss::Stale);
        }
        let held = m.bytes + size;
        let stack = m.slots.get_mut(slot).ok_or(Miss::Full)?;
        if held > mm.magazine_cap || stack.len >= PER_CLASS {
            return Err(Miss::Full);
        }
        if let Some(shard) = &*m.shard {
            mm.stats.buffer_dropped_into_magazine(shard, bytes, held);
        }
        m.bytes = held;
        buffer = stack.push(buffer.take().ok_or(Miss::Full)?, size);
        Ok(())
    });
    match (buffer, outcome) {
        (None, _) => Ok(()),
        (Some(buffer), Ok(Err(miss))) => Err((buffer, miss)),
        (Some(buffer), _) => Err((buffer, Miss::Full)),
    }
}

/// As [`try_park`], and on a miss: starts a magazine for `buffer`'s manager when this thread's
/// is stale, or empties it when its manager is closed. Gives `buffer` back when it was not
/// parked.
pub(crate) fn park(buffer: Box<RawBuffer>, slot: usize, size: usize, bytes: usize) -> Option<Box<RawBuffer>> {
    match try_park(buffer, slot, size, bytes) {
        Ok(()) => None,
        Err((buffer, Miss::Off)) => {
            flush_if_owner_closed();
            Some(buffer)
        }
        Err((buffer, Miss::Stale)) => {
            let epoch = buffer.manager().recycle_epoch.load(Relaxed);
            let mut buffer = Some(buffer);
            restock(&mut buffer, epoch, slot, size, bytes);
            buffer
        }
        Err((buffer, Miss::Full)) => Some(buffer),
    }
}

/// The magazine belongs to another manager or an older epoch: hand its buffers back and start a
/// fresh one for `buffer`'s manager, holding `buffer`.
#[cold]
fn restock(buffer: &mut Option<Box<RawBuffer>>, epoch: u64, slot: usize, size: usize, bytes: usize) {
    // First the stale magazine goes, outside the borrow (dropping buffers calls into the pools)
    // and before the fresh one counts its bytes (both may share a statistics shard).
    drop(take_out_if(|_| true));
    let Some(mm) = buffer.as_ref().map(|n| n.manager().clone()) else { return };
    if size > mm.magazine_cap {
        return;
    }
    // The shard first: it makes the thread ready (see `crate::thread_exit`), and only then
    // is the exit flush registered, so that it runs before the thread's statistics go. It
    // cannot be registered once thread-local destructors have started: nothing is parked then.
    let Some(shard) = mm.stats.thread_shard() else { return };
    if EXIT_FLUSH.try_with(|_| ()).is_err() {
        return;
    }
    let _ = MAGAZINE.try_with(|m| {
        let mut m = m.try_borrow_mut().ok()?;
        if m.owner != 0 {
            return None;
        }
        mm.stats.buffer_dropped_into_magazine(&shard, bytes, size);
        let mut slots: Vec<Stack> = (0..KINDS * CLASSES).map(|_| Stack::default()).collect();
        let stack = slots.get_mut(slot)?;
        *buffer = stack.push(buffer.take()?, size);
        *m = Magazine {
            owner: mm.id,
            epoch,
            bytes: size,
            shard: ManuallyDrop::new(Some(shard)),
            slots: ManuallyDrop::new(slots),
        };
        Some(())
    });
}

/// Empties this thread's magazine if its manager has no handle left, so that a thread that
/// goes on using other managers (or large buffers) does not keep a closed manager alive. Called
/// on the paths that do not park (large buffers, managers without magazines, allocations that
/// miss the magazine), where a look at one parked buffer costs little.
#[inline(never)]
pub(crate) fn flush_if_owner_closed() {
    drop(take_out_if(|m| {
        m.bytes > 0
            && m.slots
                .iter()
                .find_map(|s| s.buffers.first().and_then(Option::as_ref))
                .is_some_and(|buffer| buffer.manager().recycle_epoch.load(Relaxed) == CLOSED)
    }));
}

/// Empties this thread's magazine if it holds buffers of `mm`; true if it held any.
pub(crate) fn flush_current(mm: &ManagerShared) -> bool {
    take_out_if(|m| m.owner == mm.id && m.bytes > 0).is_some()
}

/// This thread's magazine, taken out (an empty one left in its place) when `stale` says so.
/// Dropping the result hands its buffers back to the pools.
fn take_out_if(stale: impl FnOnce(&Magazine) -> bool) -> Option<Retired> {
    MAGAZINE
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            stale(&m).then(|| Retired(std::mem::replace(&mut *m, Magazine::EMPTY)))
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
