//! `BlockCache`: per-size-class lock-free free lists of memory blocks.
//!
//! Each class is a bounded `crossbeam_queue::ArrayQueue` (FIFO, so the front is the block idle
//! longest: trimming pops from the front). Bytes held are bounded by `max_bytes`; a block that
//! would exceed it is handed back to the caller to free. Blocks are stamped with the manager's
//! coarse maintenance tick, so the maintenance pass can evict by idle time without a timestamp
//! on the hot path.

use super::size_class::CLASS_COUNT;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Blocks cached per class at most.
const PER_CLASS: usize = 256;

struct Idle<B> {
    block: B,
    size: usize,
    tick: u64,
}

/// Free lists of blocks by size class.
pub(crate) struct BlockCache<B> {
    classes: Box<[OnceLock<ArrayQueue<Idle<B>>>]>,
    cached: CachePadded<AtomicUsize>,
    max_bytes: usize,
}

impl<B> BlockCache<B> {
    pub(crate) fn new(max_bytes: usize) -> Self {
        BlockCache {
            classes: (0..CLASS_COUNT).map(|_| OnceLock::new()).collect(),
            cached: CachePadded::new(AtomicUsize::new(0)),
            max_bytes,
        }
    }

    /// Bytes currently held.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }

    /// A cached block of class `index`, if any.
    pub(crate) fn take(&self, index: usize) -> Option<B> {
        let idle = self.classes.get(index)?.get()?.pop()?;
        self.cached.fetch_sub(idle.size, Ordering::Relaxed);
        Some(idle.block)
    }

    /// Caches `block` (of `size` bytes, class `index`); gives it back when the cache is full.
    pub(crate) fn put(&self, index: usize, size: usize, block: B, tick: u64) -> Result<(), B> {
        let Some(slot) = self.classes.get(index) else { return Err(block) };
        if self.cached.fetch_add(size, Ordering::Relaxed) + size > self.max_bytes {
            self.cached.fetch_sub(size, Ordering::Relaxed);
            return Err(block);
        }
        match slot.get_or_init(|| ArrayQueue::new(PER_CLASS)).push(Idle { block, size, tick }) {
            Ok(()) => Ok(()),
            Err(idle) => {
                self.cached.fetch_sub(size, Ordering::Relaxed);
                Err(idle.block)
            }
        }
    }

    /// Removes blocks, largest classes first and oldest first within a class, until at most
    /// `keep_bytes` remain; only blocks stamped before `idle_before` are taken.
    pub(crate) fn evict(&self, keep_bytes: usize, idle_before: u64) -> Vec<B> {
        let mut out = Vec::new();
        for slot in self.classes.iter().rev() {
            let Some(queue) = slot.get() else { continue };
            while self.cached_bytes() > keep_bytes {
                let Some(idle) = queue.pop() else { break };
                if idle.tick >= idle_before {
                    // Newer blocks stay; FIFO order means the rest of this class is newer too.
                    if let Err(idle) = queue.push(idle) {
                        self.cached.fetch_sub(idle.size, Ordering::Relaxed);
                        out.push(idle.block);
                    }
                    break;
                }
                self.cached.fetch_sub(idle.size, Ordering::Relaxed);
                out.push(idle.block);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::size_class::class_of;

    #[test]
    fn take_put_and_bounds() {
        let cache = BlockCache::<usize>::new(1500);
        let (i, c) = class_of(1000).unwrap();
        assert!(cache.take(i).is_none());
        cache.put(i, c, 1, 0).unwrap();
        assert_eq!(cache.cached_bytes(), c);
        assert_eq!(cache.put(i, c, 2, 0), Err(2), "second block would exceed max_bytes");
        assert_eq!(cache.take(i), Some(1));
        assert_eq!(cache.cached_bytes(), 0);
    }

    #[test]
    fn evict_respects_keep_and_age() {
        let cache = BlockCache::<u32>::new(1 << 30);
        let (i, c) = class_of(4096).unwrap();
        for n in 0..4 {
            cache.put(i, c, n, n as u64).unwrap();
        }
        // Only blocks stamped before tick 2 may go.
        let gone = cache.evict(0, 2);
        assert_eq!(gone, vec![0, 1]);
        assert_eq!(cache.cached_bytes(), 2 * c);
        // Keep one block's worth.
        let gone = cache.evict(c, u64::MAX);
        assert_eq!(gone.len(), 1);
        assert_eq!(cache.cached_bytes(), c);
    }

    #[test]
    fn threads_never_share_a_block() {
        let cache = std::sync::Arc::new(BlockCache::<u64>::new(usize::MAX));
        let (i, c) = class_of(512).unwrap();
        for n in 0..64 {
            cache.put(i, c, n, 0).unwrap();
        }
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for _ in 0..if cfg!(miri) { 20 } else { 1000 } {
                        if let Some(b) = cache.take(i) {
                            got.push(b);
                            let b = got.pop().unwrap();
                            cache.put(i, c, b, 0).unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut all: Vec<u64> = std::iter::from_fn(|| cache.take(i)).collect();
        all.sort();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
        assert_eq!(cache.cached_bytes(), 0);
    }
}
