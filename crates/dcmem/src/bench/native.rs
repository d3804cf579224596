//! Baselines from a backend's own native API, for backends that have one in this build.
//!
//! With the `opencl` feature, `--backend opencl` sets its copy and device-allocation rows
//! against plain `opencl3` calls on the same device
//! ([`dotcompute_memory::backend::opencl::raw_copy_baseline`]): a blocking
//! `clEnqueueWriteBuffer`/`clEnqueueReadBuffer`, a waited-for `clEnqueueCopyBuffer`, and
//! `clCreateBuffer` + a zero `clEnqueueFillBuffer` + release (what a fresh zeroed OpenCL
//! allocation costs, which is what the backend hands out). Each baseline sample is one call of
//! that function (its own context and buffers, one untimed warm-up of each operation, then one
//! timed call), alternating with samples of ours as [`crate::measure::compare_sampled`] does,
//! so load on a shared machine hits both sides alike. Every other backend uses the raw
//! `Backend` trait calls instead.

use super::Ctx;
use crate::measure::{Op, Pair};
use crate::CliResult;

/// Which native operation a row is set against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NativeOp {
    /// Host to device, blocking.
    Write,
    /// Device to host, blocking.
    Read,
    /// Device to device, waited for.
    Copy,
    /// A fresh zeroed allocation and its release.
    AllocZeroed,
}

impl NativeOp {
    /// The baseline column's text.
    #[cfg_attr(not(feature = "opencl"), allow(dead_code))]
    pub(super) fn label(self) -> &'static str {
        match self {
            NativeOp::Write => "raw opencl3 clEnqueueWriteBuffer (blocking), Vec<u8> to device",
            NativeOp::Read => "raw opencl3 clEnqueueReadBuffer (blocking), device to Vec<u8>",
            NativeOp::Copy => "raw opencl3 clEnqueueCopyBuffer between two buffers, waited for",
            NativeOp::AllocZeroed => {
                "raw opencl3 clCreateBuffer + clEnqueueFillBuffer(0) + release (fresh zeroed buffer)"
            }
        }
    }
}

impl Ctx {
    /// `ours` against the native `op` on `n` bytes, or `None` when this backend has no native
    /// baseline in this build (the caller then uses the `Backend` trait's raw calls).
    pub(super) fn against_native(&self, op: NativeOp, n: usize, ours: Op<'_>) -> CliResult<Option<(Pair, String)>> {
        #[cfg(feature = "opencl")]
        if self.backend.name() == "opencl" {
            use dotcompute_memory::backend::opencl::raw_copy_baseline;
            let mut sample = || -> CliResult<f64> {
                let t = raw_copy_baseline(n, 1)?;
                let d = match op {
                    NativeOp::Write => t.write,
                    NativeOp::Read => t.read,
                    NativeOp::Copy => t.copy,
                    NativeOp::AllocZeroed => t.create_buffer_zeroed,
                };
                Ok(d.as_nanos() as f64)
            };
            let pair = crate::measure::compare_sampled(&self.plan, &mut sample, ours)?;
            return Ok(Some((pair, op.label().to_string())));
        }
        let _ = (op, n, ours);
        Ok(None)
    }
}
