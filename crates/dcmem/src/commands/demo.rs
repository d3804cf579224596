//! `dcmem demo`: a guided walk through allocate → copy → sync → kernel → views → errors →
//! statistics, printing each buffer's state and transfer counters after every step.

use super::manager;
use super::stats::stats_table;
use crate::{CliError, CliResult};
use dotcompute_memory::{Access, UnifiedBuffer};
use std::fmt::Write as _;

/// One step's line: the code that ran, then the state and transfer counters of the buffer
/// named `name` (each buffer counts its own transfers).
fn show<T: dotcompute_memory::Element>(out: &mut String, step: &str, name: &str, buf: &UnifiedBuffer<T>) {
    let m = buf.metrics();
    say!(
        out,
        "  {step:<60} {name}.state() = {:<12} {name}.metrics(): {} host→device, {} device→host so far{}",
        format!("{:?}", buf.state()),
        m.host_to_device,
        m.device_to_host,
        match m.skipped_syncs {
            0 => String::new(),
            1 => " (1 sync needed no copy)".to_string(),
            n => format!(" ({n} syncs needed no copy)"),
        }
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
pub fn run(backend: &str) -> CliResult<String> {
    let mut out = String::new();
    let mm = manager(backend)?;
    say!(out, "dcmem demo on the `{}` backend: {}", mm.backend().name(), mm.backend().description());
    if mm.backend().is_unified() {
        say!(
            out,
            "(Unified memory: states are tracked as on a discrete device, but no step copies; \
             `dcmem demo --backend sim` shows the copies on a simulated discrete device.)"
        );
    } else {
        say!(out, "(A discrete device: watch the transfer counters; each copy happens only when needed.)");
    }
    say!(out);
    say!(out, "1. Allocate and fill");
    let n = 1024;
    let mut buf = mm.allocate::<f32>(n)?;
    show(&mut out, "let mut buf = mm.allocate::<f32>(1024)?", "buf", &buf);
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    buf.copy_from(&data)?;
    show(&mut out, "buf.copy_from(&data)?            (a host write)", "buf", &buf);

    say!(out, "2. Move to the device and back");
    buf.ensure_on_device()?;
    show(&mut out, "buf.ensure_on_device()?          (upload once)", "buf", &buf);
    buf.synchronize()?;
    show(&mut out, "buf.synchronize()?               (already equal: no copy)", "buf", &buf);
    let first = buf.as_slice()?[..4].to_vec();
    show(&mut out, &format!("buf.as_slice()?[..4] = {first:?}"), "buf", &buf);
    buf.as_mut_slice()?[0] = 42.0;
    show(&mut out, "buf.as_mut_slice()?[0] = 42.0    (host side now newer)", "buf", &buf);
    expect_error(&mut out, "buf.mark_device_dirty()          (both sides written?)", buf.mark_device_dirty())?;
    buf.synchronize()?;
    show(&mut out, "buf.synchronize()?               (pushes the host write)", "buf", &buf);
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
        show(&mut out, "buf.with_device_mut(ReadWrite, |v| double every element)?", "buf", &buf);
    } else {
        show(&mut out, "buf.device_view_mut(ReadWrite)? + your kernel, then drop", "buf", &buf);
    }
    let v0 = buf.as_slice()?[0];
    show(&mut out, &format!("{:<33}(pulls from the device)", format!("buf.as_slice()?[0] = {v0}")), "buf", &buf);

    say!(out, "4. Views share memory");
    {
        let view = buf.slice(100..104)?;
        say!(out, "  buf.slice(100..104)?.as_slice()? = {:?}", view.as_slice()?);
    }
    buf.slice_mut(0..4)?.copy_from(&[-1.0, -2.0, -3.0, -4.0])?;
    show(&mut out, "buf.slice_mut(0..4)?.copy_from(&[-1.0, -2.0, -3.0, -4.0])?   ", "buf", &buf);
    say!(out, "  buf.as_slice()?[..6] = {:?}", &buf.as_slice()?[..6]);

    say!(out, "5. Mistakes are errors, not panics, and change nothing");
    expect_error(&mut out, "buf.copy_from(&[1.0; 3])", buf.copy_from(&[1.0; 3]))?;
    expect_error(&mut out, "buf.slice(1000..2000)", buf.slice(1000..2000).map(|_| ()))?;
    show(&mut out, "after both errors", "buf", &buf);

    say!(out, "6. Dropping returns memory to the pool");
    drop(buf);
    let again = mm.allocate::<f32>(n)?;
    show(&mut out, "drop(buf); let again = mm.allocate::<f32>(1024)?", "again", &again);
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
