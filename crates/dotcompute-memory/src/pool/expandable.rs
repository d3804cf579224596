//! Expandable segments' state: the reserved range, the segregated fit that cuts it, and which
//! granules are mapped, cached and when they were freed; with the views of it that snapshots
//! and errors need. The pool (`device.rs`) maps and unmaps through the backend.

use super::segregated_fit::SegregatedFit;
use super::snapshot::{BlockSnapshot, SegmentSnapshot};
use crate::backend::region::Segment;
use std::sync::Arc;

/// Expandable segments: one reserved address range that grows by mapping memory under the
/// blocks handed out, instead of fixed segments. Its blocks are kept by a [`SegregatedFit`]
/// (constant time, where the arena's best fit costs a tree walk), and a region's `class` is
/// its block's slot there.
pub(super) struct Expandable {
    /// The reservation.
    pub(super) segment: Arc<Segment>,
    pub(super) fit: SegregatedFit,
    pub(super) granularity: usize,
    /// Blocks handed out that overlap each granule; a granule is mapped while this is above
    /// zero, and may stay mapped (cached) at zero.
    pub(super) users: Vec<u32>,
    pub(super) mapped: Vec<bool>,
    /// The maintenance tick at which each granule's last block was freed: a pass releases
    /// only granules idle since before its interval began, as it does fixed segments.
    pub(super) freed_at: Vec<u64>,
    /// Bytes of mapped granules no block uses: cached, as free blocks of fixed segments are,
    /// until a trim, the maintenance pass, an out-of-memory retry or the pool's bound
    /// (`max_pool_bytes`) unmaps them (PyTorch keeps its expandable segments' pages mapped
    /// the same way).
    pub(super) idle: usize,
}

impl Expandable {
    /// The state of a new reservation of `size` bytes (whole `granularity` granules, none
    /// mapped), whose blocks are split down to `min_split` bytes.
    pub(super) fn new(segment: Arc<Segment>, size: usize, granularity: usize, min_split: usize) -> Self {
        let granules = size / granularity;
        Expandable {
            segment,
            fit: SegregatedFit::new(size, min_split),
            granularity,
            users: vec![0; granules],
            mapped: vec![false; granules],
            freed_at: vec![0; granules],
            idle: 0,
        }
    }

    /// The largest free stretch of mapped memory (a walk over the blocks, for errors and
    /// snapshots only).
    pub(super) fn largest_free(&self) -> usize {
        let stretches = self.mapped_stretches();
        stretches.iter().flat_map(|s| &s.blocks).filter(|b| b.free).map(|b| b.size as usize).max().unwrap_or(0)
    }

    /// The mapped memory of the reserved range as segments, one per stretch of mapped granules,
    /// each with its blocks (free blocks cut to their mapped parts); offsets are in the range.
    pub(super) fn mapped_stretches(&self) -> Vec<SegmentSnapshot> {
        let g = self.granularity;
        let mut stretches: Vec<SegmentSnapshot> = Vec::new();
        let mut end_of_last = None;
        let mut push = |offset: usize, size: usize, free: bool| {
            let block = BlockSnapshot { offset: offset as u64, size: size as u64, free };
            match stretches.last_mut() {
                Some(s) if end_of_last == Some(offset) => {
                    s.size += size as u64;
                    s.blocks.push(block);
                }
                _ => stretches.push(SegmentSnapshot {
                    id: self.segment.id,
                    size: size as u64,
                    splittable: true,
                    small_pool: false,
                    blocks: vec![block],
                }),
            }
            end_of_last = Some(offset + size);
        };
        for b in self.fit.snapshot() {
            let (start, end) = (b.offset as usize, (b.offset + b.size) as usize);
            if !b.free {
                push(start, end - start, false);
                continue;
            }
            // A free block: its parts over mapped granules, each run of them as one block.
            let mut run = None;
            for k in start / g..end.div_ceil(g) {
                let (lo, hi) = ((k * g).max(start), ((k + 1) * g).min(end));
                match (self.mapped[k], run) {
                    (true, None) => run = Some(lo),
                    (false, Some(from)) => {
                        push(from, lo - from, true);
                        run = None;
                    }
                    _ => {}
                }
                if let (Some(from), true) = (run, hi == end) {
                    push(from, hi - from, true);
                }
            }
        }
        stretches
    }
}
