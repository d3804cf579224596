//! Device-view rows on the backends whose device memory the host can address (cpu, sim), where
//! a kernel is a closure over `device_slice_mut`:
//!
//! - "Device view (create + drop)": what a view costs on a Synchronized buffer (nothing to
//!   upload), against reaching the same data with `as_slice()`. Both sides read one element, so
//!   neither is optimised away.
//! - "Kernel chain (closure kernels, sim at 4 GB/s)": on one buffer of a simulated device whose
//!   transfers are capped at 4 GB/s (a discrete device's link, unlike the default uncapped sim
//!   whose copies run at memcpy speed), a kernel (add 1 to every element) then a host read (a
//!   sum), over and over. Ours copies only the stale side: the view uploads nothing (the device
//!   side is current after the previous read), the read downloads once. Baseline: the naive
//!   program that uploads before and downloads after every kernel (`upload`, the same kernel,
//!   `copy_to`). Only on sim: on unified memory neither side copies.

use super::ctx::Ctx;
use super::data::wrong_data;
use crate::report::Row;
use crate::CliResult;
use dotcompute_memory::{Access, BufferState, MemoryManager, SimOptions};
use std::hint::black_box;

/// Steps of one timed chain.
const CHAIN_STEPS: usize = 10;

fn add_one(xs: &mut [f32]) {
    xs.iter_mut().for_each(|x| *x += 1.0);
}

/// "Device view (create + drop)" on `elems` f32.
pub(super) fn create_drop(ctx: &Ctx, elems: usize) -> CliResult<Row> {
    let data: Vec<f32> = (0..elems).map(|i| i as f32).collect();
    let mut buf = ctx.pooled().allocate_from(&data)?;
    buf.synchronize()?;
    let b = &buf;
    let pair = ctx.compare(
        &mut || {
            black_box(black_box(b).as_slice()?[1]);
            Ok(())
        },
        &mut || {
            let view = black_box(b).device_view()?;
            black_box(view.device_slice().map(|xs| xs[1]));
            Ok(())
        },
    )?;
    if buf.state() != BufferState::Synchronized || buf.metrics().transfer_count > 1 {
        return Err(wrong_data("device view on a Synchronized buffer"));
    }
    Ok(Row::new(
        "Device view (create + drop)",
        elems * 4,
        "as_slice() on a Synchronized buffer, one element read".into(),
        "device_view() + device_slice(), one element read, then drop",
        pair,
    ))
}

/// "Kernel chain (closure kernels)" on `elems` f32 of a sim capped at `bandwidth` bytes/s.
pub(super) fn kernel_chain_closures(ctx: &Ctx, elems: usize, bandwidth: f64) -> CliResult<Row> {
    let sim = MemoryManager::sim(SimOptions::default().with_bandwidth(Some(bandwidth)));
    let start: Vec<f32> = vec![0.0; elems];
    let mut ours_buf = sim.allocate_from(&start)?;
    let mut naive_buf = sim.allocate_from(&start)?;
    let mut host = start.clone();
    let (mut ours_sum, mut naive_sum) = (0f64, 0f64);
    let pair = ctx.compare(
        &mut || {
            for _ in 0..CHAIN_STEPS {
                naive_buf.upload(&host)?;
                naive_buf.with_device_mut(Access::ReadWrite, |v| v.device_slice_mut().map(add_one))?;
                naive_buf.copy_to(&mut host)?;
                naive_sum = black_box(host.iter().map(|&x| x as f64).sum());
            }
            Ok(())
        },
        &mut || {
            for _ in 0..CHAIN_STEPS {
                ours_buf.with_device_mut(Access::ReadWrite, |v| v.device_slice_mut().map(add_one))?;
                ours_sum = black_box(ours_buf.as_slice()?.iter().map(|&x| x as f64).sum());
            }
            Ok(())
        },
    )?;
    // Both ran the same number of kernels; each element counts them.
    let (ours_steps, naive_steps) = (ours_buf.as_slice()?[0], host[0]);
    if ours_steps == 0.0 || ours_steps != ours_buf.as_slice()?[elems - 1] || naive_steps == 0.0 {
        return Err(wrong_data("kernel chain"));
    }
    if ours_sum != ours_steps as f64 * elems as f64 || naive_sum != naive_steps as f64 * elems as f64 {
        return Err(wrong_data("kernel chain (host reads)"));
    }
    Ok(Row::new(
        &format!("Kernel chain (closure kernels, sim at {:.0} GB/s)", bandwidth / 1e9),
        elems * 4,
        format!("naive: upload + kernel + copy_to + sum, {CHAIN_STEPS} steps"),
        format!("view kernel + as_slice() sum, {CHAIN_STEPS} steps (only the stale side moves)"),
        pair,
    ))
}
