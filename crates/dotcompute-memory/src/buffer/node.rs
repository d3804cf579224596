//! `Node`: where a buffer's state lives, so that a buffer is one pointer.
//!
//! Allocating a buffer returns it by value, through a `Result`, often twice; a buffer that was
//! a 128-byte struct was copied each time, right after its fields had been written one by one,
//! and such a copy stalls store forwarding (measured at about a fifth of a small allocate +
//! drop). A pointer moves for free. The node also makes the per-thread magazine cheap: a dropped
//! small buffer's whole node, with its block and manager reference, is parked there and reset
//! for the next allocation of its size class (see `pool::magazine`).

use super::raw::RawBuffer;
use crate::error::Result;
use crate::pool::context::ManagerShared;
use crate::pool::magazine::{self, Kind};
use crate::pool::size_class::class_of;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A buffer's state on the heap. Dropping it retires the buffer (`RawBuffer::retire`).
pub(crate) struct Node(ManuallyDrop<Box<RawBuffer>>);

impl Node {
    /// A buffer of `bytes` bytes: a node from this thread's magazine when it has one of this
    /// size class, else a new one with memory from the pools.
    // Always inlined (its pool path is out of line in `from_pool`): left to the compiler, it
    // stayed out of line in callers, which cost ~40 % of a small allocate + drop.
    #[inline(always)]
    pub(crate) fn new(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<Node> {
        let kind = if mm.unified { Kind::Unified } else { Kind::Host };
        if let Some(node) = Self::parked(mm, kind, bytes, registry_id) {
            return Ok(node);
        }
        Self::from_pool(mm, bytes, registry_id)
    }

    /// A new node with memory from the pools (out of line: keeps `new`'s frame small).
    #[inline(never)]
    fn from_pool(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<Node> {
        RawBuffer::new(mm, bytes, registry_id).map(Self::from_box)
    }

    /// A node of `kind` from this thread's magazine, reset for a buffer of `bytes` bytes.
    #[inline(always)]
    fn parked(mm: &ManagerShared, kind: Kind, bytes: usize, registry_id: u64) -> Option<Node> {
        if bytes == 0 || bytes > magazine::MAX_BLOCK {
            return None;
        }
        let (class, _) = class_of(bytes)?;
        let mut node = magazine::take(mm, kind, class, bytes)?;
        node.reuse(bytes, registry_id);
        Some(Self::from_box(node))
    }

    /// A buffer with only a device part (`DeviceOnly`); see `RawBuffer::new_device_only`.
    pub(crate) fn new_device_only(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<Node> {
        if bytes == 0 || mm.unified {
            let mut node = Node::new(mm, bytes, registry_id)?;
            node.detach_host_unified();
            return Ok(node);
        }
        if let Some(node) = Self::parked(mm, Kind::Device, bytes, registry_id) {
            return Ok(node);
        }
        RawBuffer::new_device_only(mm, bytes, registry_id).map(Self::from_box)
    }

    #[inline(always)]
    fn from_box(raw: Box<RawBuffer>) -> Node {
        Node(ManuallyDrop::new(raw))
    }
}

impl Deref for Node {
    type Target = RawBuffer;

    #[inline]
    fn deref(&self) -> &RawBuffer {
        &self.0
    }
}

impl DerefMut for Node {
    #[inline]
    fn deref_mut(&mut self) -> &mut RawBuffer {
        &mut self.0
    }
}

impl Drop for Node {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the box is taken exactly once, here, and `self.0` is not used afterwards.
        let raw = unsafe { ManuallyDrop::take(&mut self.0) };
        raw.retire();
    }
}
