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
//! object; it cannot corrupt memory), so nothing here panics. Only [`raw_copy_baseline`] uses
//! `opencl3`'s wrappers, on objects it has just created successfully.

use super::{Backend, BackendId, DeviceEvent, DeviceMemory, Event, MemoryInfo, ReadyEvent};
use crate::error::{Error, Result};
use opencl3::command_queue::{
    create_command_queue, create_command_queue_with_properties, enqueue_barrier_with_wait_list, enqueue_copy_buffer,
    enqueue_fill_buffer, enqueue_map_buffer, enqueue_marker_with_wait_list, enqueue_read_buffer,
    enqueue_unmap_mem_object, enqueue_write_buffer, finish, flush, get_command_queue_data, release_command_queue,
    retain_command_queue, CL_QUEUE_CONTEXT, CL_QUEUE_DEVICE, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE,
    CL_QUEUE_PROPERTIES,
};
use opencl3::context::context::{
    create_context, get_context_data, release_context, retain_context, CL_CONTEXT_DEVICES,
};
use opencl3::device::{
    get_device_data, get_device_ids, release_device, retain_device, CL_DEVICE_GLOBAL_MEM_SIZE,
    CL_DEVICE_MAX_MEM_ALLOC_SIZE, CL_DEVICE_MEM_BASE_ADDR_ALIGN, CL_DEVICE_NAME, CL_DEVICE_PLATFORM, CL_DEVICE_TYPE,
    CL_DEVICE_TYPE_ACCELERATOR, CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_CPU, CL_DEVICE_TYPE_GPU, CL_DEVICE_VERSION,
};
use opencl3::error_codes::{
    error_text, CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_HOST_MEMORY, CL_OUT_OF_RESOURCES,
    CL_PLATFORM_NOT_FOUND_KHR, DLOPEN_FUNCTION_NOT_AVAILABLE, DLOPEN_RUNTIME_LOAD_FAILED,
};
use opencl3::event::{
    get_event_data, release_event, retain_event, set_event_callback, wait_for_events, CL_COMPLETE,
    CL_EVENT_COMMAND_EXECUTION_STATUS, CL_EVENT_COMMAND_TYPE, CL_EVENT_CONTEXT,
};
use opencl3::memory::{
    create_buffer, create_sub_buffer, get_mem_object_data, release_mem_object, CL_BUFFER_CREATE_TYPE_REGION,
    CL_MAP_READ, CL_MAP_WRITE, CL_MEM_ALLOC_HOST_PTR, CL_MEM_CONTEXT, CL_MEM_READ_WRITE,
};
use opencl3::platform::platform::{get_platform_data, get_platform_ids, CL_PLATFORM_NAME, CL_PLATFORM_VERSION};
use opencl3::types::{
    cl_buffer_region, cl_command_queue, cl_context, cl_device_id, cl_event, cl_int, cl_mem, cl_platform_id,
    CL_BLOCKING, CL_NON_BLOCKING,
};
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Environment variable that selects the platform (index or name substring).
pub const ENV_PLATFORM: &str = "DCMEM_OPENCL_PLATFORM";
/// Environment variable that selects the device (index or name substring).
pub const ENV_DEVICE: &str = "DCMEM_OPENCL_DEVICE";

const BACKEND: &str = "opencl";

/// How to open an [`OpenClBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenClOptions {
    /// Platform selector: an index or a case-insensitive name substring (`None`: any).
    pub platform: Option<String>,
    /// Device selector: an index or a case-insensitive name substring (`None`: the first GPU,
    /// else the first device). See the module docs for what the index counts.
    pub device: Option<String>,
    /// Number of in-order command queues (default 2; 0 is treated as 1).
    pub queues: usize,
    /// Reject allocations above `CL_DEVICE_MAX_MEM_ALLOC_SIZE` before asking the driver
    /// (default true). Turning it off lets the driver's own `CL_INVALID_BUFFER_SIZE` through,
    /// which tests use to exercise the driver-error path.
    pub check_max_alloc: bool,
}

impl Default for OpenClOptions {
    fn default() -> Self {
        OpenClOptions { platform: None, device: None, queues: 2, check_max_alloc: true }
    }
}

impl OpenClOptions {
    /// Defaults, with the selectors taken from `DCMEM_OPENCL_PLATFORM` and
    /// `DCMEM_OPENCL_DEVICE` (unset or blank means no selector).
    ///
    /// Errors: [`Error::InvalidArgument`] naming the variable when its value is not UTF-8.
    pub fn from_env() -> Result<Self> {
        const EXPECTED: &str = "an index or a case-insensitive part of a name, as `dcmem info` lists them";
        let var = |name| crate::environment::var(name, EXPECTED).map(|v| v.map(|s| s.trim().to_string()));
        Ok(OpenClOptions { platform: var(ENV_PLATFORM)?, device: var(ENV_DEVICE)?, ..Default::default() })
    }
}

/// One OpenCL device as found on this machine, for listings such as `dcmem info`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceSummary {
    /// Index of the platform in `clGetPlatformIDs` order.
    pub platform_index: usize,
    /// `CL_PLATFORM_NAME`.
    pub platform_name: String,
    /// `CL_PLATFORM_VERSION`.
    pub platform_version: String,
    /// Index of the device in the flat list of all devices (the index `DCMEM_OPENCL_DEVICE`
    /// takes when no platform is selected).
    pub index: usize,
    /// Index of the device within its platform (the index `DCMEM_OPENCL_DEVICE` takes when a
    /// platform is selected).
    pub index_in_platform: usize,
    /// `CL_DEVICE_NAME`.
    pub name: String,
    /// `GPU`, `CPU`, `accelerator` or `other`.
    pub kind: String,
    /// `CL_DEVICE_VERSION`.
    pub version: String,
    /// `CL_DEVICE_GLOBAL_MEM_SIZE` in bytes.
    pub global_mem: u64,
    /// `CL_DEVICE_MAX_MEM_ALLOC_SIZE` in bytes.
    pub max_alloc: u64,
}

// ---- errors ----

/// The crate error for a failed OpenCL call.
fn cl_error(operation: &'static str, code: cl_int) -> Error {
    let name = error_text(code);
    let message = if name == "UNKNOWN_ERROR" { format!("unknown OpenCL error {code}") } else { name.to_string() };
    Error::Backend {
        backend: BACKEND,
        operation,
        code: i64::from(code),
        message,
        transient: matches!(code, CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY | CL_MEM_OBJECT_ALLOCATION_FAILURE),
    }
}

fn unavailable(reason: String) -> Error {
    Error::BackendUnavailable { backend: BACKEND.to_string(), reason }
}

fn is_oom(code: cl_int) -> bool {
    matches!(code, CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY | CL_MEM_OBJECT_ALLOCATION_FAILURE)
}

// ---- raw handles that release without panicking ----

macro_rules! raw_handle {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $release:path) => {
        $(#[$doc])*
        struct $name($raw);

        // SAFETY: OpenCL objects are reference-counted by the driver, and every OpenCL API
        // call except clSetKernelArg is thread-safe (OpenCL 1.1+, spec section A.2), so the
        // handle may be used and released from any thread.
        unsafe impl Send for $name {}
        // SAFETY: as above; shared use only passes the handle to thread-safe API calls.
        unsafe impl Sync for $name {}

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: this wrapper holds one reference to a live object, made when it was
                // created, and gives it back exactly once. A failure leaks the object.
                let _ = unsafe { $release(self.0) };
            }
        }
    };
}

raw_handle!(
    /// One reference to a `cl_context`.
    RawContext,
    cl_context,
    release_context
);
raw_handle!(
    /// One reference to a `cl_command_queue`.
    RawQueue,
    cl_command_queue,
    release_command_queue
);
raw_handle!(
    /// One reference to a `cl_mem`.
    RawMem,
    cl_mem,
    release_mem_object
);
raw_handle!(
    /// One reference to a `cl_event`.
    RawEvent,
    cl_event,
    release_event
);
raw_handle!(
    /// One reference to a `cl_device_id` (`clRetainDevice` counts only for sub-devices; on a
    /// root device retaining and releasing do nothing).
    RawDevice,
    cl_device_id,
    release_device
);

