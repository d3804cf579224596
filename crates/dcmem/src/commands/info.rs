//! `dcmem info`: every backend the library knows, whether this machine can use it and why not,
//! (feature `opencl`) the OpenCL platforms and devices found, and every backend's devices with
//! the pairs that copy directly.

use crate::units;
use crate::CliResult;
use dotcompute_memory::backend::{open, open_devices, peer_matrix, probe_all, COMPILED_BACKENDS};
use dotcompute_memory::Error;
use std::fmt::Write as _;

fn limit(bytes: u64) -> String {
    if bytes >= 1 << 62 {
        "no limit".into()
    } else {
        units::bytes(bytes)
    }
}

/// `dcmem info`.
pub fn run() -> CliResult<String> {
    let mut out = String::new();
    let features: Vec<&str> = [
        ("opencl", cfg!(feature = "opencl")),
        ("cuda", cfg!(feature = "cuda")),
        ("metal", cfg!(all(feature = "metal", target_os = "macos"))),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    say!(
        out,
        "dcmem {} — backends known to this build (optional features compiled in: {})",
        env!("CARGO_PKG_VERSION"),
        if features.is_empty() { "none".to_string() } else { features.join(", ") }
    );
    say!(out);
    for (name, probe) in probe_all() {
        match probe {
            Ok(description) => {
                say!(out, "{name:<7} available    {description}");
                // Probe again for the memory figures (probe_all reports descriptions only).
                if let Ok(backend) = open(name) {
                    let m = backend.memory_info();
                    say!(
                        out,
                        "{:<7}              memory: total {}, free {}, largest allocation {}; {}",
                        "",
                        limit(m.total),
                        limit(m.free),
                        limit(m.max_allocation),
                        if backend.is_unified() {
                            "unified with host memory"
                        } else {
                            "discrete (copies between host and device)"
                        }
                    );
                }
            }
            // Left out of this binary: the command that builds one with it, rather than the
            // library's Cargo.toml line.
            Err(Error::BackendUnavailable { .. }) if name != "metal" && !features.contains(&name) => say!(
                out,
                "{name:<7} unavailable  this build of dcmem does not include it; build one that does: \
                 `cargo run --release -p dcmem --features {name} -- info`"
            ),
            Err(Error::BackendUnavailable { reason, .. }) => say!(out, "{name:<7} unavailable  {reason}"),
            Err(e) => say!(out, "{name:<7} unavailable  {e}"),
        }
    }
    #[cfg(feature = "opencl")]
    opencl_devices(&mut out);
    devices(&mut out);
    say!(out);
    say!(out, "Pick one with `dcmem bench --backend NAME` or DCMEM_BACKEND=NAME for library users.");
    Ok(out)
}

/// Every device of each available backend (one manager each), and which pairs copy directly;
/// the other pairs copy through host memory.
fn devices(out: &mut String) {
    say!(out);
    say!(
        out,
        "Devices (one manager each; `copy_from_buffer` between two is direct where listed, else staged through host memory):"
    );
    for &name in COMPILED_BACKENDS {
        let Ok(list) = open_devices(name) else { continue };
        let labels: Vec<String> = list.iter().map(|d| d.device_label()).collect();
        let reach = peer_matrix(&list);
        let mut direct = Vec::new();
        for (i, row) in reach.iter().enumerate() {
            for (j, &can) in row.iter().enumerate() {
                if i < j && can && reach[j][i] {
                    direct.push(format!("{} <-> {}", labels[i], labels[j]));
                } else if i != j && can && !reach[j][i] {
                    direct.push(format!("{} <- {}", labels[i], labels[j]));
                }
            }
        }
        let pairs = match (list.len(), direct.is_empty()) {
            (1, _) => "one device".to_string(),
            (_, true) => "no pair copies directly".to_string(),
            (_, false) => format!("direct: {}", direct.join(", ")),
        };
        say!(out, "  {name:<7} {}; {pairs}", labels.join(", "));
    }
}

/// The OpenCL platforms and devices on this machine, as the opencl backend sees them.
#[cfg(feature = "opencl")]
fn opencl_devices(out: &mut String) {
    use dotcompute_memory::backend::opencl::{devices, ENV_DEVICE, ENV_PLATFORM};
    say!(out);
    match devices() {
        Ok(list) => {
            say!(
                out,
                "OpenCL devices ({ENV_PLATFORM} / {ENV_DEVICE} select one by index or name; default: the first GPU, \
                 else the first device):"
            );
            let mut platform = None;
            for d in &list {
                if platform != Some(d.platform_index) {
                    platform = Some(d.platform_index);
                    say!(out, "  platform #{} \"{}\" ({})", d.platform_index, d.platform_name, d.platform_version);
                }
                say!(
                    out,
                    "    device #{} (#{} in its platform) \"{}\": {}, {}, global memory {}, largest allocation {}",
                    d.index,
                    d.index_in_platform,
                    d.name,
                    d.kind,
                    d.version,
                    units::bytes(d.global_mem),
                    units::bytes(d.max_alloc)
                );
            }
        }
        Err(Error::BackendUnavailable { reason, .. }) => say!(out, "OpenCL devices: none ({reason})"),
        Err(e) => say!(out, "OpenCL devices: none ({e})"),
    }
}
