//! `SegregatedFit`: two-level segregated fit (TLSF) over one address range, the allocator of
//! expandable segments: allocate and free in constant time, with splitting and coalescing.
//!
//! Free blocks sit in lists binned by size: one level per power of two, 32 linear steps within
//! it, and a bitmap bit per non-empty list, so finding a list is two bit scans. A request
//! first tries the newest blocks of its own list (a near best fit), then takes the newest
//! block of the next non-empty list whose blocks all fit. Blocks live in a slab: a handed-out
//! block is freed by its slot and merges with its free neighbours through address-order links.
//! On the kept traces this places blocks as well as the best-fit [`Arena`](super::arena::Arena)
//! does, at a fraction of its cost. Pure bookkeeping over offsets: no memory is touched.

use super::snapshot::BlockSnapshot;

const NIL: u32 = u32::MAX;
const SECOND_LEVEL_BITS: u32 = 5;
const SECOND_LEVELS: usize = 1 << SECOND_LEVEL_BITS;
const FIRST_LEVELS: usize = 64;
/// Blocks of the request's own list tried before a larger list is taken.
const OWN_LIST_TRIES: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Block {
    offset: usize,
    /// Bytes; zero marks a vacant slot.
    size: usize,
    free: bool,
    /// Neighbours in address order.
    prev: u32,
    next: u32,
    /// Links of the free list the block is on (free blocks only).
    prev_free: u32,
    next_free: u32,
}

/// Bookkeeping of the blocks of one range; sizes and offsets are multiples of `unit`.
#[derive(Debug)]
pub(crate) struct SegregatedFit {
    unit: usize,
    size: usize,
    blocks: Vec<Block>,
    vacant: Vec<u32>,
    heads: Vec<u32>,
    first_level: u64,
    second_level: [u32; FIRST_LEVELS],
    free_bytes: usize,
}

/// The list of blocks of `units` units: (first level, second level).
fn list_of(units: usize) -> (usize, usize) {
    if units < SECOND_LEVELS {
        return (0, units);
    }
    let top = units.ilog2();
    let level = (top - SECOND_LEVEL_BITS + 1) as usize;
    (level, (units >> (top - SECOND_LEVEL_BITS)) - SECOND_LEVELS)
}

/// The first list whose every block holds `units` units (the list after `units`' own, unless
/// its own list starts at `units`); None past the last level.
fn list_at_least(units: usize) -> Option<(usize, usize)> {
    let rounded = if units < SECOND_LEVELS {
        units
    } else {
        units.checked_add((1 << (units.ilog2() - SECOND_LEVEL_BITS)) - 1)?
    };
    let (f, s) = list_of(rounded);
    (f < FIRST_LEVELS).then_some((f, s))
}

impl SegregatedFit {
    /// A range of `size` bytes, all free, handing out blocks in multiples of `unit` bytes.
    pub(crate) fn new(size: usize, unit: usize) -> Self {
        let size = size / unit * unit;
        let mut fit = SegregatedFit {
            unit,
            size,
            blocks: Vec::new(),
            vacant: Vec::new(),
            heads: vec![NIL; FIRST_LEVELS * SECOND_LEVELS],
            first_level: 0,
            second_level: [0; FIRST_LEVELS],
            free_bytes: 0,
        };
        if size > 0 {
            let slot = fit.new_slot(Block {
                offset: 0,
                size,
                free: true,
                prev: NIL,
                next: NIL,
                prev_free: NIL,
                next_free: NIL,
            });
            fit.link(slot);
            fit.free_bytes = size;
        }
        fit
    }

    fn new_slot(&mut self, block: Block) -> u32 {
        match self.vacant.pop() {
            Some(slot) => {
                self.blocks[slot as usize] = block;
                slot
            }
            None => {
                self.blocks.push(block);
                (self.blocks.len() - 1) as u32
            }
        }
    }

    fn release_slot(&mut self, slot: u32) {
        self.blocks[slot as usize].size = 0;
        self.vacant.push(slot);
    }

    fn list_index(&self, size: usize) -> (usize, usize, usize) {
        let (f, s) = list_of(size / self.unit);
        (f, s, f * SECOND_LEVELS + s)
    }

    /// Puts a free block at the head of its list.
    fn link(&mut self, slot: u32) {
        let (f, s, i) = self.list_index(self.blocks[slot as usize].size);
        let head = self.heads[i];
        let b = &mut self.blocks[slot as usize];
        b.prev_free = NIL;
        b.next_free = head;
        if head != NIL {
            self.blocks[head as usize].prev_free = slot;
        }
        self.heads[i] = slot;
        self.first_level |= 1 << f;
        self.second_level[f] |= 1 << s;
    }

