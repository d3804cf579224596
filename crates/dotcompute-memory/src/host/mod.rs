//! Host memory: the raw, aligned allocations every host-side buffer lives in.
//!
//! This module and `buffer::storage` are where the crate's raw-memory `unsafe` lives; both run
//! under Miri (`cargo +nightly miri test --lib`).

mod block;

pub use block::HostBlock;
mod aligned;
mod external;
mod os;

pub use aligned::{HostAlloc, HostBuffer, PageInfo, PageKind, DEFAULT_ALIGNMENT, MAX_ALIGNMENT};
pub use external::{Deleter, Ownership};
mod shared;

pub use shared::{validate_name, SharedBuffer, SharedHeader, HEADER_SIZE, LAYOUT_VERSION, MAGIC, MAX_NAME_LEN};
mod pinned;

pub use pinned::{PinnedBuffer, PinnedPool, PooledPinned};
mod mapped;

pub use mapped::{MappedBuffer, MappedBufferMut};
