//! Finding the device: `OpenClOptions` and its environment variables, the platform and device
//! listing (`devices`, `DeviceSummary`), and the selectors that choose one.

use super::error::unavailable;
use crate::error::{Error, Result};
use opencl3::device::{
    get_device_data, get_device_ids, CL_DEVICE_GLOBAL_MEM_SIZE, CL_DEVICE_MAX_MEM_ALLOC_SIZE,
    CL_DEVICE_MEM_BASE_ADDR_ALIGN, CL_DEVICE_NAME, CL_DEVICE_PLATFORM, CL_DEVICE_TYPE, CL_DEVICE_TYPE_ACCELERATOR,
    CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_CPU, CL_DEVICE_TYPE_GPU, CL_DEVICE_VERSION,
};
use opencl3::error_codes::{
    error_text, CL_PLATFORM_NOT_FOUND_KHR, DLOPEN_FUNCTION_NOT_AVAILABLE, DLOPEN_RUNTIME_LOAD_FAILED,
};
use opencl3::platform::platform::{get_platform_data, get_platform_ids, CL_PLATFORM_NAME, CL_PLATFORM_VERSION};
use opencl3::types::{cl_device_id, cl_int, cl_platform_id};
use std::ptr;
use std::sync::Mutex;

/// Environment variable that selects the platform (index or name substring).
pub const ENV_PLATFORM: &str = "DCMEM_OPENCL_PLATFORM";
/// Environment variable that selects the device (index or name substring).
pub const ENV_DEVICE: &str = "DCMEM_OPENCL_DEVICE";

/// How to open an [`OpenClBackend`](super::OpenClBackend).
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

crate::setters::with_setters!(OpenClOptions {
    with_platform => platform: Option<String>,
    with_device => device: Option<String>,
    with_queues => queues: usize,
    with_check_max_alloc => check_max_alloc: bool,
});

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

pub(super) fn device_u64(device: cl_device_id, param: u32) -> std::result::Result<u64, cl_int> {
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

/// A device found by the listing: its summary, its id, and its base address alignment in bits.
pub(super) struct Found {
    pub(super) summary: DeviceSummary,
    pub(super) device: cl_device_id,
    pub(super) base_align_bits: u64,
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
pub(super) fn find_device(device: cl_device_id) -> Found {
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

fn enumerate() -> Result<Vec<Found>> {
    // PoCL initialises its devices on the first clGetDeviceIDs, and a second thread calling
    // meanwhile is told there are none; listing is rare, so one at a time.
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

pub(super) fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// Applies the selectors of `options` to the devices found.
pub(super) fn select(options: &OpenClOptions) -> Result<Found> {
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
