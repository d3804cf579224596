//! Unified buffers: one logical array with a host part and a device part, kept coherent.
//!
//! - [`state`]: the coherence model (two modification epochs, as Kokkos DualView).
//! - `raw`: the untyped memory of a buffer and every transfer between its parts.
//! - `boxed`: the heap box a buffer points to, and the end of a buffer (parked or released).
//! - `magazine`: per-thread stacks of retired small buffers, reused by the next allocations.
//! - [`unified`]: `UnifiedBuffer<T>`, the typed API.
//! - [`slice`](mod@slice): views that share the buffer's memory.
//! - [`future`]: runtime-agnostic futures for the async forms.
//! - `trait_impls`: [`MemoryBuffer`](crate::MemoryBuffer) for `UnifiedBuffer` and `BufferSliceMut`.

pub(crate) mod boxed;
pub mod future;
pub(crate) mod magazine;
pub(crate) mod raw;
pub mod slice;
pub mod state;
mod trait_impls;
pub mod unified;
pub mod view;

pub use future::TransferFuture;
pub use slice::{AsBufferView, BufferSlice, BufferSliceMut};
pub use state::BufferState;
pub use unified::{BufferMetrics, UnifiedBuffer};
#[cfg(feature = "cuda")]
pub use view::cuda::CudaMemory;
pub use view::{Access, DeviceView, DeviceViewMut};
