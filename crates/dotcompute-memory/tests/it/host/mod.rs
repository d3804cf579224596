//! Host memory: aligned and huge-page allocations with NUMA binding, file mappings, page-locked
//! (pinned) memory, named shared segments, and the host copy and fill operations.

mod aligned;
mod mapped;
mod ops;
mod pinned;
mod shared;