/// One allocation in the handle table.
struct Mem {
    raw: RawMem,
    /// Bytes held on the device (at least 1: OpenCL has no empty buffers).
    bytes: usize,
}

struct Table {
    mems: HashMap<u64, Arc<Mem>>,
    next: u64,
    used: u64,
}

// ---- device queries ----

fn device_bytes(device: cl_device_id, param: u32) -> std::result::Result<Vec<u8>, cl_int> {
    get_device_data(device, param)
}

fn c_string(bytes: Vec<u8>) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

fn device_string(device: cl_device_id, param: u32) -> String {
    device_bytes(device, param).map(c_string).unwrap_or_else(|code| format!("<{}>", error_text(code)))
}

fn device_u64(device: cl_device_id, param: u32) -> std::result::Result<u64, cl_int> {
    let b = device_bytes(device, param)?;
    Ok(match b.len() {
        8 => u64::from_ne_bytes(b[..8].try_into().unwrap_or([0; 8])),
        4 => u64::from(u32::from_ne_bytes(b[..4].try_into().unwrap_or([0; 4]))),
        _ => 0,
    })
}

fn platform_string(platform: cl_platform_id, param: u32) -> String {
    get_platform_data(platform, param).map(c_string).unwrap_or_else(|code| format!("<{}>", error_text(code)))
}

fn kind_name(device_type: u64) -> &'static str {
    if device_type & CL_DEVICE_TYPE_GPU != 0 {
        "GPU"
    } else if device_type & CL_DEVICE_TYPE_CPU != 0 {
        "CPU"
    } else if device_type & CL_DEVICE_TYPE_ACCELERATOR != 0 {
        "accelerator"
    } else {
        "other"
    }
}

/// The platforms, or why there are none.
fn platform_ids() -> Result<Vec<cl_platform_id>> {
    match get_platform_ids() {
        Ok(ids) if !ids.is_empty() => Ok(ids),
        Ok(_) => Err(unavailable(
            "no OpenCL platform found (clGetPlatformIDs listed none): install pocl-opencl-icd or a GPU driver's OpenCL ICD"
                .into(),
        )),
        Err(CL_PLATFORM_NOT_FOUND_KHR) => Err(unavailable(
            "no OpenCL platform found (CL_PLATFORM_NOT_FOUND_KHR): install pocl-opencl-icd or a GPU driver's OpenCL ICD"
                .into(),
        )),
        Err(DLOPEN_RUNTIME_LOAD_FAILED) => Err(unavailable(
            "the OpenCL ICD loader (libOpenCL.so.1) could not be loaded (DLOPEN_RUNTIME_LOAD_FAILED): install ocl-icd-libopencl1 and pocl-opencl-icd or a GPU driver"
                .into(),
        )),
        Err(DLOPEN_FUNCTION_NOT_AVAILABLE) => Err(unavailable(
            "the OpenCL loader has no clGetPlatformIDs (DLOPEN_FUNCTION_NOT_AVAILABLE): the installed libOpenCL is broken".into(),
        )),
        Err(code) => Err(unavailable(format!("clGetPlatformIDs failed: {} ({code})", error_text(code)))),
    }
}

struct Found {
    summary: DeviceSummary,
    device: cl_device_id,
    base_align_bits: u64,
}

/// Where a device was found: its platform and its indices.
struct Place {
    platform_index: usize,
    platform_name: String,
    platform_version: String,
    index: usize,
    index_in_platform: usize,
}

/// The device's summary and base address alignment, as queried from the driver.
fn describe(device: cl_device_id, place: Place) -> Found {
    let summary = DeviceSummary {
        platform_index: place.platform_index,
        platform_name: place.platform_name,
        platform_version: place.platform_version,
        index: place.index,
        index_in_platform: place.index_in_platform,
        name: device_string(device, CL_DEVICE_NAME),
        kind: kind_name(device_u64(device, CL_DEVICE_TYPE).unwrap_or(0)).to_string(),
        version: device_string(device, CL_DEVICE_VERSION),
        global_mem: device_u64(device, CL_DEVICE_GLOBAL_MEM_SIZE).unwrap_or(0),
        max_alloc: device_u64(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE).unwrap_or(0),
    };
    let base_align_bits = device_u64(device, CL_DEVICE_MEM_BASE_ADDR_ALIGN).unwrap_or(0);
    Found { summary, device, base_align_bits }
}

/// `device` as [`enumerate`] lists it, or, for a device it does not list (a sub-device),
/// described with its platform's position and indices 0.
fn find_device(device: cl_device_id) -> Found {
    if let Some(found) = enumerate().ok().and_then(|all| all.into_iter().find(|f| f.device == device)) {
        return found;
    }
    let platform = device_bytes(device, CL_DEVICE_PLATFORM)
        .ok()
        .and_then(|b| b.get(..std::mem::size_of::<usize>()).and_then(|b| b.try_into().ok()))
        .map(|b| usize::from_ne_bytes(b) as cl_platform_id)
        .unwrap_or(ptr::null_mut());
    let platform_index = get_platform_ids().ok().and_then(|ids| ids.iter().position(|&p| p == platform)).unwrap_or(0);
    let (platform_name, platform_version) = if platform.is_null() {
        ("<unknown platform>".to_string(), String::new())
    } else {
        (platform_string(platform, CL_PLATFORM_NAME), platform_string(platform, CL_PLATFORM_VERSION))
    };
    describe(device, Place { platform_index, platform_name, platform_version, index: 0, index_in_platform: 0 })
}

/// Handles an OpenCL info query returned as an array of pointers (`CL_CONTEXT_DEVICES`).
fn handles<T>(bytes: &[u8]) -> Vec<*mut T> {
    bytes
        .chunks_exact(std::mem::size_of::<usize>())
        .filter_map(|c| c.try_into().ok())
        .map(|c| usize::from_ne_bytes(c) as *mut T)
        .collect()
}

/// The single handle an OpenCL info query returned (`CL_QUEUE_CONTEXT`, `CL_EVENT_CONTEXT`).
fn handle<T>(bytes: &[u8]) -> *mut T {
    handles(bytes).first().copied().unwrap_or(ptr::null_mut())
}

fn enumerate() -> Result<Vec<Found>> {
    // PoCL 3.1 initialises its devices on the first clGetDeviceIDs; a second thread calling
    // meanwhile is told there are none (seen when tests open backends in parallel). Listing is
    // rare, so one at a time.
    static LISTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LISTING.lock().unwrap_or_else(|p| p.into_inner());
    let mut all = Vec::new();
    let mut failures = Vec::new();
    for (pi, &platform) in platform_ids()?.iter().enumerate() {
        let platform_name = platform_string(platform, CL_PLATFORM_NAME);
        let platform_version = platform_string(platform, CL_PLATFORM_VERSION);
        // A platform whose devices cannot be listed contributes none (clinfo does the same);
        // the reason is kept for the error if no platform has a device.
        let ids = get_device_ids(platform, CL_DEVICE_TYPE_ALL).unwrap_or_else(|code| {
            failures.push(format!(
                "platform #{pi} \"{platform_name}\": clGetDeviceIDs failed with {} ({code})",
                error_text(code)
            ));
            Vec::new()
        });
        for (di, &device) in ids.iter().enumerate() {
            let place = Place {
                platform_index: pi,
                platform_name: platform_name.clone(),
                platform_version: platform_version.clone(),
                index: all.len(),
                index_in_platform: di,
            };
            all.push(describe(device, place));
        }
    }
    if all.is_empty() {
        return Err(unavailable(format!(
            "OpenCL platforms exist but none has a device{}: check the driver installation (clinfo -l)",
            if failures.is_empty() { String::new() } else { format!(" ({})", failures.join("; ")) }
        )));
    }
    Ok(all)
}

/// Every OpenCL device on this machine, in platform order, or why there is none (no loader,
/// no platform: [`Error::BackendUnavailable`]).
pub fn devices() -> Result<Vec<DeviceSummary>> {
    Ok(enumerate()?.into_iter().map(|f| f.summary).collect())
}

