//! `dcmem info`, `dcmem demo`, `dcmem stats`.

use crate::{units, CliError, CliResult};
use std::fmt::Write as _;

/// Appends a formatted line to a `String` (writing to a `String` cannot fail).
macro_rules! say {
    ($out:expr) => { $out.push('\n') };
    ($out:expr, $($arg:tt)*) => { { let _ = writeln!($out, $($arg)*); } };
}
use dotcompute_memory::backend::{open, probe_all};
use dotcompute_memory::{Access, Error, ManagerOptions, MemoryManager, MemoryStatistics, UnifiedBuffer};

fn limit(bytes: u64) -> String {
    if bytes >= 1 << 62 {
        "no limit".into()
    } else {
        units::bytes(bytes)
    }
}

/// `dcmem info`.
pub fn info() -> CliResult<String> {
    let mut out = String::new();
    let features: Vec<&str> = [("opencl", cfg!(feature = "opencl")), ("cuda", cfg!(feature = "cuda"))]
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
            Err(Error::BackendUnavailable { reason, .. }) => say!(out, "{name:<7} unavailable  {reason}"),
            Err(e) => say!(out, "{name:<7} unavailable  {e}"),
        }
    }
    #[cfg(feature = "opencl")]
    opencl_devices(&mut out);
    say!(out);
    say!(out, "Pick one with `dcmem bench --backend NAME` or DCMEM_BACKEND=NAME for library users.");
    Ok(out)
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

fn manager(backend: &str) -> CliResult<MemoryManager> {
    Ok(MemoryManager::with_backend_name(backend, ManagerOptions { maintenance_interval: None, ..Default::default() })?)
}

fn show<T: dotcompute_memory::Element>(out: &mut String, step: &str, buf: &UnifiedBuffer<T>) {
    let m = buf.metrics();
    say!(
        out,
        "  {step:<60} state = {:<12} transfers so far: {} host→device, {} device→host{}",
        format!("{:?}", buf.state()),
        m.host_to_device,
        m.device_to_host,
        if m.skipped_syncs > 0 { format!(" ({} syncs needed no copy)", m.skipped_syncs) } else { String::new() }
    );
}

fn expect_error<T>(out: &mut String, what: &str, r: dotcompute_memory::Result<T>) -> CliResult {
    match r {
        Ok(_) => Err(CliError::Other(format!("demo: {what} should have failed but succeeded"))),
        Err(e) => {
            say!(out, "  {what:<60} -> Error: {e}");
            Ok(())
        }
    }
}

/// `dcmem demo`.
pub fn demo(backend: &str) -> CliResult<String> {
    let mut out = String::new();
    let mm = manager(backend)?;
    say!(out, "dcmem demo on the `{}` backend: {}", mm.backend().name(), mm.backend().description());
    if mm.backend().is_unified() {
        say!(out, "(Unified memory: states are tracked as on a discrete device, but no step copies.)");
    } else {
        say!(out, "(A discrete device: watch the transfer counters; each copy happens only when needed.)");
    }
    say!(out);
    say!(out, "1. Allocate and fill");
    let n = 1024;
    let mut buf = mm.allocate::<f32>(n)?;
    show(&mut out, "let mut buf = mm.allocate::<f32>(1024)?", &buf);
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    buf.copy_from(&data)?;
    show(&mut out, "buf.copy_from(&data)?            (a host write)", &buf);

    say!(out, "2. Move to the device and back");
    buf.ensure_on_device()?;
    show(&mut out, "buf.ensure_on_device()?          (upload once)", &buf);
    buf.synchronize()?;
    show(&mut out, "buf.synchronize()?               (already equal: no copy)", &buf);
    let first = buf.as_slice()?[..4].to_vec();
    show(&mut out, &format!("buf.as_slice()?[..4] = {first:?}"), &buf);
    buf.as_mut_slice()?[0] = 42.0;
    show(&mut out, "buf.as_mut_slice()?[0] = 42.0    (host side now newer)", &buf);
    expect_error(&mut out, "buf.mark_device_dirty()          (both sides written?)", buf.mark_device_dirty())?;
    buf.synchronize()?;
    show(&mut out, "buf.synchronize()?               (pushes the host write)", &buf);
    say!(out, "3. Run a kernel on the device memory");
    // On cpu and sim the device memory is host-addressable, so the kernel is a closure; on a
    // real device a kernel gets the view's native handle (`view.opencl()`, `view.cuda()`).
    let ran = buf.with_device_mut(Access::ReadWrite, |view| match view.device_slice_mut() {
        Some(xs) => {
            xs.iter_mut().for_each(|x| *x *= 2.0);
            true
        }
        None => false,
    })?;
    if ran {
        show(&mut out, "buf.with_device_mut(ReadWrite, |v| double every element)?", &buf);
    } else {
        show(&mut out, "buf.device_view_mut(ReadWrite)? + your kernel, then drop", &buf);
    }
    let v0 = buf.as_slice()?[0];
    show(&mut out, &format!("{:<33}(pulls from the device)", format!("buf.as_slice()?[0] = {v0}")), &buf);

    say!(out, "4. Views share memory");
    {
        let view = buf.slice(100..104)?;
        say!(out, "  buf.slice(100..104)?.as_slice()? = {:?}", view.as_slice()?);
    }
    buf.slice_mut(0..4)?.copy_from(&[-1.0, -2.0, -3.0, -4.0])?;
    show(&mut out, "buf.slice_mut(0..4)?.copy_from(&[-1.0, -2.0, -3.0, -4.0])?   ", &buf);
    say!(out, "  buf.as_slice()?[..6] = {:?}", &buf.as_slice()?[..6]);

    say!(out, "5. Mistakes are errors, not panics, and change nothing");
    expect_error(&mut out, "buf.copy_from(&[1.0; 3])", buf.copy_from(&[1.0; 3]))?;
    expect_error(&mut out, "buf.slice(1000..2000)", buf.slice(1000..2000).map(|_| ()))?;
    show(&mut out, "after both errors", &buf);

    say!(out, "6. Dropping returns memory to the pool");
    drop(buf);
    let again = mm.allocate::<f32>(n)?;
    show(&mut out, "drop(buf); let again = mm.allocate::<f32>(1024)?", &again);
    drop(again);
    let s = mm.statistics();
    say!(
        out,
        "  pool: {} block requests, {} hits ({:.0}%), {} backend allocations",
        s.block_requests,
        s.pool_hits,
        s.pool_hit_rate * 100.0,
        s.backend_allocations
    );
    say!(out);
    say!(out, "7. Statistics (`dcmem stats` runs a larger workload)");
    out += &stats_table(&s)?;
    Ok(out)
}

