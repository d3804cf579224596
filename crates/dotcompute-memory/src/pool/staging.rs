//! Staging blocks for transfers: pinned memory where the backend has it, pooled pageable
//! host memory otherwise (handed out and taken back by the pool context).

use crate::backend::PinnedHost;
use crate::host::HostBlock;

/// One staging block.
#[derive(Debug)]
pub(crate) enum StagingSlot {
    /// Pooled pageable host memory.
    Host(HostBlock),
    /// Page-locked memory from the backend.
    Pinned(Box<dyn PinnedHost>),
}

impl StagingSlot {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            StagingSlot::Host(b) => b.bytes(),
            StagingSlot::Pinned(p) => p.bytes(),
        }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            StagingSlot::Host(b) => b.bytes_mut(),
            StagingSlot::Pinned(p) => p.bytes_mut(),
        }
    }

    pub(crate) fn is_pinned(&self) -> bool {
        matches!(self, StagingSlot::Pinned(_))
    }
}