fn matches_selector(selector: &str, index: usize, name: &str) -> bool {
    match selector.parse::<usize>() {
        Ok(i) => i == index,
        Err(_) => name.to_lowercase().contains(&selector.to_lowercase()),
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// Applies the selectors of `options` to the devices found.
fn select(options: &OpenClOptions) -> Result<Found> {
    let all = enumerate()?;
    let mut candidates: Vec<Found> = all;
    if let Some(sel) = &options.platform {
        let mut platforms: Vec<(usize, String)> =
            candidates.iter().map(|f| (f.summary.platform_index, f.summary.platform_name.clone())).collect();
        platforms.dedup();
        // The first matching platform only: an index names one, a substring may match several.
        let Some((chosen, _)) = platforms.iter().find(|(i, n)| matches_selector(sel, *i, n)).cloned() else {
            let list: Vec<String> = platforms.iter().map(|(i, n)| format!("#{i} \"{n}\"")).collect();
            return Err(Error::InvalidArgument {
                option: "OpenCL platform selector (DCMEM_OPENCL_PLATFORM)",
                value: format!(
                    "\"{sel}\"; platforms with devices on this machine: {}",
                    if list.is_empty() { "none".to_string() } else { list.join(", ") }
                ),
                reason: "matches no OpenCL platform by index or case-insensitive name substring",
            });
        };
        candidates.retain(|f| f.summary.platform_index == chosen);
    }
    let by_platform = options.platform.is_some();
    let index_of = |f: &Found| if by_platform { f.summary.index_in_platform } else { f.summary.index };
    let pos = match &options.device {
        Some(sel) => {
            candidates.iter().position(|f| matches_selector(sel, index_of(f), &f.summary.name)).ok_or_else(|| {
                let list: Vec<String> = candidates
                    .iter()
                    .map(|f| {
                        format!(
                            "#{} \"{}\" ({}, platform #{} \"{}\")",
                            index_of(f),
                            f.summary.name,
                            f.summary.kind,
                            f.summary.platform_index,
                            f.summary.platform_name
                        )
                    })
                    .collect();
                Error::InvalidArgument {
                    option: "OpenCL device selector (DCMEM_OPENCL_DEVICE)",
                    value: format!("\"{sel}\"; devices: {}", list.join(", ")),
                    reason: "matches no OpenCL device by index or case-insensitive name substring",
                }
            })?
        }
        None => candidates.iter().position(|f| f.summary.kind == "GPU").unwrap_or(0),
    };
    Ok(candidates.swap_remove(pos))
}

// ---- the backend ----

/// A device reached through OpenCL. See the module docs.
pub struct OpenClBackend {
    id: BackendId,
    // Field order is drop order: buffers, then queues, then the device and the context.
    table: Mutex<Table>,
    queues: Vec<RawQueue>,
    /// Per queue: made with `CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE` (only a queue passed to
    /// `from_raw` can be).
    out_of_order: Vec<bool>,
    device: RawDevice,
    context: RawContext,
    /// True for objects passed to `from_raw`: the user's queue is not finished on drop.
    borrowed: bool,
    summary: DeviceSummary,
    base_align_bits: u64,
    options: OpenClOptions,
}

// SAFETY: the raw fields are OpenCL handles (thread-safe API, see `raw_handle!`); everything
// else is Send + Sync.
unsafe impl Send for OpenClBackend {}
// SAFETY: as above; all mutable state is behind the Mutex.
unsafe impl Sync for OpenClBackend {}

impl std::fmt::Debug for OpenClBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenClBackend")
            .field("id", &self.id)
            .field("device", &self.summary)
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl OpenClBackend {
    /// Opens the device chosen by `DCMEM_OPENCL_PLATFORM` / `DCMEM_OPENCL_DEVICE` (see
    /// [`OpenClOptions::from_env`]).
    pub fn new() -> Result<Self> {
        Self::with_options(OpenClOptions::from_env()?)
    }

    /// Opens the device chosen by `options`.
    pub fn with_options(options: OpenClOptions) -> Result<Self> {
        let found = select(&options)?;
        let device = found.device;
        let context = create_context(&[device], ptr::null(), None, ptr::null_mut())
            .map_err(|code| cl_error("clCreateContext", code))?;
        let context = RawContext(context);
        let n = options.queues.max(1);
        let mut queues = Vec::with_capacity(n);
        for _ in 0..n {
            // SAFETY: `device` belongs to `context` (the context was made from it).
            let q = unsafe { create_command_queue_with_properties(context.0, device, ptr::null()) }.or_else(|_| {
                // OpenCL 1.x platforms lack the 2.0 entry point; the 1.0 one exists everywhere.
                // SAFETY: as above.
                unsafe { create_command_queue(context.0, device, 0) }
            });
            queues.push(RawQueue(q.map_err(|code| cl_error("clCreateCommandQueue", code))?));
        }
        // SAFETY: `device` is a live device id (just listed by the driver); the wrapper gives
        // the reference back on drop.
        unsafe { retain_device(device) }.map_err(|code| cl_error("clRetainDevice", code))?;
        let device = RawDevice(device);
        Ok(OpenClBackend {
            id: BackendId::next(),
            table: Mutex::new(Table { mems: HashMap::new(), next: 1, used: 0 }),
            out_of_order: vec![false; queues.len()],
            queues,
            device,
            context,
            borrowed: false,
            summary: found.summary,
            base_align_bits: found.base_align_bits,
            options,
        })
    }

    /// A backend on objects the caller made: its allocations are buffers of `context`, its one
    /// queue is `queue` (queue 0, the queue device views hand to kernels), on `device_id`.
    ///
    /// The backend takes a reference of its own to each object (`clRetainContext`,
    /// `clRetainDevice`, `clRetainCommandQueue`) and gives back only those when it is dropped;
    /// it never releases the caller's references, so the caller may drop its own wrappers
    /// (e.g. `opencl3`'s `Context` and `CommandQueue`) before or after the backend. Dropping
    /// the backend does not wait for the queue (the caller's work on it is the caller's).
    ///
    /// An out-of-order queue is accepted: the backend waits for each of its own commands
    /// through that command's event, and the marker that ends a device view is a barrier there
    /// (see [`OpenClBackend::marker`]).
    ///
    /// Errors, each before anything is retained:
    /// - [`Error::NullHandle`] naming the null handle;
    /// - [`Error::DeviceNotInContext`] when `device_id` is not among `CL_CONTEXT_DEVICES`;
    /// - [`Error::ForeignContext`] when `CL_QUEUE_CONTEXT` is not `context`;
    /// - [`Error::InvalidArgument`] when `CL_QUEUE_DEVICE` is not `device_id`;
    /// - [`Error::Backend`] when a query or a retain fails.
    ///
    /// # Safety
    ///
    /// Each handle must be null or a live object of its type (a `cl_context`, a `cl_device_id`,
    /// a `cl_command_queue`) on which the caller holds a reference for the duration of this
    /// call. OpenCL cannot tell a dangling handle from a live one; passing one is undefined
    /// behaviour in the driver.
    pub unsafe fn from_raw(context: cl_context, device_id: cl_device_id, queue: cl_command_queue) -> Result<Self> {
        for (what, null) in [
            ("cl_context", context.is_null()),
            ("cl_device_id", device_id.is_null()),
            ("cl_command_queue", queue.is_null()),
        ] {
            if null {
                return Err(Error::NullHandle { backend: BACKEND, what });
            }
        }
        let devices = get_context_data(context, CL_CONTEXT_DEVICES)
            .map(|b| handles::<c_void>(&b))
            .map_err(|code| cl_error("clGetContextInfo", code))?;
        if !devices.contains(&device_id) {
            return Err(Error::DeviceNotInContext {
                backend: BACKEND,
                device: format!("{device_id:p}"),
                context: format!("{context:p}"),
                devices: devices.iter().map(|&d| format!("{d:p}")).collect::<Vec<_>>().join(", "),
            });
        }
        let queue_context = get_command_queue_data(queue, CL_QUEUE_CONTEXT)
            .map(|b| handle::<c_void>(&b))
            .map_err(|code| cl_error("clGetCommandQueueInfo", code))?;
        if queue_context != context {
            return Err(Error::ForeignContext {
                backend: BACKEND,
                what: "command queue",
                handle: format!("{queue:p}"),
                expected: format!("{context:p}"),
                found: format!("{queue_context:p}"),
            });
        }
        let queue_device = get_command_queue_data(queue, CL_QUEUE_DEVICE)
            .map(|b| handle::<c_void>(&b))
            .map_err(|code| cl_error("clGetCommandQueueInfo", code))?;
        if queue_device != device_id {
            return Err(Error::InvalidArgument {
                option: "OpenClBackend::from_raw queue",
                value: format!("queue {queue:p} of device {queue_device:p}, given device {device_id:p}"),
                reason: "the queue must be a queue of the device passed as device_id",
            });
        }
        let out_of_order = queue_properties(queue)? & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE != 0;
        let found = find_device(device_id);
        // Each wrapper is made right after its retain succeeds, so a later failure gives back
        // exactly the references taken so far.
        // SAFETY: the caller guarantees a live context; the wrapper releases this reference.
        unsafe { retain_context(context) }.map_err(|code| cl_error("clRetainContext", code))?;
        let context = RawContext(context);
        // SAFETY: as above, for the device.
        unsafe { retain_device(device_id) }.map_err(|code| cl_error("clRetainDevice", code))?;
        let device = RawDevice(device_id);
        // SAFETY: as above, for the queue.
        unsafe { retain_command_queue(queue) }.map_err(|code| cl_error("clRetainCommandQueue", code))?;
        let queue = RawQueue(queue);
        Ok(OpenClBackend {
            id: BackendId::next(),
            table: Mutex::new(Table { mems: HashMap::new(), next: 1, used: 0 }),
            queues: vec![queue],
            out_of_order: vec![out_of_order],
            device,
            context,
            borrowed: true,
            summary: found.summary,
            base_align_bits: found.base_align_bits,
            options: OpenClOptions { queues: 1, ..OpenClOptions::default() },
        })
    }

    /// The backend's context, for building programs and making queues on it. The handle stays
    /// valid while the backend lives; to keep it longer take a reference of your own
    /// (`clRetainContext`).
    pub fn context(&self) -> cl_context {
        self.context.0
    }

    /// The backend's device.
    pub fn device_id(&self) -> cl_device_id {
        self.device.0
    }

    /// The backend's queue `index` (`None` from [`Backend::queue_count`] on). Queue 0 is the one
    /// device views hand to kernels. Valid while the backend lives.
    pub fn queue(&self, index: usize) -> Option<cl_command_queue> {
        self.queues.get(index).map(|q| q.0)
    }

    /// True when queue `index` executes out of order (only a queue passed to
    /// [`OpenClBackend::from_raw`] can).
    pub fn is_out_of_order(&self, index: usize) -> bool {
        self.out_of_order.get(index).copied().unwrap_or(false)
    }

    /// The `cl_mem` behind `memory` (a whole allocation: for a pool segment, the segment). It
    /// stays valid while `memory` is not freed.
    ///
    /// Errors: [`Error::InvalidHandle`] when `memory` is not a live allocation of this backend.
    pub fn cl_mem(&self, memory: &DeviceMemory) -> Result<cl_mem> {
        Ok(self.mem(memory, 0, 0)?.raw.0)
    }

    /// Enqueues a marker on queue `queue` (taken modulo the queue count) and flushes the queue:
    /// the event completes once everything enqueued on that queue before it has completed, by
    /// this backend or by anyone else's kernels. It is `clEnqueueMarkerWithWaitList` on an
    /// in-order queue, and `clEnqueueBarrierWithWaitList` on an out-of-order one, so commands
    /// enqueued after it there also wait for it.
    pub fn marker(&self, queue: usize) -> Result<OpenClEvent> {
        let index = queue % self.queues.len();
        let q = self.queues[index].0;
        let (ev, operation) = if self.is_out_of_order(index) {
            // SAFETY: a live queue of this backend; no wait list.
            (unsafe { enqueue_barrier_with_wait_list(q, 0, ptr::null()) }, "clEnqueueBarrierWithWaitList")
        } else {
            // SAFETY: as above.
            (unsafe { enqueue_marker_with_wait_list(q, 0, ptr::null()) }, "clEnqueueMarkerWithWaitList")
        };
        let ev = ev.map(RawEvent).map_err(|code| cl_error(operation, code))?;
        Ok(OpenClEvent::new(ev, operation, q, Vec::new()))
    }

    /// Takes a reference of its own to a completion event of the caller's (a kernel on a queue
    /// of the caller's), so a buffer can wait for it. The event must belong to this backend's
    /// context: [`Error::ForeignContext`] otherwise.
    ///
    /// # Safety
    ///
    /// `event` must be a live `cl_event` on which the caller holds a reference for the
    /// duration of this call.
    pub unsafe fn adopt_event(&self, event: cl_event) -> Result<OpenClEvent> {
        if event.is_null() {
            return Err(Error::NullHandle { backend: BACKEND, what: "cl_event" });
        }
        let found = get_event_data(event, CL_EVENT_CONTEXT)
            .map(|b| handle::<c_void>(&b))
            .map_err(|code| cl_error("clGetEventInfo", code))?;
        if found != self.context.0 {
            return Err(Error::ForeignContext {
                backend: BACKEND,
                what: "completion event",
                handle: format!("{event:p}"),
                expected: format!("{:p}", self.context.0),
                found: format!("{found:p}"),
            });
        }
        // SAFETY: the caller guarantees a live event; the wrapper releases this reference.
        unsafe { retain_event(event) }.map_err(|code| cl_error("clRetainEvent", code))?;
        Ok(OpenClEvent::adopt(RawEvent(event), "the caller's command"))
    }

    /// The device this backend uses.
    pub fn device(&self) -> &DeviceSummary {
        &self.summary
    }

    /// The options it was opened with.
    pub fn options(&self) -> &OpenClOptions {
        &self.options
    }

    /// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` in bytes: the alignment of every buffer's start, and the
    /// origin alignment a sub-buffer needs.
    pub fn base_address_alignment(&self) -> u64 {
        self.base_align_bits / 8
    }

    /// Page-locked host memory for staging: a `CL_MEM_ALLOC_HOST_PTR` buffer of `len` bytes,
    /// mapped for host reads and writes until dropped, zeroed.
    ///
    /// Its bytes are ordinary host memory to this backend's transfer methods (pass
    /// [`PinnedHostBuffer::as_ptr`] to [`Backend::write_async`] / [`Backend::read_async`]);
    /// on discrete GPUs, drivers move data from such memory by DMA without an extra staging
    /// copy. It does not count towards [`OpenClBackend::used`]. Errors: `len` above the max
    /// allocation is [`Error::InvalidArgument`]; driver failures are [`Error::Backend`]
    /// (`clCreateBuffer`, `clEnqueueMapBuffer`).
    pub fn allocate_pinned(&self, len: usize) -> Result<PinnedHostBuffer> {
        let bytes = len.max(1);
        if bytes as u64 > self.summary.max_alloc {
            return Err(Error::InvalidArgument {
                option: "pinned allocation size",
                value: format!(
                    "{len} bytes, above this device's largest single allocation of {} bytes (CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
                    self.summary.max_alloc
                ),
                reason: "one OpenCL buffer cannot exceed CL_DEVICE_MAX_MEM_ALLOC_SIZE",
            });
        }
        // SAFETY: a valid context, no host pointer; ALLOC_HOST_PTR asks the driver for
        // host-accessible (pinned) memory.
        let mem =
            unsafe { create_buffer(self.context.0, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, bytes, ptr::null_mut()) }
                .map(RawMem)
                .map_err(|code| cl_error("clCreateBuffer", code))?;
        let q = self.queue_at(0);
        // SAFETY: `q` is a live queue of this backend; the wrapper takes its own reference so the
        // pinned buffer can outlive the backend.
        unsafe { retain_command_queue(q) }.map_err(|code| cl_error("clRetainCommandQueue", code))?;
        let queue = RawQueue(q);
        let mut mapped: cl_mem = ptr::null_mut();
        // SAFETY: `mem` is live and `bytes` long; the blocking map returns once `mapped` is valid.
        let ev = unsafe {
            enqueue_map_buffer(q, mem.0, CL_BLOCKING, CL_MAP_READ | CL_MAP_WRITE, 0, bytes, &mut mapped, 0, ptr::null())
        }
        .map(RawEvent)
        .map_err(|code| cl_error("clEnqueueMapBuffer", code))?;
        wait_raw(&ev, "clEnqueueMapBuffer")?;
        let ptr = NonNull::new(mapped.cast::<u8>()).ok_or_else(|| Error::Backend {
            backend: BACKEND,
            operation: "clEnqueueMapBuffer",
            code: 0,
            message: "the driver mapped the buffer at a null address".into(),
            transient: false,
        })?;
        // SAFETY: the mapping is valid for `bytes` bytes of reads and writes until unmapped; the
        // driver's contents are unspecified, so they are initialised here before any `&[u8]`.
        unsafe { ptr::write_bytes(ptr.as_ptr(), 0, bytes) };
        Ok(PinnedHostBuffer { ptr, len, mem, queue })
    }

    /// Bytes currently allocated through this backend instance.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue_at(&self, index: usize) -> cl_command_queue {
        self.queues[index % self.queues.len()].0
    }

    /// Checks ownership and bounds of `memory`, then returns its `cl_mem` (kept alive by the
    /// returned `Arc` even if the handle is freed meanwhile).
    fn mem(&self, memory: &DeviceMemory, offset: usize, len: usize) -> Result<Arc<Mem>> {
        memory.check(self, offset, len)?;
        self.lock().mems.get(&memory.handle()).cloned().ok_or_else(|| Error::InvalidHandle {
            backend: BACKEND,
            reason: format!("no live OpenCL allocation with id {} (already freed?)", memory.handle()),
        })
    }

    fn create_mem(&self, bytes: usize) -> std::result::Result<RawMem, cl_int> {
        // SAFETY: a valid context, no host pointer and no host-pointer flags.
        unsafe { create_buffer(self.context.0, CL_MEM_READ_WRITE, bytes, ptr::null_mut()) }.map(RawMem)
    }

    /// Enqueues a device-to-device copy on `queue`; overlapping ranges of one allocation go
    /// through a temporary buffer so the result is that of `memmove`.
    fn enqueue_copy(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<Option<OpenClEvent>> {
        let s = self.mem(src, src_offset, len)?;
        let d = self.mem(dst, dst_offset, len)?;
        if len == 0 {
            return Ok(None);
        }
        let q = self.queue_at(queue);
        let overlap = src.handle() == dst.handle() && src_offset < dst_offset + len && dst_offset < src_offset + len;
        if overlap {
            let tmp = Arc::new(Mem {
                raw: self.create_mem(len).map_err(|code| cl_error("clCreateBuffer", code))?,
                bytes: len,
            });
            // SAFETY: both buffers are live (held by Arcs) and the ranges were checked.
            let first = unsafe { enqueue_copy_buffer(q, s.raw.0, tmp.raw.0, src_offset, 0, len, 0, ptr::null()) }
                .map(RawEvent)
                .map_err(|code| cl_error("clEnqueueCopyBuffer", code))?;
            // The second copy waits for the first through its wait list (a queue passed to
            // `from_raw` may execute out of order).
            // SAFETY: as above; the wait list is the one live event `first`.
            let second = unsafe { enqueue_copy_buffer(q, tmp.raw.0, d.raw.0, 0, dst_offset, len, 1, &first.0) }
                .map(RawEvent)
                .map_err(|code| cl_error("clEnqueueCopyBuffer", code));
            let second = match second {
                Ok(e) => e,
                Err(e) => {
                    // Nothing observable was written yet; let the first copy finish before the
                    // temporary goes away (refcounting would keep it anyway).
                    let _ = wait_for_events(&[first.0]);
                    return Err(e);
                }
            };
            drop(first);
            return Ok(Some(OpenClEvent::new(second, "clEnqueueCopyBuffer", q, vec![s, d, tmp])));
        }
        // SAFETY: both buffers are live (held by Arcs) and the ranges were checked above.
        let ev = unsafe { enqueue_copy_buffer(q, s.raw.0, d.raw.0, src_offset, dst_offset, len, 0, ptr::null()) }
            .map(RawEvent)
            .map_err(|code| cl_error("clEnqueueCopyBuffer", code))?;
        Ok(Some(OpenClEvent::new(ev, "clEnqueueCopyBuffer", q, vec![s, d])))
    }

    fn enqueue_fill(&self, queue: usize, mem: &Mem, offset: usize, len: usize, value: u8) -> Result<RawEvent> {
        let pattern = value;
        // SAFETY: the buffer is live, offset..offset+len lies inside it (checked by callers);
        // the one-byte pattern is copied by the driver before the call returns.
        unsafe {
            enqueue_fill_buffer(
                self.queue_at(queue),
                mem.raw.0,
                (&raw const pattern).cast::<c_void>(),
                1,
                offset,
                len,
                0,
                ptr::null(),
            )
        }
        .map(RawEvent)
        .map_err(|code| cl_error("clEnqueueFillBuffer", code))
    }
}

/// Waits for `event`; a failed command reports its own status under `operation`.
fn wait_raw(event: &RawEvent, operation: &'static str) -> Result<()> {
    let waited = wait_for_events(&[event.0]);
    match event_status(event.0) {
        Ok(s) if s < 0 => Err(cl_error(operation, s)),
        Ok(_) => waited.map_err(|code| cl_error("clWaitForEvents", code)),
        Err(code) => Err(cl_error("clGetEventInfo", code)),
    }
}

fn event_status(event: cl_event) -> std::result::Result<cl_int, cl_int> {
    let b = get_event_data(event, CL_EVENT_COMMAND_EXECUTION_STATUS)?;
    Ok(b.get(..4).and_then(|b| b.try_into().ok()).map(cl_int::from_ne_bytes).unwrap_or(CL_COMPLETE))
}

impl Drop for OpenClBackend {
    fn drop(&mut self) {
        // Let queued work finish before its buffers are released (the driver would keep them
        // alive anyway; this keeps teardown orderly). A queue passed to `from_raw` is the
        // caller's, with work of the caller's on it: it is not waited for.
        if !self.borrowed {
            for q in &self.queues {
                let _ = finish(q.0);
            }
        }
    }
}

/// `CL_QUEUE_PROPERTIES` of `queue`.
fn queue_properties(queue: cl_command_queue) -> Result<u64> {
    let b =
        get_command_queue_data(queue, CL_QUEUE_PROPERTIES).map_err(|code| cl_error("clGetCommandQueueInfo", code))?;
    Ok(b.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes).unwrap_or(0))
}

// SAFETY: allocations are tracked per instance and checked on every call; `host_ptr` and
// events follow the trait's contract (see the module docs and each method).
unsafe impl Backend for OpenClBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn id(&self) -> BackendId {
        self.id
    }

    fn description(&self) -> String {
        let s = &self.summary;
        format!(
            "OpenCL platform \"{}\" ({}), device \"{}\" ({}, {}), {} global memory, {} max allocation, {} queues",
            s.platform_name,
            s.platform_version,
            s.name,
            s.kind,
            s.version,
            mib(s.global_mem),
            mib(s.max_alloc),
            self.queues.len()
        )
    }

    fn is_unified(&self) -> bool {
        false
    }

    fn memory_info(&self) -> MemoryInfo {
        let used = self.lock().used;
        MemoryInfo {
            total: self.summary.global_mem,
            free: self.summary.global_mem.saturating_sub(used),
            max_allocation: self.summary.max_alloc,
        }
    }

    fn allocate(&self, size: usize, align: usize) -> Result<DeviceMemory> {
        if !align.is_power_of_two() {
            return Err(Error::InvalidArgument {
                option: "alignment",
                value: align.to_string(),
                reason: "must be a power of two",
            });
        }
        // OpenCL buffers start at CL_DEVICE_MEM_BASE_ADDR_ALIGN; device addresses are never
        // exposed through this API, so a larger `align` has nothing to apply to.
        let bytes = size.max(1);
        if self.options.check_max_alloc
            && bytes as u64 > self.summary.max_alloc
            && bytes as u64 <= self.summary.global_mem
        {
            return Err(Error::InvalidArgument {
                option: "OpenCL allocation size",
                value: format!(
                    "{size} bytes, above this device's largest single allocation of {} bytes (CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
                    self.summary.max_alloc
                ),
                reason: "one OpenCL buffer cannot exceed CL_DEVICE_MAX_MEM_ALLOC_SIZE; split the data into several buffers",
            });
        }
        // Reserve the bytes first, so concurrent allocations cannot both pass the check.
        let free = {
            let mut table = self.lock();
            let free = self.summary.global_mem.saturating_sub(table.used);
            if bytes as u64 > free {
                return Err(Error::allocator_out_of_memory(BACKEND, size as u64, free));
            }
            table.used += bytes as u64;
            free
        };
        let oom = |e: Error| match e {
            Error::Backend { code, .. } if is_oom(code as cl_int) => {
                Error::allocator_out_of_memory(BACKEND, size as u64, free)
            }
            other => other,
        };
        let made = self.create_mem(bytes).map_err(|code| cl_error("clCreateBuffer", code)).and_then(|raw| {
            let mem = Mem { raw, bytes };
            // Fresh memory is zeroed, as the trait promises (clCreateBuffer leaves it
            // undefined). Many drivers commit memory only at first use, so an out-of-memory
            // may show up here rather than in clCreateBuffer.
            let ev = self.enqueue_fill(0, &mem, 0, bytes, 0)?;
            wait_raw(&ev, "clEnqueueFillBuffer")?;
            Ok(mem)
        });
        let mut table = self.lock();
        let mem = match made {
            Ok(mem) => mem,
            Err(e) => {
                table.used -= bytes as u64;
                return Err(oom(e));
            }
        };
        let handle = table.next;
        table.next += 1;
        table.mems.insert(handle, Arc::new(mem));
        drop(table);
        // SAFETY: `handle` names the allocation just inserted, of at least `size` bytes; ids are
        // never reused, so this DeviceMemory is its only owner.
        Ok(unsafe { DeviceMemory::from_raw(self.id, handle, size) })
    }

    fn free(&self, memory: DeviceMemory) -> Result<()> {
        memory.check(self, 0, 0)?;
        let mut table = self.lock();
        match table.mems.remove(&memory.handle()) {
            Some(mem) => {
                table.used -= mem.bytes as u64;
                drop(table);
                // clReleaseMemObject happens when the last Arc goes (here, or when an event
                // that still uses the buffer is dropped); the driver deletes the buffer only once
                // the commands queued on it have finished, so this is stream-ordered.
                drop(mem);
                Ok(())
            }
            None => Err(Error::InvalidHandle {
                backend: BACKEND,
                reason: format!("no live OpenCL allocation with id {} (already freed?)", memory.handle()),
            }),
        }
    }

    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn super::PinnedHost>> {
        Ok(Box::new(OpenClBackend::allocate_pinned(self, size)?))
    }

    fn host_ptr(&self, _memory: &DeviceMemory) -> Option<NonNull<u8>> {
        None
    }

    fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()> {
        let mem = self.mem(dst, dst_offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the buffer is live and the range checked; `src` is a borrowed slice that stays
        // valid for the whole blocking call, and the event is waited for before returning.
        let ev = unsafe {
            enqueue_write_buffer(
                self.queue_at(0),
                mem.raw.0,
                CL_BLOCKING,
                dst_offset,
                src.len(),
                src.as_ptr().cast(),
                0,
                ptr::null(),
            )
        }
        .map(RawEvent)
        .map_err(|code| cl_error("clEnqueueWriteBuffer", code))?;
        // A blocking write may return once `src` is copied; wait for the command itself so the
        // data is visible to every queue.
        wait_raw(&ev, "clEnqueueWriteBuffer")
    }

    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
        let mem = self.mem(src, src_offset, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: the buffer is live and the range checked; `dst` is an exclusive borrow valid
        // for the whole blocking call, which returns only when the data is in `dst`.
        let ev = unsafe {
            enqueue_read_buffer(
                self.queue_at(0),
                mem.raw.0,
                CL_BLOCKING,
                src_offset,
                dst.len(),
                dst.as_mut_ptr().cast(),
                0,
                ptr::null(),
            )
        }
        .map(RawEvent)
        .map_err(|code| cl_error("clEnqueueReadBuffer", code))?;
        wait_raw(&ev, "clEnqueueReadBuffer")
    }

    fn copy(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        match self.enqueue_copy(0, src, src_offset, dst, dst_offset, len)? {
            Some(ev) => ev.wait(),
            None => Ok(()),
        }
    }

    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
        let mem = self.mem(dst, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let ev = self.enqueue_fill(0, &mem, offset, len, value)?;
        wait_raw(&ev, "clEnqueueFillBuffer")
    }

    fn queue_count(&self) -> usize {
        self.queues.len()
    }

    unsafe fn write_async(
        &self,
        queue: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<Event> {
        let mem = self.mem(dst, dst_offset, len)?;
        if len == 0 {
            return Ok(Box::new(ReadyEvent));
        }
        let q = self.queue_at(queue);
        // SAFETY: the buffer is live and the range checked; the caller guarantees `src` stays
        // valid for reads of `len` bytes, unwritten, until the returned event completes.
        let ev =
            unsafe { enqueue_write_buffer(q, mem.raw.0, CL_NON_BLOCKING, dst_offset, len, src.cast(), 0, ptr::null()) }
                .map(RawEvent)
                .map_err(|code| cl_error("clEnqueueWriteBuffer", code))?;
        Ok(Box::new(OpenClEvent::new(ev, "clEnqueueWriteBuffer", q, vec![mem])))
    }

    unsafe fn read_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<Event> {
        let mem = self.mem(src, src_offset, len)?;
        if len == 0 {
            return Ok(Box::new(ReadyEvent));
        }
        let q = self.queue_at(queue);
        // SAFETY: the buffer is live and the range checked; the caller guarantees `dst` stays
        // valid for exclusive writes of `len` bytes until the returned event completes.
        let ev =
            unsafe { enqueue_read_buffer(q, mem.raw.0, CL_NON_BLOCKING, src_offset, len, dst.cast(), 0, ptr::null()) }
                .map(RawEvent)
                .map_err(|code| cl_error("clEnqueueReadBuffer", code))?;
        Ok(Box::new(OpenClEvent::new(ev, "clEnqueueReadBuffer", q, vec![mem])))
    }

    fn copy_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        match self.enqueue_copy(queue, src, src_offset, dst, dst_offset, len)? {
            Some(ev) => Ok(Box::new(ev)),
            None => Ok(Box::new(ReadyEvent)),
        }
    }

    fn synchronize(&self) -> Result<()> {
        for q in &self.queues {
            finish(q.0).map_err(|code| cl_error("clFinish", code))?;
        }
        Ok(())
    }

    fn enqueue_marker(&self, queue: usize) -> Result<Option<Event>> {
        Ok(Some(Box::new(self.marker(queue)?)))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

// ---- pinned host memory ----

/// Pinned host memory from [`OpenClBackend::allocate_pinned`]: a mapped
/// `CL_MEM_ALLOC_HOST_PTR` buffer. Unmapped and released on drop (it keeps its own references
/// to the buffer and a queue, so it may outlive the backend).
pub struct PinnedHostBuffer {
    ptr: NonNull<u8>,
    len: usize,
    // Drop order: unmap (in Drop), then the buffer, then the queue.
    mem: RawMem,
    queue: RawQueue,
}

// SAFETY: the buffer owns its mapping exclusively (like a Box<[u8]>); the OpenCL handles are
// thread-safe (see `raw_handle!`).
unsafe impl Send for PinnedHostBuffer {}
// SAFETY: shared access only hands out `&[u8]`; mutation needs `&mut self`.
unsafe impl Sync for PinnedHostBuffer {}

impl std::fmt::Debug for PinnedHostBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedHostBuffer").field("ptr", &self.ptr).field("len", &self.len).finish()
    }
}

impl PinnedHostBuffer {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start of the mapped bytes (valid for `len()` bytes while `self` lives). Writing through
    /// it (e.g. as the destination of [`Backend::read_async`]) is allowed only while no slice
    /// from [`PinnedHostBuffer::as_slice`] is alive; prefer `as_mut_slice().as_mut_ptr()`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is valid and initialised for `len` bytes while self lives (zeroed
        // at creation); mutation needs &mut self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and &mut self excludes every other reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl super::PinnedHost for PinnedHostBuffer {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl Drop for PinnedHostBuffer {
    fn drop(&mut self) {
        let (queue, mem, mapped) = (self.queue.0, self.mem.0, self.ptr.as_ptr().cast::<c_void>());
        // SAFETY: `mapped` is the live mapping of `mem` made on `queue`; nothing uses it after this.
        let unmapped = unsafe { enqueue_unmap_mem_object(queue, mem, mapped, 0, ptr::null()) };
        if let Ok(ev) = unmapped {
            let _ = wait_for_events(&[ev]);
            drop(RawEvent(ev));
        }
    }
}

// ---- sub-buffers ----

/// A sub-buffer of an allocation (`clCreateSubBuffer`): a `cl_mem` of its own that starts at
/// the parent's `origin`, for kernels that take a buffer without an offset. It holds one
/// reference, given back on drop (a failed release leaks it; nothing panics); OpenCL keeps the
/// parent alive while it exists. Made by a device view (`DeviceView::opencl_sub_buffer`),
/// whose life bounds `'a`: after the view ends, the memory may hold another buffer's data.
pub struct OpenClSubBuffer<'a> {
    mem: RawMem,
    origin: usize,
    len: usize,
    _view: std::marker::PhantomData<&'a ()>,
}

