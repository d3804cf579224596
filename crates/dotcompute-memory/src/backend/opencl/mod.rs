//! The OpenCL backend (cargo feature `opencl`): real OpenCL buffers and enqueued copies.
//!
//! Built on the `opencl3` crate with its default `dynamic` feature, so the build needs no
//! OpenCL library: `libOpenCL.so.1` (the ICD loader) is opened at run time. A machine without
//! a loader or without any driver (ICD) gets [`Error::BackendUnavailable`] with the reason from
//! [`OpenClBackend::new`], never a panic.
//!
//! The device is treated exactly as a discrete GPU, even where the driver reports host-unified
//! memory (PoCL on a CPU does): [`Backend::is_unified`] is false, every allocation is a
//! `clCreateBuffer`, every transfer an enqueued `clEnqueueWriteBuffer`, `clEnqueueReadBuffer`,
//! `clEnqueueCopyBuffer` or `clEnqueueFillBuffer`. Nothing takes a host-pointer shortcut.
//!
//! # Choosing the device
//!
//! [`OpenClOptions::from_env`] reads `DCMEM_OPENCL_PLATFORM` and `DCMEM_OPENCL_DEVICE`. Each is
//! either an index or a case-insensitive substring of the name. The device index counts the
//! devices of the chosen platform, or, with no platform selector, all devices of all platforms
//! in platform order (as [`devices`] lists them). Without a device selector the first GPU is
//! taken, else the first device. A selector that matches nothing is an
//! [`Error::InvalidArgument`] whose value lists every platform or device that exists.
//!
//! # Handles, queues and events
//!
//! A [`DeviceMemory`] handle of this backend is an id into a table of `cl_mem` objects the
//! backend owns; ids are never reused, so a freed or foreign handle is an
//! [`Error::InvalidHandle`], never a dangling `cl_mem`. Offsets are checked against the
//! allocation before anything is enqueued. The backend has [`OpenClOptions::queues`] in-order
//! command queues (a backend made by [`OpenClBackend::from_raw`] has one, the caller's, which
//! may execute out of order); the blocking methods use queue 0 and wait for their command to
//! complete, the `*_async` methods enqueue on the queue asked for, flush it, and return an
//! [`OpenClEvent`]. Events learn of completion through `clSetEventCallback` (the driver's
//! thread wakes the registered [`Waker`]s), so nobody polls.
//!
//! # Errors
//!
//! - A driver error is [`Error::Backend`] with `backend: "opencl"`, the OpenCL function as
//!   `operation`, its code and its CL name (e.g. `CL_INVALID_BUFFER_SIZE`). Every check that can
//!   be made before enqueuing is made first, so a failing call changes nothing.
//! - An allocation larger than the device's global memory, or than what is still free of it
//!   (global memory minus what this backend instance holds: OpenCL has no portable free-memory
//!   query), or one the driver refuses with `CL_MEM_OBJECT_ALLOCATION_FAILURE`,
//!   `CL_OUT_OF_RESOURCES` or `CL_OUT_OF_HOST_MEMORY`, is [`Error::OutOfMemory`], so the
//!   manager releases its cache and retries.
//! - An allocation that fits in global memory but exceeds the device's largest single
//!   allocation (`CL_DEVICE_MAX_MEM_ALLOC_SIZE`) is [`Error::InvalidArgument`] naming both
//!   numbers: it is permanent (no retry or cache release can make it succeed, so it is not
//!   reported as out-of-memory, which is transient), and OpenCL itself classes it as an invalid
//!   value (`CL_INVALID_BUFFER_SIZE`).
//!
//! # Views and staging
//!
//! Slices of a buffer reach this backend as offsets into its allocation, which every enqueue
//! call takes directly; the backend makes no sub-buffers itself (their origin would have to be
//! a multiple of `CL_DEVICE_MEM_BASE_ADDR_ALIGN`, see [`OpenClBackend::base_address_alignment`]).
//! [`OpenClBackend::allocate_pinned`] gives pinned host memory for staging: a
//! `CL_MEM_ALLOC_HOST_PTR` buffer mapped for host access.
//!
//! # Kernels
//!
//! Device views (`buffer::view::opencl`) give kernels the `cl_mem` of an allocation
//! ([`OpenClBackend::cl_mem`]), queue 0 ([`OpenClBackend::queue`]), a [`sub_buffer`] where the
//! offset allows one, and order the buffer after the kernel with [`OpenClBackend::marker`] (the
//! backend's [`Backend::enqueue_marker`]) and with completion events the caller hands over
//! ([`OpenClBackend::adopt_event`]). Programs are built on [`OpenClBackend::context`] and
//! [`OpenClBackend::device_id`], or the caller brings its own context, device and queue with
//! [`OpenClBackend::from_raw`]; either way the backend holds its own references and releases
//! only those.
//!
//! # Drop safety
//!
//! `opencl3`'s own wrapper types panic in `Drop` when a release fails. This module keeps raw
//! handles in its own wrappers whose `Drop` ignores release errors (a failed release leaks one
//! object; it cannot corrupt memory), so nothing here panics.
//!
//! [`Backend::enqueue_marker`]: crate::backend::Backend::enqueue_marker
//! [`Backend::is_unified`]: crate::backend::Backend::is_unified
//! [`DeviceMemory`]: crate::backend::DeviceMemory
//! [`Error::Backend`]: crate::Error::Backend
//! [`Error::BackendUnavailable`]: crate::Error::BackendUnavailable
//! [`Error::InvalidArgument`]: crate::Error::InvalidArgument
//! [`Error::InvalidHandle`]: crate::Error::InvalidHandle
//! [`Error::OutOfMemory`]: crate::Error::OutOfMemory
//! [`Waker`]: std::task::Waker

mod backend;
mod discovery;
mod error;
mod event;
mod handles;
mod interop;
mod peer;
mod pinned;
mod raw;
mod trait_impl;

pub use backend::OpenClBackend;
pub use discovery::{devices, DeviceSummary, OpenClOptions, ENV_DEVICE, ENV_PLATFORM};
pub use event::OpenClEvent;
pub use interop::{sub_buffer, OpenClSubBuffer};
pub use pinned::PinnedHostBuffer;
