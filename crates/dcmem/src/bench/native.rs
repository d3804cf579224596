//! Baselines from a backend's own native API, for backends that have one in this build.
//!
//! With the `opencl` feature, `--backend opencl` sets its copy and device-allocation rows
//! against plain `opencl3` calls on the same device, in a context and command queue of their
//! own: a blocking `clEnqueueWriteBuffer`/`clEnqueueReadBuffer`, a `clEnqueueCopyBuffer`
//! waited for, and a plain `clCreateBuffer` + release (no fill, no wait). The baseline is timed
//! exactly as ours is, by [`crate::measure::compare`]: warm-up, batches of calls, samples
//! alternating with ours, median. Every other backend uses the raw `Backend` trait calls
//! instead.

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
    /// A fresh allocation and its release, nothing written.
    Alloc,
}

impl NativeOp {
    /// The baseline column's text.
    #[cfg_attr(not(feature = "opencl"), allow(dead_code))]
    pub(super) fn label(self) -> &'static str {
        match self {
            NativeOp::Write => "raw opencl3 clEnqueueWriteBuffer (blocking), Vec<u8> to device",
            NativeOp::Read => "raw opencl3 clEnqueueReadBuffer (blocking), device to Vec<u8>",
            NativeOp::Copy => "raw opencl3 clEnqueueCopyBuffer between two buffers, waited for",
            NativeOp::Alloc => {
                "raw opencl3 clCreateBuffer + release (plain: no fill, no wait; the driver may commit the memory \
                 lazily)"
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
            let pair = opencl::against(&self.plan, op, n, ours)?;
            return Ok(Some((pair, op.label().to_string())));
        }
        let _ = (op, n, ours);
        Ok(None)
    }
}

#[cfg(feature = "opencl")]
mod opencl {
    use super::super::{pattern, wrong_data};
    use super::NativeOp;
    use crate::measure::{compare, Op, Pair, Plan};
    use crate::{CliError, CliResult};
    use dotcompute_memory::backend::opencl::OpenClBackend;
    use opencl3::command_queue::CommandQueue;
    use opencl3::context::Context;
    use opencl3::device::{Device, CL_DEVICE_TYPE_ALL};
    use opencl3::error_codes::ClError;
    use opencl3::memory::{Buffer, CL_MEM_READ_WRITE};
    use opencl3::platform::get_platforms;
    use opencl3::types::CL_BLOCKING;
    use std::hint::black_box;
    use std::ptr;

    fn cl(call: &'static str) -> impl Fn(ClError) -> CliError {
        move |e| CliError::Other(format!("raw opencl3 baseline: {call} failed: {e} ({})", e.0))
    }

    /// The device an `OpenClBackend` opened now uses (the same `DCMEM_OPENCL_*` selectors),
    /// found again through opencl3 by its platform and in-platform indices.
    fn backend_device() -> CliResult<Device> {
        let summary = OpenClBackend::new()?.device().clone();
        let platforms = get_platforms().map_err(cl("clGetPlatformIDs"))?;
        let missing = || {
            CliError::Other(format!(
                "raw opencl3 baseline: device #{} of platform #{} (\"{}\") not found again",
                summary.index_in_platform, summary.platform_index, summary.name
            ))
        };
        let platform = platforms.get(summary.platform_index).ok_or_else(missing)?;
        let ids = platform.get_devices(CL_DEVICE_TYPE_ALL).map_err(cl("clGetDeviceIDs"))?;
        let device = Device::new(*ids.get(summary.index_in_platform).ok_or_else(missing)?);
        let name = device.name().map_err(cl("clGetDeviceInfo"))?;
        if name.trim_end_matches('\0').trim() != summary.name.trim() {
            return Err(missing());
        }
        Ok(device)
    }

    /// Times `op` on `n` bytes with plain opencl3 calls against `ours`, then checks the data the
    /// baseline moved.
    pub(super) fn against(plan: &Plan, op: NativeOp, n: usize, ours: Op<'_>) -> CliResult<Pair> {
        let context = Context::from_device(&backend_device()?).map_err(cl("clCreateContext"))?;
        let queue = CommandQueue::create_default_with_properties(&context, 0, 0).map_err(cl("clCreateCommandQueue"))?;
        let create = || {
            // SAFETY: a valid context, no host pointer and no host-pointer flags.
            unsafe { Buffer::<u8>::create(&context, CL_MEM_READ_WRITE, n, ptr::null_mut()) }
                .map_err(cl("clCreateBuffer"))
        };
        let write = |buf: &mut Buffer<u8>, data: &[u8]| -> CliResult {
            // SAFETY: `buf` holds `n` bytes and `data` is `n` bytes; the call is blocking, so
            // `data` outlives the transfer.
            unsafe { queue.enqueue_write_buffer(buf, CL_BLOCKING, 0, data, &[]) }
                .map_err(cl("clEnqueueWriteBuffer"))?;
            Ok(())
        };
        let read = |buf: &Buffer<u8>, out: &mut [u8]| -> CliResult {
            // SAFETY: `buf` holds `n` bytes and `out` is `n` bytes; the call is blocking, so
            // `out` outlives the transfer.
            unsafe { queue.enqueue_read_buffer(buf, CL_BLOCKING, 0, out, &[]) }.map_err(cl("clEnqueueReadBuffer"))?;
            Ok(())
        };
        let data = pattern(n, 13);
        let mut out = vec![0u8; n];
        match op {
            NativeOp::Alloc => compare(
                plan,
                &mut || {
                    let b = create()?;
                    black_box(&b);
                    drop(b);
                    Ok(())
                },
                ours,
            ),
            NativeOp::Write => {
                let mut a = create()?;
                let pair = compare(plan, &mut || write(&mut a, &data), ours)?;
                read(&a, &mut out)?;
                if out != data {
                    return Err(wrong_data("raw clEnqueueWriteBuffer"));
                }
                Ok(pair)
            }
            NativeOp::Read => {
                let mut a = create()?;
                write(&mut a, &data)?;
                let pair = compare(plan, &mut || read(&a, &mut out), ours)?;
                if out != data {
                    return Err(wrong_data("raw clEnqueueReadBuffer"));
                }
                Ok(pair)
            }
            NativeOp::Copy => {
                let mut a = create()?;
                let mut b = create()?;
                write(&mut a, &data)?;
                let pair = compare(
                    plan,
                    &mut || {
                        // SAFETY: both buffers hold `n` bytes.
                        let ev = unsafe { queue.enqueue_copy_buffer(&a, &mut b, 0, 0, n, &[]) }
                            .map_err(cl("clEnqueueCopyBuffer"))?;
                        ev.wait().map_err(cl("clWaitForEvents"))
                    },
                    ours,
                )?;
                read(&b, &mut out)?;
                if out != data {
                    return Err(wrong_data("raw clEnqueueCopyBuffer"));
                }
                Ok(pair)
            }
        }
    }
}
