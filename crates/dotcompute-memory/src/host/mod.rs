//! Host memory: the raw, aligned allocations every host-side buffer lives in.
//!
//! This module and `buffer::storage` are where the crate's raw-memory `unsafe` lives; both run
//! under Miri (`cargo +nightly miri test --lib`).

mod block;

pub use block::HostBlock;

pub mod aligned;
pub mod external;
pub mod mapped;
#[cfg(all(unix, not(miri)))]
mod mmap;
mod os;
pub mod pinned;
mod pinned_host;
mod reservation;
pub mod shared;
mod storage;

pub use aligned::{HostAlloc, HostBuffer, PageInfo, PageKind, DEFAULT_ALIGNMENT, MAX_ALIGNMENT};
pub use external::{Deleter, Ownership};
pub use mapped::{MappedBuffer, MappedBufferMut};
pub use pinned::{PinnedBuffer, PinnedPool, PooledPinned};
pub use pinned_host::PinnedHost;
pub use reservation::AddressReservation;
pub use shared::{validate_name, SharedBuffer, SharedHeader, HEADER_SIZE, LAYOUT_VERSION, MAGIC, MAX_NAME_LEN};