/// The small workload `dcmem stats` runs; returns the manager's statistics afterwards.
pub fn workload(mm: &MemoryManager) -> CliResult<MemoryStatistics> {
    // One buffer stays alive to the end, so active figures are non-zero.
    let mut keep = mm.allocate::<f32>(4096)?;
    keep.fill(1.0)?;
    keep.ensure_on_device()?;
    for _round in 0..4 {
        for n in [100usize, 4096, 100_000, 1 << 18] {
            let mut b = mm.allocate::<f32>(n)?;
            b.fill(2.0)?;
            b.ensure_on_device()?;
            b.mark_device_dirty()?;
            let sum: f32 = b.as_slice()?.iter().take(4).sum();
            if sum != 8.0 {
                return Err(CliError::Other(format!("stats workload: read back {sum}, expected 8")));
            }
        }
    }
    let s = mm.statistics();
    drop(keep);
    Ok(s)
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Number(n) => {
            let text = match n.as_f64() {
                Some(f) if n.is_f64() => format!("{f:.4}"),
                _ => n.to_string(),
            };
            out.push((prefix.to_string(), text));
        }
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// `MemoryStatistics` as an aligned two-column table (field order as in the struct).
pub fn stats_table(s: &MemoryStatistics) -> CliResult<String> {
    let value = serde_json::to_value(s).map_err(|e| CliError::Other(format!("could not serialise statistics: {e}")))?;
    let mut rows = Vec::new();
    flatten("", &value, &mut rows);
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    Ok(rows.into_iter().map(|(k, v)| format!("  {k:<w$}  {v}\n")).collect())
}

/// `dcmem stats`.
pub fn stats(backend: &str, json: bool) -> CliResult<String> {
    let mut out = String::new();
    let mm = manager(backend)?;
    let s = workload(&mm)?;
    if json {
        let text = serde_json::to_string_pretty(&s)
            .map_err(|e| CliError::Other(format!("could not serialise statistics: {e}")))?;
        say!(out, "{text}");
    } else {
        say!(
            out,
            "Statistics of a `{}` manager after a small workload (4 rounds of allocate f32 × 100, 4096, \
             100000, 262144 → fill → ensure_on_device → mark_device_dirty → as_slice → drop; one 4096-element \
             buffer kept alive):",
            mm.backend().name()
        );
        out += &stats_table(&s)?;
        out += &snapshot_text(&mm.memory_snapshot());
    }
    Ok(out)
}

/// The device pool's segments, one line each, after a summary line.
fn snapshot_text(s: &dotcompute_memory::MemorySnapshot) -> String {
    let mut out = format!(
        "\nDevice pool now: {} segment(s), {} reserved, {} handed out ({} of it cached whole in the pool's \
         front cache), {} free (largest block {}, fragmentation {:.0}%); per-thread magazines hold {}\n",
        s.segments.len(),
        units::bytes(s.reserved_bytes),
        units::bytes(s.in_use_bytes),
        units::bytes(s.front_cached_bytes),
        units::bytes(s.free_bytes),
        units::bytes(s.largest_free_block),
        s.fragmentation() * 100.0,
        units::bytes(s.magazine_bytes),
    );
    for seg in &s.segments {
        let used: u64 = seg.blocks.iter().filter(|b| !b.free).map(|b| b.size).sum();
        let kind = if seg.splittable { "" } else { ", oversize" };
        out += &format!(
            "  segment {}: {}{kind}, {} block(s), {} handed out\n",
            seg.id,
            units::bytes(seg.size),
            seg.blocks.len(),
            units::bytes(used)
        );
    }
    out
}