impl std::fmt::Debug for OpenClSubBuffer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenClSubBuffer")
            .field("mem", &self.mem.0)
            .field("origin", &self.origin)
            .field("len", &self.len)
            .finish()
    }
}

impl OpenClSubBuffer<'_> {
    /// The sub-buffer's `cl_mem`, valid while `self` lives.
    pub fn as_raw(&self) -> cl_mem {
        self.mem.0
    }

    /// Where it starts in its parent, in bytes.
    pub fn origin(&self) -> usize {
        self.origin
    }

    /// Its size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len
    }
}

/// The sub-buffer alignment `parent`'s context requires, in bits: the largest
/// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` among the context's devices.
fn sub_buffer_alignment_bits(parent: cl_mem) -> Result<u64> {
    let context = get_mem_object_data(parent, CL_MEM_CONTEXT)
        .map(|b| handle::<c_void>(&b))
        .map_err(|code| cl_error("clGetMemObjectInfo", code))?;
    let devices = get_context_data(context, CL_CONTEXT_DEVICES)
        .map(|b| handles::<c_void>(&b))
        .map_err(|code| cl_error("clGetContextInfo", code))?;
    let mut bits = 8;
    for device in devices {
        bits = bits
            .max(device_u64(device, CL_DEVICE_MEM_BASE_ADDR_ALIGN).map_err(|code| cl_error("clGetDeviceInfo", code))?);
    }
    Ok(bits)
}

