//! The copy rows: host to device (`upload`, and `copy_from` + `ensure_on_device`),
//! device to host (`copy_to`, and `as_slice` on discrete backends) and zero-copy access, each
//! against memcpy on unified memory and against the backend's own calls elsewhere.

use super::ctx::Ctx;
use super::data::{pattern, wrong_data, PAGE};
use super::native::{against_native, against_raw_write, unreachable_native, NativeOp};
use crate::report::Row;
use crate::{CliError, CliResult};
use dotcompute_memory::BufferState;
use std::hint::black_box;

/// Host-to-device: `upload` (one copy, into a fresh device block) as the main row, and
/// `copy_from` + `ensure_on_device` (through the buffer's host part) as a second row.
pub(super) fn host_to_device(ctx: &Ctx, n: usize) -> CliResult<Vec<Row>> {
    let src = pattern(n, 0);
    let mut up = ctx.pooled().allocate::<u8>(n)?;
    up.upload(&src)?;
    let mut staged = ctx.pooled().allocate::<u8>(n)?;
    staged.copy_from(&src)?;
    staged.ensure_on_device()?;
    let mut upload = || -> CliResult { Ok(up.upload(&src)?) };
    let mut via_host = || -> CliResult {
        staged.copy_from(&src)?;
        staged.ensure_on_device()?;
        Ok(())
    };
    let (pairs, baseline) = if ctx.unified() {
        let mut dst = vec![0u8; n];
        let mut memcpy = || -> CliResult {
            dst.copy_from_slice(&src);
            black_box(dst.as_ptr());
            Ok(())
        };
        let pairs = [ctx.compare(&mut memcpy, &mut upload)?, ctx.compare(&mut memcpy, &mut via_host)?];
        if dst != src {
            return Err(wrong_data("copy_from_slice"));
        }
        (pairs, "copy_from_slice into a Vec<u8> (memcpy)".to_string())
    } else if let Some((first, label)) = against_native(ctx, NativeOp::Write, n, &mut upload)? {
        let (second, _) = against_native(ctx, NativeOp::Write, n, &mut via_host)?.ok_or_else(unreachable_native)?;
        ([first, second], label)
    } else {
        let (first, label) = against_raw_write(ctx, &src, &mut upload)?;
        let (second, _) = against_raw_write(ctx, &src, &mut via_host)?;
        ([first, second], label)
    };
    if up.as_slice()? != &src[..] {
        return Err(wrong_data("upload"));
    }
    staged.mark_device_dirty()?;
    if staged.as_slice()? != &src[..] {
        return Err(wrong_data("copy_from + ensure_on_device"));
    }
    let [first, second] = pairs;
    Ok(vec![
        Row::new(
            "Host-to-device copy",
            n,
            baseline.clone(),
            "upload(&[u8]) (one copy into a fresh device block)",
            first,
        ),
        Row::new(
            "Host-to-device copy (copy_from + ensure_on_device)",
            n,
            baseline,
            "copy_from(&[u8]) + ensure_on_device() (through the buffer's host part)",
            second,
        ),
    ])
}

/// Device-to-host: `via_slice` reads with `as_slice` (into the buffer's own host part;
/// discrete backends only), otherwise with `copy_to` into a Vec.
pub(super) fn device_to_host(ctx: &Ctx, n: usize, via_slice: bool) -> CliResult<Row> {
    let src = pattern(n, 2);
    let mut buf = ctx.pooled().allocate::<u8>(n)?;
    buf.copy_from(&src)?;
    buf.ensure_on_device()?;
    let mut out = vec![0u8; n];
    let mut ours = || -> CliResult {
        buf.mark_device_dirty()?;
        if via_slice {
            black_box(buf.as_slice()?.as_ptr());
        } else {
            buf.copy_to(&mut out)?;
            black_box(out.as_ptr());
        }
        Ok(())
    };
    let mut dst = vec![0u8; n];
    let (pair, baseline) = if ctx.unified() {
        let pair = ctx.compare(
            &mut || {
                dst.copy_from_slice(&src);
                black_box(dst.as_ptr());
                Ok(())
            },
            &mut ours,
        )?;
        if dst != src {
            return Err(wrong_data("copy_from_slice"));
        }
        (pair, "copy_from_slice into a Vec<u8> (memcpy)".to_string())
    } else if let Some(r) = against_native(ctx, NativeOp::Read, n, &mut ours)? {
        r
    } else {
        let backend = ctx.backend();
        let mem = backend.allocate(n, PAGE)?;
        let result = backend
            .write(&mem, 0, &src)
            .map_err(CliError::from)
            .and_then(|()| ctx.compare(&mut || Ok(backend.read(&mem, 0, &mut dst)?), &mut ours));
        backend.free(mem)?;
        if result.is_ok() && dst != src {
            return Err(wrong_data("raw Backend::read"));
        }
        (result?, format!("raw Backend::read ({}), device to Vec<u8>", backend.name()))
    };
    if via_slice {
        if buf.as_slice()? != &src[..] {
            return Err(wrong_data("mark_device_dirty + as_slice"));
        }
        Ok(Row::new(
            "Device-to-host copy (as_slice)",
            n,
            baseline,
            "mark_device_dirty() + as_slice() (pulls into the buffer's host part)",
            pair,
        ))
    } else {
        if out != src {
            return Err(wrong_data("mark_device_dirty + copy_to"));
        }
        Ok(Row::new("Device-to-host copy (copy_to)", n, baseline, "mark_device_dirty() + copy_to(&mut Vec<u8>)", pair))
    }
}

/// Reading a Synchronized buffer's data: a copy out with `copy_to` and a sum of the copy,
/// against `as_slice` and the same sum in place.
pub(super) fn zero_copy_access(ctx: &Ctx, elems: usize) -> CliResult<Row> {
    let data: Vec<f32> = (0..elems).map(|i| i as f32).collect();
    let expected = sum(&data);
    let mut buf = ctx.pooled().allocate::<f32>(elems)?;
    buf.copy_from(&data)?;
    buf.synchronize()?;
    if buf.state() != BufferState::Synchronized {
        return Err(CliError::Other(format!("expected a Synchronized buffer, found {:?}", buf.state())));
    }
    let mut out = vec![0f32; elems];
    let b = &buf;
    let (mut copied, mut in_place) = (0f32, 0f32);
    let pair = ctx.compare(
        &mut || {
            black_box(b).copy_to(&mut out)?;
            copied = black_box(sum(&out));
            Ok(())
        },
        &mut || {
            in_place = black_box(sum(black_box(b).as_slice()?));
            Ok(())
        },
    )?;
    if out != data || copied != expected || in_place != expected || buf.state() != BufferState::Synchronized {
        return Err(wrong_data("zero-copy access"));
    }
    Ok(Row::new(
        "Zero-copy access",
        elems * 4,
        "copying access: copy_to into a Vec<f32> + sum of the Vec".into(),
        "as_slice() on a Synchronized buffer + the same sum in place",
        pair,
    ))
}

/// Sum of `values` in 16 independent lanes (vectorises; the same code on both sides of a row).
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}
