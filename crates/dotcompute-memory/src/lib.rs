//! # dotcompute-memory
//!
//! Unified host/device memory for compute work: one buffer type whose data lives on the host,
//! on an accelerator, or both, with tracked coherence; pooling of host and device memory;
//! statistics and diagnostics; backends for the CPU (embedded default), a simulated discrete
//! device with fault injection, and (behind features) OpenCL, CUDA and Metal (macOS; checked
//! by the compiler, never run).
//!
//! ## Quick start
//!
//! ```
//! use dotcompute_memory::prelude::*;
//! use dotcompute_memory::{Error, Result};
//!
//! # fn main() -> Result<()> {
//! // The embedded CPU backend; `MemoryManager::from_env()` picks one from DCMEM_BACKEND.
//! let mm = MemoryManager::cpu();
//!
//! let mut buf = mm.allocate::<f32>(1_000)?;
//! let data: Vec<f32> = (0..1_000).map(|i| i as f32).collect();
//! buf.copy_from(&data)?;                       // a host write
//! assert_eq!(buf.state(), BufferState::HostOnly);
//!
//! buf.ensure_on_device()?;                     // upload (free on unified memory)
//! assert_eq!(buf.state(), BufferState::Synchronized);
//!
//! // Zero-copy host access, and views that share memory.
//! buf.as_mut_slice()?[0] = 42.0;               // marks the host side dirty
//! assert_eq!(buf.state(), BufferState::HostDirty);
//! let view = buf.slice(0..4)?;
//! assert_eq!(view.as_slice()?, &[42.0, 1.0, 2.0, 3.0]);
//!
//! // Your kernel on the device memory, through a view made for one access. On cpu and sim
//! // the device memory is a slice, so a closure is a kernel; OpenCL and CUDA views give the
//! // native handle (`view.opencl()`, `view.cuda()`) instead.
//! buf.with_device_mut(Access::ReadWrite, |view| {
//!     view.device_slice_mut().expect("cpu memory is host-addressable")[1] = -1.0;
//! })?;
//! assert_eq!(buf.state(), BufferState::DeviceDirty);
//! assert_eq!(buf.as_slice()?[..2], [42.0, -1.0]);
//!
//! // Mistakes are errors with the values involved, never panics.
//! let err = buf.copy_from(&[1.0; 3]).unwrap_err();
//! assert!(matches!(err, Error::LengthMismatch { expected: 1000, actual: 3, .. }));
//!
//! drop(buf);                                   // memory goes back to the pool
//! let again = mm.allocate::<f32>(1_000)?;      // ... and is reused
//! assert_eq!(mm.statistics().pool_hits, 1);
//! # drop(again);
//! # Ok(())
//! # }
//! ```
//!
//! ## Where things are
//!
//! - [`MemoryManager`]: allocation, pools, statistics, maintenance.
//! - [`UnifiedBuffer`], [`BufferSlice`], [`BufferSliceMut`], [`BufferState`]: buffers and the
//!   coherence model (its table is on [`BufferState`]).
//! - [`MemoryBuffer`]: the trait of every buffer kind (unified, views, host, pinned, shared and
//!   your own), for code generic over them.
//! - [`DeviceView`], [`DeviceViewMut`], [`Access`]: kernels on a buffer's device memory.
//! - [`Backend`]: what a device provides; [`CpuBackend`], [`SimBackend`], and with the
//!   `opencl` / `cuda` / `metal` features `OpenClBackend`, `CudaBackend` and (on macOS)
//!   `MetalBackend`.
//! - [`ObjectPool`] ([`Pooled`] guards) and [`ArrayPool`] ([`Rented`] guards, raw [`ArrayHandle`]s):
//!   pools of reusable objects and arrays (see `pool::object`, `pool::array`).
//! - With the `dlpack` feature, `UnifiedBuffer::to_dlpack` / `from_dlpack` and `DlpackTensor`:
//!   buffers handed to and taken from NumPy, PyTorch and other DLPack libraries without a copy
//!   (the ABI's structs and constants are in `dlpack`).
//! - [`Error`]: every failure, with the values that caused it.
//! - [`prelude`]: the names most programs need, for one glob import.
//!
//! Every type is named from the root. The public modules hold what is specific to one part
//! and not re-exported there: [`backend`] (each backend's own options and accessors, backend
//! selection), [`host`] (host-memory builders and handles), [`pool`] (the pools' limits), `dlpack`
//! (the DLPack ABI's constants, with its feature),
//! [`ops`] (host-side copies and conversions) and [`units`].

/// The repository README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The crate README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct CrateReadmeDoctests;

pub mod backend;
mod buffer;
mod buffer_trait;
mod diagnostics;
#[cfg(feature = "dlpack")]
pub mod dlpack;
mod element;
mod environment;
mod error;
pub mod host;
mod manager;
pub mod ops;
pub mod pool;
pub mod prelude;
pub mod replay;
mod setters;
mod stats;
mod thread_exit;
pub mod trace;
mod transfer;
pub mod units;

pub use backend::cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use backend::cuda::CudaBackend;
#[cfg(all(feature = "metal", target_os = "macos"))]
pub use backend::metal::MetalBackend;
#[cfg(feature = "opencl")]
pub use backend::opencl::OpenClBackend;
pub use backend::sim::{CompletionHold, FaultPlan, SimBackend, SimOptions};
pub use backend::{
    Backend, BackendId, BatchWrite, DeviceEvent, DeviceMemory, Event, MemoryInfo, PinnedHost, ReadyEvent,
};
#[cfg(all(feature = "metal", target_os = "macos"))]
pub use buffer::view::metal::MetalMemory;
#[cfg(feature = "opencl")]
pub use buffer::view::opencl::OpenClMemory;
#[cfg(feature = "cuda")]
pub use buffer::CudaMemory;
pub use buffer::{
    Access, AsBufferView, BufferMetrics, BufferSlice, BufferSliceMut, BufferState, DeviceView, DeviceViewMut,
    TransferFuture, UnifiedBuffer,
};
pub use buffer_trait::MemoryBuffer;
pub use diagnostics::{Diagnostics, LiveBuffer};
#[cfg(feature = "dlpack")]
pub use dlpack::{
    DLDataType, DLDevice, DLManagedTensor, DLManagedTensorVersioned, DLPackVersion, DLTensor, DlpackExportError,
    DlpackTensor, DlpackTensorLegacy,
};
pub use element::{Element, TypeTag};
pub use error::{Direction, Error, Result};
pub use host::HostBlock;
pub use host::{
    HostAlloc, HostBuffer, MappedBuffer, MappedBufferMut, Ownership, PageInfo, PageKind, PinnedBuffer, PinnedPool,
    SharedBuffer, SharedHeader,
};
pub use manager::{AccessHint, ManagerOptions, MemoryManager};
pub use pool::array::{ArrayHandle, ArrayPool, ArrayPoolOptions, ArrayPoolStatistics, Rented};
pub use pool::object::{
    EvictionPolicy, MaintenanceReport, ObjectPool, ObjectPoolBuilder, ObjectPoolStatistics, Pooled,
};
pub use pool::snapshot::{BlockSnapshot, MemorySnapshot, PoolUsage, SegmentSnapshot, Usage};
pub use stats::{MemoryStatistics, TransferStatistics};
pub use trace::{Trace, TraceEvent, TraceOp, TraceOptions};
pub use transfer::{
    PeerBandwidth, PeerCopy, Priority, RetryPolicy, StagingPolicy, TransferBatch, TransferEngine, TransferError,
    TransferOptions, TransferOutcome, TransferReport,
};