/// A sub-buffer of `parent` covering `len` bytes from `origin`, with the parent's flags.
///
/// Errors, checked before anything is created: [`Error::InvalidArgument`] for `len == 0`
/// (OpenCL has no empty buffers); [`Error::MisalignedSubBuffer`] when `origin` is not a
/// multiple of `CL_DEVICE_MEM_BASE_ADDR_ALIGN` (converted from bits to bytes; the largest over
/// the devices of the parent's context). A driver failure is [`Error::Backend`]
/// (`clCreateSubBuffer`).
///
/// # Safety
///
/// `parent` must be a live buffer `cl_mem` with at least `origin + len` bytes, and the memory
/// must be the caller's to hand out for `'a`.
pub unsafe fn sub_buffer<'a>(parent: cl_mem, origin: usize, len: usize) -> Result<OpenClSubBuffer<'a>> {
    if len == 0 {
        return Err(Error::InvalidArgument {
            option: "OpenCL sub-buffer length",
            value: format!("0 bytes at byte offset {origin}"),
            reason: "OpenCL has no empty buffers; an empty view has no sub-buffer",
        });
    }
    let alignment_bits = sub_buffer_alignment_bits(parent)?;
    let alignment = (alignment_bits / 8).max(1) as usize;
    if origin % alignment != 0 {
        return Err(Error::MisalignedSubBuffer { byte_offset: origin, alignment, alignment_bits });
    }
    let region = cl_buffer_region { origin, size: len };
    // SAFETY: the caller guarantees a live parent covering the region; flags 0 inherit the
    // parent's; `region` outlives the call.
    let mem =
        unsafe { create_sub_buffer(parent, 0, CL_BUFFER_CREATE_TYPE_REGION, (&raw const region).cast::<c_void>()) }
            .map(RawMem)
            .map_err(|code| cl_error("clCreateSubBuffer", code))?;
    Ok(OpenClSubBuffer { mem, origin, len, _view: std::marker::PhantomData })
}