    /// Takes a free block off its list.
    fn unlink(&mut self, slot: u32) {
        let b = self.blocks[slot as usize];
        let (f, s, i) = self.list_index(b.size);
        if b.prev_free != NIL {
            self.blocks[b.prev_free as usize].next_free = b.next_free;
        } else {
            self.heads[i] = b.next_free;
        }
        if b.next_free != NIL {
            self.blocks[b.next_free as usize].prev_free = b.prev_free;
        }
        if self.heads[i] == NIL {
            self.second_level[f] &= !(1 << s);
            if self.second_level[f] == 0 {
                self.first_level &= !(1 << f);
            }
        }
    }

    /// The head of the first non-empty list at or after (f, s).
    fn first_list_from(&self, f: usize, s: usize) -> Option<u32> {
        let mut f = f;
        let mut bits = self.second_level[f] & (u32::MAX << s);
        if bits == 0 {
            let levels = if f + 1 < FIRST_LEVELS { self.first_level & (u64::MAX << (f + 1)) } else { 0 };
            if levels == 0 {
                return None;
            }
            f = levels.trailing_zeros() as usize;
            bits = self.second_level[f];
        }
        Some(self.heads[f * SECOND_LEVELS + bits.trailing_zeros() as usize])
    }

    /// A free block of the list of `size` bytes that holds `size`, among its first `tries`.
    fn fit_in_own_list(&self, size: usize, tries: usize) -> Option<u32> {
        let (_, _, i) = self.list_index(size);
        let mut slot = self.heads[i];
        for _ in 0..tries {
            if slot == NIL {
                return None;
            }
            if self.blocks[slot as usize].size >= size {
                return Some(slot);
            }
            slot = self.blocks[slot as usize].next_free;
        }
        None
    }

    /// A block of `size` bytes (a non-zero multiple of the unit): its (slot, offset), or None
    /// when no free block holds it.
    pub(crate) fn alloc(&mut self, size: usize) -> Option<(u32, usize)> {
        if size == 0 || size > self.free_bytes || !size.is_multiple_of(self.unit) {
            return None;
        }
        let slot = self
            .fit_in_own_list(size, OWN_LIST_TRIES)
            .or_else(|| list_at_least(size / self.unit).and_then(|(f, s)| self.first_list_from(f, s)))
            .or_else(|| self.fit_in_own_list(size, usize::MAX))?;
        self.unlink(slot);
        let b = self.blocks[slot as usize];
        if b.size > size {
            let rest = self.new_slot(Block {
                offset: b.offset + size,
                size: b.size - size,
                free: true,
                prev: slot,
                next: b.next,
                prev_free: NIL,
                next_free: NIL,
            });
            if b.next != NIL {
                self.blocks[b.next as usize].prev = rest;
            }
            self.blocks[slot as usize].next = rest;
            self.blocks[slot as usize].size = size;
            self.link(rest);
        }
        self.blocks[slot as usize].free = false;
        self.free_bytes -= size;
        Some((slot, b.offset))
    }

    /// The handed-out block in `slot`: (offset, size).
    pub(crate) fn block(&self, slot: u32) -> Option<(usize, usize)> {
        let b = self.blocks.get(slot as usize)?;
        (b.size > 0 && !b.free).then_some((b.offset, b.size))
    }

    /// Frees the handed-out block in `slot`, merging it with free neighbours; returns its
    /// (offset, size), or None (nothing changed) when `slot` holds no handed-out block.
    pub(crate) fn free(&mut self, slot: u32) -> Option<(usize, usize)> {
        let (offset, size) = self.block(slot)?;
        self.free_bytes += size;
        let next = self.blocks[slot as usize].next;
        if next != NIL && self.blocks[next as usize].free {
            self.unlink(next);
            self.absorb_next(slot);
        }
        let mut kept = slot;
        let prev = self.blocks[slot as usize].prev;
        if prev != NIL && self.blocks[prev as usize].free {
            self.unlink(prev);
            self.absorb_next(prev);
            kept = prev;
        }
        self.blocks[kept as usize].free = true;
        self.link(kept);
        Some((offset, size))
    }

    /// Merges the block after `slot` (on no list) into it and frees the next block's slot.
    fn absorb_next(&mut self, slot: u32) {
        let next = self.blocks[slot as usize].next;
        let n = self.blocks[next as usize];
        self.blocks[slot as usize].size += n.size;
        self.blocks[slot as usize].next = n.next;
        if n.next != NIL {
            self.blocks[n.next as usize].prev = slot;
        }
        self.release_slot(next);
    }

    /// Bytes in free blocks.
    pub(crate) fn free_bytes(&self) -> usize {
        self.free_bytes
    }

    /// The largest free block.
    pub(crate) fn largest_free(&self) -> usize {
        if self.first_level == 0 {
            return 0;
        }
        let f = 63 - self.first_level.leading_zeros() as usize;
        let s = 31 - self.second_level[f].leading_zeros() as usize;
        let mut slot = self.heads[f * SECOND_LEVELS + s];
        let mut largest = 0;
        while slot != NIL {
            largest = largest.max(self.blocks[slot as usize].size);
            slot = self.blocks[slot as usize].next_free;
        }
        largest
    }

