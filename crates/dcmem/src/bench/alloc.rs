//! Allocation rows: pooled allocate + drop against an unpooled manager's fresh blocks, against
//! malloc, and (discrete backends) pooled device allocations against the backend's own; and
//! what recording an allocation trace costs.

use super::ctx::Ctx;
use super::data::{touch_pages, PAGE};
use super::native::{against_native, NativeOp};
use crate::report::Row;
use crate::{CliError, CliResult};
use dotcompute_memory::{BufferState, ManagerOptions, TraceOptions};
use std::hint::black_box;

/// Pooled against unpooled allocate + drop, two rows: without touching the memory, and with one
/// byte written in every 4 KiB page; each row does the same on both sides.
pub(super) fn vs_fresh(ctx: &Ctx, n: usize) -> CliResult<Vec<Row>> {
    let (fresh, pooled) = (ctx.fresh(), ctx.pooled());
    let plain = ctx.compare(
        &mut || {
            let b = fresh.allocate::<u8>(n)?;
            black_box(&b);
            drop(b);
            Ok(())
        },
        &mut || {
            let b = pooled.allocate::<u8>(n)?;
            black_box(&b);
            drop(b);
            Ok(())
        },
    )?;
    let touched = ctx.compare(
        &mut || {
            let mut b = fresh.allocate::<u8>(n)?;
            touch_pages(b.as_mut_slice()?);
            drop(b);
            Ok(())
        },
        &mut || {
            let mut b = pooled.allocate::<u8>(n)?;
            touch_pages(b.as_mut_slice()?);
            drop(b);
            Ok(())
        },
    )?;
    let block = if ctx.unified() { "block" } else { "host block" };
    let fresh_block = format!(
        "unpooled {} allocate (a fresh zeroed {block}: aligned alloc_zeroed below 1 MiB, anonymous mmap from 1 MiB)",
        ctx.backend().name()
    );
    Ok(vec![
        Row::new(
            "Buffer allocation (pooled vs fresh)",
            n,
            format!("{fresh_block} + drop, no page touched"),
            "pooled allocate + drop, warm pool, no page touched",
            plain,
        ),
        Row::new(
            "Buffer allocation + first touch (pooled vs fresh)",
            n,
            format!("{fresh_block} + touch pages + drop"),
            "pooled allocate + touch pages + drop, warm pool (pages already resident)",
            touched,
        ),
    ])
}

/// Pooled allocate + drop against malloc/free of the same size (untouched), as `operation`.
pub(super) fn vs_malloc(ctx: &Ctx, n: usize, operation: &str) -> CliResult<Row> {
    let pooled = ctx.pooled();
    let pair = ctx.compare(
        &mut || {
            let v: Vec<u8> = Vec::with_capacity(black_box(n));
            black_box(v.as_ptr());
            drop(v);
            Ok(())
        },
        &mut || {
            let b = pooled.allocate::<u8>(n)?;
            black_box(&b);
            drop(b);
            Ok(())
        },
    )?;
    Ok(Row::new(
        operation,
        n,
        "malloc + free: Vec::<u8>::with_capacity, untouched".into(),
        "pooled allocate + drop, warm pool",
        pair,
    ))
}

/// Pooled `allocate_device` + drop against a fresh device allocation (discrete backends).
pub(super) fn device(ctx: &Ctx, n: usize) -> CliResult<Row> {
    let pooled = ctx.pooled();
    let mut ours = || -> CliResult {
        let b = pooled.allocate_device::<u8>(n)?;
        black_box(&b);
        drop(b);
        Ok(())
    };
    let (pair, baseline) = match against_native(ctx, NativeOp::Alloc, n, &mut ours)? {
        Some(r) => r,
        None => {
            let backend = ctx.backend();
            let pair = ctx.compare(
                &mut || {
                    let m = backend.allocate(n, PAGE)?;
                    black_box(&m);
                    backend.free(m)?;
                    Ok(())
                },
                &mut ours,
            )?;
            (
                pair,
                format!(
                    "raw Backend::allocate + Backend::free ({}; the trait's allocate returns zeroed memory)",
                    backend.name()
                ),
            )
        }
    };
    let b = pooled.allocate_device::<u8>(n)?;
    if b.state() != BufferState::DeviceOnly {
        return Err(CliError::Other(format!("allocate_device gave a {:?} buffer, expected DeviceOnly", b.state())));
    }
    Ok(Row::new(
        "Buffer allocation (device, pooled vs fresh)",
        n,
        baseline,
        "pooled allocate_device + drop, warm pool (device memory reused)",
        pair,
    ))
}

/// Pooled allocate + drop with the manager recording its allocation trace
/// (`ManagerOptions::trace`, default capacity) against the pooled manager without.
pub(super) fn trace_recording(ctx: &Ctx, n: usize) -> CliResult<Row> {
    let (plain, traced) =
        (ctx.pooled(), ctx.new_manager_with(ManagerOptions::default().with_trace(Some(TraceOptions::default())))?);
    let pair = ctx.compare(
        &mut || {
            let b = plain.allocate::<u8>(n)?;
            black_box(&b);
            drop(b);
            Ok(())
        },
        &mut || {
            let b = traced.allocate::<u8>(n)?;
            black_box(&b);
            drop(b);
            Ok(())
        },
    )?;
    let recorded = traced.diagnostics().trace().map_or(0, |t| t.events.len() as u64 + t.dropped);
    if recorded == 0 {
        return Err(CliError::Other("the traced manager recorded no events".into()));
    }
    Ok(Row::new(
        "Trace recording",
        n,
        "pooled allocate + drop, warm pool, no trace".into(),
        "pooled allocate + drop, warm pool, recording its trace (ManagerOptions::trace, 1 Mi events kept)",
        pair,
    ))
}