// ---- events ----

#[derive(Default)]
struct CompletionState {
    /// The status the driver reported to the callback (`CL_COMPLETE` or a negative error).
    status: Option<cl_int>,
    wakers: Vec<Waker>,
}

/// Shared between an [`OpenClEvent`] and its driver callback.
#[derive(Default)]
struct Completion {
    state: Mutex<CompletionState>,
}

impl Completion {
    fn lock(&self) -> std::sync::MutexGuard<'_, CompletionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn complete(&self, status: cl_int) {
        let wakers = {
            let mut s = self.lock();
            s.status.get_or_insert(status);
            std::mem::take(&mut s.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Called by the driver, on its own thread, once the command has completed or failed.
extern "C" fn completion_callback(_event: cl_event, status: cl_int, user_data: *mut c_void) {
    // SAFETY: `user_data` is the pointer `Arc::into_raw` made in `OpenClEvent::new` for this one
    // registration; the driver calls the callback exactly once, so the reference is taken back
    // exactly once.
    let completion = unsafe { Arc::from_raw(user_data.cast_const().cast::<Completion>()) };
    // A panicking waker must not unwind into the driver.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| completion.complete(status)));
}

/// Completion of one enqueued OpenCL command.
///
/// `is_complete` asks the driver for the event's execution status; `wait` is
/// `clWaitForEvents`; `on_complete` registers a waker that the `clSetEventCallback` callback
/// wakes on the driver's thread. The event keeps the buffers its command uses alive until it
/// is dropped.
pub struct OpenClEvent {
    raw: RawEvent,
    operation: &'static str,
    completion: Arc<Completion>,
    _keep: Vec<Arc<Mem>>,
}

impl std::fmt::Debug for OpenClEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenClEvent").field("operation", &self.operation).finish()
    }
}

impl OpenClEvent {
    /// Wraps `raw`, flushes `queue` so the command starts, and registers the completion
    /// callback. If registration fails the command is waited for here (it is already enqueued,
    /// so returning an error would let the caller release memory the command still uses).
    fn new(raw: RawEvent, operation: &'static str, queue: cl_command_queue, keep: Vec<Arc<Mem>>) -> Self {
        let _ = flush(queue);
        Self::registered(raw, operation, keep)
    }

