//! The `Backend` trait: what a device must offer for buffers, pools and transfers to work on it.
//!
//! A backend owns device memory and queues. Everything above it (buffers, pools, the transfer
//! engine, the manager) is backend-agnostic and talks to it through `Arc<dyn Backend>`.
//!
//! # Memory handles
//!
//! Device memory is named by a [`DeviceMemory`] handle: an opaque number chosen by the backend
//! (a pointer on the CPU, an id in the simulator, a `cl_mem` or `MTLBuffer` slot, a
//! `CUdeviceptr`), its size, and the id of the backend instance that made it. Handles are
//! move-only and can only be made with the `unsafe` [`DeviceMemory::from_raw`], so safe code can
//! neither forge one nor free one twice. Every method that takes a handle checks that it belongs
//! to the backend ([`Error::InvalidHandle`] otherwise) and that offsets lie inside it.
//!
//! # Queues and events
//!
//! A backend has `queue_count()` in-order queues (OpenCL command queues, CUDA streams, Metal
//! command queues). The `*_async` methods enqueue a copy and return an [`Event`] that completes
//! when the copy has finished; they are `unsafe` because the host memory they read or write
//! must stay valid until then, which the type system cannot see. Events report completion by
//! polling ([`DeviceEvent::is_complete`]), by blocking ([`DeviceEvent::wait`]) or by waking a
//! `Waker` ([`DeviceEvent::on_complete`]), so futures built on them work with any async
//! runtime.
//!
//! [`Error::InvalidHandle`]: crate::Error::InvalidHandle

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod event;
mod interface;
mod memory;
#[cfg(all(feature = "metal", target_os = "macos"))]
pub mod metal;
#[cfg(feature = "opencl")]
pub mod opencl;
pub(crate) mod region;
mod required;
mod select;
pub mod sim;

pub(crate) use event::all_of;
pub use event::{DeviceEvent, Event, ReadyEvent};
pub use interface::Backend;
pub use memory::{BackendId, BatchWrite, DeviceMemory, MemoryInfo};
pub use required::{required, variable as required_variable};
pub use select::{open, open_devices, peer_matrix, probe_all, BACKEND_NAMES, COMPILED_BACKENDS, FEATURE_BACKENDS};

// Defined in the host layer, which implements it for its own pinned buffers.
pub use crate::host::PinnedHost;