    /// Every block in address order (the block at offset 0 always keeps slot 0).
    pub(crate) fn snapshot(&self) -> Vec<BlockSnapshot> {
        let mut blocks = Vec::new();
        let mut slot = if self.blocks.is_empty() { NIL } else { 0 };
        while slot != NIL {
            let b = self.blocks[slot as usize];
            blocks.push(BlockSnapshot { offset: b.offset as u64, size: b.size as u64, free: b.free });
            slot = b.next;
        }
        blocks
    }

    /// Bytes of the range.
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lists_cover_sizes_in_order() {
        let mut last = (0, 0);
        for units in 1..if cfg!(miri) { 100 } else { 5000 } {
            let list = list_of(units);
            assert!(list >= last, "{units} units fall in {list:?}, before {last:?}");
            last = list;
            let at_least = list_at_least(units).unwrap();
            assert!(at_least >= list);
            // Every size in the list `list_at_least` names holds `units`: (lists being in order)
            // one unit less falls in an earlier list.
            assert!(list_of(units - 1) < at_least, "{units} units: list {at_least:?} also holds {}", units - 1);
        }
        assert_eq!(list_at_least(usize::MAX), None);
    }

    #[test]
    fn split_coalesce_and_slot_zero_stays_first() {
        let mut a = SegregatedFit::new(8192, 512);
        let (x, ox) = a.alloc(1024).unwrap();
        let (y, oy) = a.alloc(1024).unwrap();
        let (z, oz) = a.alloc(1024).unwrap();
        assert_eq!((ox, oy, oz), (0, 1024, 2048));
        assert_eq!(x, 0);
        assert_eq!(a.free_bytes(), 8192 - 3072);
        assert_eq!(a.free(y), Some((1024, 1024)));
        assert_eq!(a.free(y), None, "double free");
        assert_eq!(a.alloc(512).map(|p| p.1), Some(1024), "a hole that fits is reused");
        assert_eq!(a.alloc(4096).map(|p| p.1), Some(3072));
        assert_eq!(a.alloc(2048), None, "only 1024 + 512 bytes are free, apart");
        assert_eq!(a.largest_free(), 1024);
        assert_eq!(a.alloc(1000), None, "not a multiple of the unit");
        let live: Vec<u32> = (0..a.blocks.len() as u32).filter(|&s| a.block(s).is_some()).collect();
        for s in live {
            a.free(s).unwrap();
        }
        let blocks = a.snapshot();
        assert_eq!(blocks, vec![BlockSnapshot { offset: 0, size: 8192, free: true }]);
        assert_eq!(z, 2, "slots count up while none is vacant");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 128 }))]
        /// Random allocs and frees against a model: blocks never overlap and stay in the range,
        /// a request fails only when no free block holds it, bytes balance, and freeing
        /// everything leaves one free block.
        #[test]
        fn model(ops in proptest::collection::vec((0usize..3, 1usize..600), 1..if cfg!(miri) { 40 } else { 300 })) {
            const SIZE: usize = 256 << 10;
            let mut a = SegregatedFit::new(SIZE, 512);
            let mut live: Vec<(u32, usize, usize)> = Vec::new();
            for (kind, units) in ops {
                if kind < 2 || live.is_empty() {
                    let size = units * 512;
                    match a.alloc(size) {
                        Some((slot, off)) => {
                            prop_assert_eq!(a.block(slot), Some((off, size)));
                            prop_assert!(off + size <= SIZE);
                            for &(_, o, z) in &live {
                                prop_assert!(off + size <= o || o + z <= off, "overlap");
                            }
                            live.push((slot, off, size));
                        }
                        None => {
                            let fits = a.snapshot().iter().any(|b| b.free && b.size as usize >= size);
                            prop_assert!(!fits, "{} bytes refused while a free block holds them", size);
                        }
                    }
                } else {
                    let (slot, off, size) = live.swap_remove(units % live.len());
                    prop_assert_eq!(a.free(slot), Some((off, size)));
                }
                let used: usize = live.iter().map(|l| l.2).sum();
                prop_assert_eq!(a.free_bytes() + used, SIZE);
                let blocks = a.snapshot();
                prop_assert!(blocks.windows(2).all(|w| !(w[0].free && w[1].free)), "free neighbours not merged");
                prop_assert_eq!(blocks.iter().map(|b| b.size).sum::<u64>(), SIZE as u64);
            }
            for (slot, _, _) in live.drain(..) {
                a.free(slot).unwrap();
            }
            prop_assert_eq!(a.snapshot(), vec![BlockSnapshot { offset: 0, size: SIZE as u64, free: true }]);
            prop_assert_eq!(a.largest_free(), SIZE);
        }
    }
}