    /// Wraps `raw` (an event of a command this backend did not enqueue) and registers the
    /// completion callback, as `new` does, without flushing any queue.
    fn adopt(raw: RawEvent, operation: &'static str) -> Self {
        Self::registered(raw, operation, Vec::new())
    }

    fn registered(raw: RawEvent, operation: &'static str, keep: Vec<Arc<Mem>>) -> Self {
        let completion = Arc::new(Completion::default());
        let user = Arc::into_raw(completion.clone()).cast_mut().cast::<c_void>();
        if set_event_callback(raw.0, CL_COMPLETE, completion_callback, user).is_err() {
            // SAFETY: the registration failed, so the driver will never call back with `user`;
            // take the reference back here instead.
            drop(unsafe { Arc::from_raw(user.cast_const().cast::<Completion>()) });
            let _ = wait_for_events(&[raw.0]);
            completion.complete(event_status(raw.0).unwrap_or(CL_COMPLETE));
        }
        OpenClEvent { raw, operation, completion, _keep: keep }
    }

    /// The `cl_event`, valid while `self` lives (take a reference with `clRetainEvent` to keep
    /// it longer).
    pub fn as_raw(&self) -> cl_event {
        self.raw.0
    }

    /// The event as a one-entry wait list, for an enqueue call of the caller's
    /// (`event_wait_list` / `num_events_in_wait_list`, or opencl3's `set_event_wait_list`).
    pub fn wait_list(&self) -> &[cl_event] {
        std::slice::from_ref(&self.raw.0)
    }

