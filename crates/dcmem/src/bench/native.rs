//! Baselines from the backend's own API: plain `opencl3` calls where the backend is OpenCL
//! (`bench/opencl_baseline.rs`, feature `opencl`), the raw `Backend` trait calls everywhere else.
//!
//! With the `opencl` feature, `--backend opencl` sets its copy and device-allocation rows
//! against plain `opencl3` calls on the same device, in a context and command queue of their
//! own: a blocking `clEnqueueWriteBuffer`/`clEnqueueReadBuffer`, a `clEnqueueCopyBuffer`
//! waited for, and a plain `clCreateBuffer` + release (no fill, no wait). The baseline is timed
//! exactly as ours is, by [`crate::measure::compare`]: warm-up, batches of calls, samples
//! alternating with ours, median.

use super::ctx::Ctx;
use super::data::PAGE;
use crate::measure::{Op, Pair};
use crate::{CliError, CliResult};

pub(super) use super::native_op::NativeOp;

/// `ours` against the native `op` on `n` bytes, or `None` when this backend has no native
/// baseline in this build (the caller then uses the `Backend` trait's raw calls).
pub(super) fn against_native(ctx: &Ctx, op: NativeOp, n: usize, ours: Op<'_>) -> CliResult<Option<(Pair, String)>> {
    #[cfg(feature = "opencl")]
    if let Some(backend) = ctx.opencl() {
        let pair = super::opencl_baseline::against(ctx.plan(), backend, op, n, ours)?;
        return Ok(Some((pair, op.label().to_string())));
    }
    let _ = (ctx, op, n, ours);
    Ok(None)
}

/// A native baseline that was there a moment ago is gone (cannot happen: the backend is fixed).
pub(super) fn unreachable_native() -> CliError {
    CliError::Other("internal error: the native baseline disappeared between two rows".into())
}

/// `ours` against a raw `Backend::write` of `src` into a fresh device allocation.
pub(super) fn against_raw_write(ctx: &Ctx, src: &[u8], ours: Op<'_>) -> CliResult<(Pair, String)> {
    let backend = ctx.backend();
    let mem = backend.allocate(src.len(), PAGE)?;
    let result = ctx.compare(&mut || Ok(backend.write(&mem, 0, src)?), ours);
    backend.free(mem)?;
    Ok((result?, format!("raw Backend::write ({}), Vec<u8> to device", backend.name())))
}
