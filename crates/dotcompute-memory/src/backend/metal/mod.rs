//! The Metal backend (cargo feature `metal`, macOS only): Metal buffers, command queues and
//! blits, through the `objc2-metal` bindings.
//!
//! **Type-checked, never run.** This backend is compiled and linted for
//! `aarch64-apple-darwin` in CI (`cargo check` and `cargo clippy`, which need no Apple SDK),
//! but it has not run on a Mac: none of its code has executed, on any device. Treat it as a
//! backend to validate, not a tested one: on a Mac,
//! `cargo test -p dotcompute-memory --features metal --test conformance metal::` runs the
//! conformance suite on it, and `DCMEM_METAL_STORAGE=private` runs the same on private storage.
//! On other platforms the feature adds nothing and opening `metal` says why.
//!
//! # Device, storage and queues
//!
//! [`MetalBackend::new`] opens the system's default device (`MTLCreateSystemDefaultDevice`)
//! with [`MetalOptions::queues`] command queues. [`MetalOptions::storage`] chooses where
//! allocations live ([`MetalOptions::from_env`] reads it from `DCMEM_METAL_STORAGE`):
//!
//! - **shared** (the default where the device has unified memory, as every Apple silicon GPU
//!   does): `MTLResourceStorageModeShared` buffers. [`Backend::is_unified`] is true,
//!   [`Backend::host_ptr`] is the buffer's `contents`, and every read, write, copy and fill is
//!   a host memory operation on it: zero-copy, and the `*_async` forms complete before they
//!   return.
//! - **private** (the default elsewhere; choose it on Apple silicon to exercise the discrete
//!   code paths): `MTLResourceStorageModePrivate` buffers, which the CPU cannot address.
//!   [`Backend::is_unified`] is false, and every transfer is a blit (`MTLBlitCommandEncoder`)
//!   through a shared-storage staging buffer, or straight from or into memory from
//!   [`Backend::allocate_pinned`]. The `*_async` forms commit a command buffer on the queue
//!   asked for and return a [`MetalEvent`], completed by the command buffer's completed
//!   handler (`addCompletedHandler`), which wakes the registered wakers on Metal's thread; a
//!   read's handler first copies the data out of its staging buffer. The blocking forms do
//!   the same on queue 0 and wait.
//!
//! Blits on macOS take offsets and sizes in multiples of 4 bytes only. Every allocation's
//! length is rounded up to a multiple of 4; a read of other bytes reads the covering words and
//! copies out the range; a write, copy or fill of other bytes is a read-modify-write of the
//! covering words, done synchronously after every queue has drained and serialised with the
//! other such writes (see `MetalBackend::rewrite`), so it is correct but slow.
//!
//! # Memory figures and errors
//!
//! [`Backend::memory_info`] reports `recommendedMaxWorkingSetSize` as the total, that less
//! `currentAllocatedSize` as free, and `maxBufferLength` as the largest allocation. An
//! allocation above `maxBufferLength` is [`Error::InvalidArgument`] (permanent); one Metal
//! refuses is [`Error::OutOfMemory`]. A command buffer that fails reports its `NSError` as
//! [`Error::Backend`] with `backend: "metal"`, the error's code and description.
//!
//! # Kernels
//!
//! Device views (`buffer::view::metal`) give a kernel the `MTLBuffer` of an allocation, the
//! view's byte offset in it (a slice is the parent buffer plus an offset), and queue 0: a
//! compute pass committed on that queue before the view drops is ordered before the buffer's
//! next use by [`Backend::enqueue_marker`], an empty command buffer committed after it.
//! [`MetalBackend::device`] gives the device to build pipelines on.
//!
//! [`Backend::allocate_pinned`]: crate::backend::Backend::allocate_pinned
//! [`Backend::enqueue_marker`]: crate::backend::Backend::enqueue_marker
//! [`Backend::host_ptr`]: crate::backend::Backend::host_ptr
//! [`Backend::is_unified`]: crate::backend::Backend::is_unified
//! [`Backend::memory_info`]: crate::backend::Backend::memory_info
//! [`Error::Backend`]: crate::Error::Backend
//! [`Error::InvalidArgument`]: crate::Error::InvalidArgument
//! [`Error::OutOfMemory`]: crate::Error::OutOfMemory

mod backend;
mod event;
mod handles;
mod options;
mod pinned;
mod trait_impl;

pub use backend::MetalBackend;
pub use event::MetalEvent;
pub use options::{MetalOptions, MetalStorage, ENV_STORAGE};

/// The `objc2` crate this backend is built on, for callers' Metal objects of the same version.
pub use objc2;
/// The `objc2-metal` bindings this backend is built on (`MTLBuffer`, `MTLCommandQueue`, …), for
/// callers' kernels and pipelines of the same version.
pub use objc2_metal;