    /// `CL_EVENT_COMMAND_TYPE`: e.g. `CL_COMMAND_MARKER` or `CL_COMMAND_BARRIER` for
    /// [`OpenClBackend::marker`]'s events.
    pub fn command_type(&self) -> Result<u32> {
        let b = get_event_data(self.raw.0, CL_EVENT_COMMAND_TYPE).map_err(|code| cl_error("clGetEventInfo", code))?;
        Ok(b.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes).unwrap_or(0))
    }
}

impl DeviceEvent for OpenClEvent {
    fn is_complete(&self) -> Result<bool> {
        match event_status(self.raw.0) {
            Ok(CL_COMPLETE) => Ok(true),
            Ok(s) if s < 0 => Err(cl_error(self.operation, s)),
            Ok(_) => Ok(false),
            Err(code) => Err(cl_error("clGetEventInfo", code)),
        }
    }

    fn wait(&self) -> Result<()> {
        wait_raw(&self.raw, self.operation)
    }

    fn on_complete(&self, waker: Waker) {
        let mut s = self.completion.lock();
        if s.status.is_some() {
            drop(s);
            waker.wake();
        } else if !s.wakers.iter().any(|w| w.will_wake(&waker)) {
            s.wakers.push(waker);
        }
    }
}

// ---- raw opencl3 baseline for benchmarks ----

/// Median times of plain `opencl3` calls on one device, from [`raw_copy_baseline`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RawCopyTimes {
    /// Bytes per copy.
    pub bytes: usize,
    /// Blocking `clEnqueueWriteBuffer` of `bytes` from a `Vec<u8>` (host to device).
    pub write: Duration,
    /// Blocking `clEnqueueReadBuffer` of `bytes` into a `Vec<u8>` (device to host).
    pub read: Duration,
    /// `clEnqueueCopyBuffer` of `bytes` between two buffers, waited for (device to device).
    pub copy: Duration,
    /// `clCreateBuffer` of `bytes` followed by its release, no data touched. Drivers may
    /// commit memory lazily (PoCL does), so this can be far cheaper than a usable buffer.
    pub create_buffer: Duration,
    /// `clCreateBuffer`, a zero `clEnqueueFillBuffer` over all of it (waited for), then the
    /// release: what a fresh [`OpenClBackend`] allocation does, since its memory is zeroed.
    pub create_buffer_zeroed: Duration,
}

/// The raw `opencl3` baseline on the device chosen by [`OpenClOptions::from_env`]; see
/// [`raw_copy_baseline_with`].
pub fn raw_copy_baseline(bytes: usize, repetitions: usize) -> Result<RawCopyTimes> {
    raw_copy_baseline_with(&OpenClOptions::from_env()?, bytes, repetitions)
}

/// Times plain `opencl3` calls (its `Context`, `CommandQueue` and `Buffer<u8>` types, no code
/// of this crate in the timed path) on the device `options` selects, which is the device an
/// [`OpenClBackend`] with the same options uses: the baseline that `dcmem bench --backend
/// opencl` sets our write/read/copy/allocate rows against.
///
/// After one untimed warm-up of each operation, each is run `repetitions` times (at least 1)
/// and the median is reported. Host memory is touched before timing. Errors are the same as
/// [`OpenClBackend::with_options`]'s, plus [`Error::Backend`] for a failing call and
/// [`Error::InvalidArgument`] for `bytes == 0` or above the device's max allocation.
pub fn raw_copy_baseline_with(options: &OpenClOptions, bytes: usize, repetitions: usize) -> Result<RawCopyTimes> {
    use opencl3::command_queue::CommandQueue;
    use opencl3::context::Context;
    use opencl3::device::Device;
    use opencl3::memory::Buffer;

    let found = select(options)?;
    if bytes == 0 || bytes as u64 > found.summary.max_alloc {
        return Err(Error::InvalidArgument {
            option: "raw baseline size",
            value: format!("{bytes} bytes (device max allocation {} bytes)", found.summary.max_alloc),
            reason: "must be between 1 and CL_DEVICE_MAX_MEM_ALLOC_SIZE",
        });
    }
    let err = |operation: &'static str| move |e: opencl3::error_codes::ClError| cl_error(operation, e.0);
    let context = Context::from_device(&Device::new(found.device)).map_err(err("clCreateContext"))?;
    let queue = CommandQueue::create_default_with_properties(&context, 0, 0).map_err(err("clCreateCommandQueue"))?;
    let create = || {
        // SAFETY: valid context, no host pointer.
        unsafe { Buffer::<u8>::create(&context, CL_MEM_READ_WRITE, bytes, ptr::null_mut()) }
            .map_err(err("clCreateBuffer"))
    };
    let mut a = create()?;
    let mut b = create()?;
    let src = vec![0xA5u8; bytes];
    let mut dst = vec![0u8; bytes];
    let reps = repetitions.max(1);
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<Duration> {
        f()?; // warm-up
        let mut v = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            f()?;
            v.push(t.elapsed());
        }
        Ok(median(v))
    };
    let write = time(&mut || {
        // SAFETY: `a` holds `bytes` bytes; `src` outlives the blocking call.
        let ev = unsafe { queue.enqueue_write_buffer(&mut a, CL_BLOCKING, 0, &src, &[]) }
            .map_err(err("clEnqueueWriteBuffer"))?;
        ev.wait().map_err(err("clWaitForEvents"))
    })?;
    let read = time(&mut || {
        // SAFETY: `a` holds `bytes` bytes; `dst` outlives the blocking call.
        let ev = unsafe { queue.enqueue_read_buffer(&a, CL_BLOCKING, 0, &mut dst, &[]) }
            .map_err(err("clEnqueueReadBuffer"))?;
        ev.wait().map_err(err("clWaitForEvents"))
    })?;
    let copy = time(&mut || {
        // SAFETY: both buffers hold `bytes` bytes.
        let ev =
            unsafe { queue.enqueue_copy_buffer(&a, &mut b, 0, 0, bytes, &[]) }.map_err(err("clEnqueueCopyBuffer"))?;
        ev.wait().map_err(err("clWaitForEvents"))
    })?;
    let create_buffer = time(&mut || create().map(drop))?;
    let zero = 0u8;
    let create_buffer_zeroed = time(&mut || {
        let mut fresh = create()?;
        // SAFETY: `fresh` holds `bytes` bytes; the one-byte pattern is copied by the driver.
        let ev = unsafe { queue.enqueue_fill_buffer(&mut fresh, &[zero], 0, bytes, &[]) }
            .map_err(err("clEnqueueFillBuffer"))?;
        ev.wait().map_err(err("clWaitForEvents"))
    })?;
    if dst.first() != Some(&0xA5) {
        return Err(Error::Backend {
            backend: BACKEND,
            operation: "clEnqueueReadBuffer",
            code: 0,
            message: "raw baseline read back different data than it wrote".into(),
            transient: false,
        });
    }
    Ok(RawCopyTimes { bytes, write, read, copy, create_buffer, create_buffer_zeroed })
}
