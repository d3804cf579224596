//! Selecting a backend by name: the known names, opening one with its default settings, and
//! probing them all.

#[cfg(feature = "cuda")]
use super::cuda;
#[cfg(all(feature = "metal", target_os = "macos"))]
use super::metal;
#[cfg(feature = "opencl")]
use super::opencl;
use super::{cpu, sim, Backend};
use crate::error::{Error, Result};

/// The names `MemoryManager::from_env` accepts, in the order `dcmem info` lists them.
pub const BACKEND_NAMES: &[&str] = &["cpu", "sim", "opencl", "cuda", "metal"];

/// The backends compiled into this build (`cpu` first): every name of [`BACKEND_NAMES`] whose
/// cargo feature, if it has one, is enabled (`metal` needs macOS as well).
pub const COMPILED_BACKENDS: &[&str] = &[
    "cpu",
    "sim",
    #[cfg(feature = "opencl")]
    "opencl",
    #[cfg(feature = "cuda")]
    "cuda",
    #[cfg(all(feature = "metal", target_os = "macos"))]
    "metal",
];

/// The backends that a cargo feature of the same name adds to a build (`metal` only on macOS:
/// elsewhere the feature compiles to nothing, and opening `metal` says why).
pub const FEATURE_BACKENDS: &[&str] = &["opencl", "cuda", "metal"];

/// Why a backend that is not compiled in cannot be used, and what a library user puts in
/// Cargo.toml to get it.
#[cfg_attr(
    all(feature = "opencl", feature = "cuda", any(feature = "metal", not(target_os = "macos"))),
    allow(dead_code)
)]
fn not_compiled(name: &str, feature: &str) -> Error {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION_MAJOR"), ".", env!("CARGO_PKG_VERSION_MINOR"));
    Error::BackendUnavailable {
        backend: name.to_string(),
        reason: format!(
            "this build does not include it; enable the `{feature}` feature: \
             `dotcompute-memory = {{ version = \"{VERSION}\", features = [\"{feature}\"] }}` in Cargo.toml \
             (or `cargo run --features dotcompute-memory/{feature}`)"
        ),
    }
}

/// Why `metal` cannot be opened outside macOS, with or without its feature.
#[cfg(not(target_os = "macos"))]
fn not_on_this_platform() -> Error {
    Error::BackendUnavailable {
        backend: "metal".into(),
        reason: "Metal exists only on Apple platforms (the `metal` feature adds this backend on macOS)".into(),
    }
}

/// Opens the backend called `name` with its default settings.
///
/// Unknown names are [`Error::UnknownBackend`] (listing the valid ones); known backends that
/// are compiled out or have no driver/device are [`Error::BackendUnavailable`] with the reason.
pub fn open(name: &str) -> Result<std::sync::Arc<dyn Backend>> {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "cpu" => Ok(std::sync::Arc::new(cpu::CpuBackend::new())),
        "sim" => Ok(std::sync::Arc::new(sim::SimBackend::new(sim::SimOptions::default()))),
        #[cfg(feature = "opencl")]
        "opencl" => Ok(std::sync::Arc::new(opencl::OpenClBackend::new()?)),
        #[cfg(not(feature = "opencl"))]
        "opencl" => Err(not_compiled("opencl", "opencl")),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(std::sync::Arc::new(cuda::CudaBackend::from_env()?)),
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(not_compiled("cuda", "cuda")),
        #[cfg(all(feature = "metal", target_os = "macos"))]
        "metal" => Ok(std::sync::Arc::new(metal::MetalBackend::new()?)),
        #[cfg(all(not(feature = "metal"), target_os = "macos"))]
        "metal" => Err(not_compiled("metal", "metal")),
        #[cfg(not(target_os = "macos"))]
        "metal" => Err(not_on_this_platform()),
        _ => Err(Error::UnknownBackend { name: name.to_string(), valid: BACKEND_NAMES.join(", ") }),
    }
}

/// One line per known backend: its name and either its description or why it is unavailable.
pub fn probe_all() -> Vec<(&'static str, Result<String>)> {
    BACKEND_NAMES.iter().map(|&n| (n, open(n).map(|b| b.description()))).collect()
}

/// Every device of the backend called `name`, each opened with its default settings, for code
/// that spreads work over several devices (one manager per device):
/// - `cpu`: the one host;
/// - `sim`: a group of two simulated devices that reach each other
///   ([`SimBackend::group`](sim::SimBackend::group));
/// - `opencl`: one backend per device of every platform (each with its own context, so copies
///   between them are staged through host memory);
/// - `cuda`: one backend per GPU, on its primary context.
///
/// Errors as [`open`]: unknown names, and backends that are compiled out or have no device.
pub fn open_devices(name: &str) -> Result<Vec<std::sync::Arc<dyn Backend>>> {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "sim" => Ok(sim::SimBackend::group(2, sim::SimOptions::default())
            .into_iter()
            .map(|device| std::sync::Arc::new(device) as std::sync::Arc<dyn Backend>)
            .collect()),
        #[cfg(feature = "opencl")]
        "opencl" => opencl::devices()?
            .iter()
            .map(|d| {
                let options = opencl::OpenClOptions::default()
                    .with_platform(Some(d.platform_index.to_string()))
                    .with_device(Some(d.index_in_platform.to_string()));
                Ok(std::sync::Arc::new(opencl::OpenClBackend::with_options(options)?) as std::sync::Arc<dyn Backend>)
            })
            .collect(),
        #[cfg(feature = "cuda")]
        "cuda" => (0..cuda::CudaBackend::device_count()?)
            .map(|ordinal| Ok(std::sync::Arc::new(cuda::CudaBackend::new(ordinal)?) as std::sync::Arc<dyn Backend>))
            .collect(),
        _ => Ok(vec![open(name)?]),
    }
}

/// For each ordered pair `(to, from)` of `devices`, whether `to` copies directly from `from`
/// ([`Backend::can_copy_from_peer`]); the diagonal is true (a device reaches itself).
pub fn peer_matrix(devices: &[std::sync::Arc<dyn Backend>]) -> Vec<Vec<bool>> {
    devices
        .iter()
        .enumerate()
        .map(|(i, to)| {
            devices.iter().enumerate().map(|(j, from)| i == j || to.can_copy_from_peer(from.as_ref())).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_backend_is_a_known_name_and_metal_is_one() {
        assert!(FEATURE_BACKENDS.contains(&"metal"));
        for name in FEATURE_BACKENDS {
            assert!(BACKEND_NAMES.contains(name), "{name}");
        }
        assert_eq!(COMPILED_BACKENDS.contains(&"metal"), cfg!(all(feature = "metal", target_os = "macos")));
    }

    /// With or without the `metal` feature, `metal` opens nowhere but on macOS, and says so.
    #[cfg(not(target_os = "macos"))]
    #[test]
    fn metal_is_unavailable_off_apple_platforms_with_the_reason() {
        match open("metal").map(|b| b.name()) {
            Err(Error::BackendUnavailable { backend, reason }) => {
                assert_eq!(backend, "metal");
                assert!(reason.starts_with("Metal exists only on Apple platforms"), "{reason}");
            }
            other => panic!("expected BackendUnavailable, got {other:?}"),
        }
        assert!(probe_all().iter().any(|(name, probe)| *name == "metal" && probe.is_err()));
    }
}
