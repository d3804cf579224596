//! The raw OpenCL baseline (feature `opencl`): plain `opencl3` calls on the device the opencl
//! backend uses, in a context and command queue of their own, with no code of dotcompute-memory
//! in the timed path.
//!
//! [`against`] times one call against ours for a row (interleaved samples, see
//! [`crate::measure`]); [`raw_copy_baseline`] times each call alone, as a set of medians.

use super::data::{pattern, wrong_data};
use super::native_op::NativeOp;
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
use serde::Serialize;
use std::hint::black_box;
use std::ptr;
use std::time::{Duration, Instant};

fn cl(call: &'static str) -> impl Fn(ClError) -> CliError {
    move |e| CliError::Other(format!("raw opencl3 baseline: {call} failed: {e} ({})", e.0))
}

/// A context and in-order command queue of the baseline's own on one device.
struct Raw {
    // Declared before the context, so it is released first.
    queue: CommandQueue,
    context: Context,
}

impl Raw {
    fn on(device: &Device) -> CliResult<Self> {
        let context = Context::from_device(device).map_err(cl("clCreateContext"))?;
        let queue = CommandQueue::create_default_with_properties(&context, 0, 0).map_err(cl("clCreateCommandQueue"))?;
        Ok(Raw { queue, context })
    }

    /// A buffer of `n` bytes, contents undefined.
    fn buffer(&self, n: usize) -> CliResult<Buffer<u8>> {
        // SAFETY: a valid context, no host pointer and no host-pointer flags.
        unsafe { Buffer::<u8>::create(&self.context, CL_MEM_READ_WRITE, n, ptr::null_mut()) }
            .map_err(cl("clCreateBuffer"))
    }

    /// Blocking write of `data` to the start of `buf`.
    fn write(&self, buf: &mut Buffer<u8>, data: &[u8]) -> CliResult {
        // SAFETY: `buf` holds at least `data.len()` bytes; the call is blocking, so `data`
        // outlives the transfer.
        unsafe { self.queue.enqueue_write_buffer(buf, CL_BLOCKING, 0, data, &[]) }
            .map_err(cl("clEnqueueWriteBuffer"))?;
        Ok(())
    }

    /// Blocking read of the start of `buf` into `out`.
    fn read(&self, buf: &Buffer<u8>, out: &mut [u8]) -> CliResult {
        // SAFETY: `buf` holds at least `out.len()` bytes; the call is blocking, so `out`
        // outlives the transfer.
        unsafe { self.queue.enqueue_read_buffer(buf, CL_BLOCKING, 0, out, &[]) }.map_err(cl("clEnqueueReadBuffer"))?;
        Ok(())
    }

    /// Copies the first `n` bytes of `a` to `b` and waits for the copy.
    fn copy(&self, a: &Buffer<u8>, b: &mut Buffer<u8>, n: usize) -> CliResult {
        // SAFETY: both buffers hold at least `n` bytes.
        let ev = unsafe { self.queue.enqueue_copy_buffer(a, b, 0, 0, n, &[]) }.map_err(cl("clEnqueueCopyBuffer"))?;
        ev.wait().map_err(cl("clWaitForEvents"))
    }

    /// Fills the first `n` bytes of `buf` with zeros and waits for the fill.
    fn zero(&self, buf: &mut Buffer<u8>, n: usize) -> CliResult {
        // SAFETY: `buf` holds at least `n` bytes; the one-byte pattern is copied by the driver.
        let ev =
            unsafe { self.queue.enqueue_fill_buffer(buf, &[0u8], 0, n, &[]) }.map_err(cl("clEnqueueFillBuffer"))?;
        ev.wait().map_err(cl("clWaitForEvents"))
    }
}

/// Times `op` on `n` bytes with plain opencl3 calls on `backend`'s device against `ours`, then
/// checks the data the baseline moved.
pub(super) fn against(plan: &Plan, backend: &OpenClBackend, op: NativeOp, n: usize, ours: Op<'_>) -> CliResult<Pair> {
    let raw = Raw::on(&Device::new(backend.device_id()))?;
    let data = pattern(n, 13);
    let mut out = vec![0u8; n];
    match op {
        NativeOp::Alloc => compare(
            plan,
            &mut || {
                let b = raw.buffer(n)?;
                black_box(&b);
                drop(b);
                Ok(())
            },
            ours,
        ),
        NativeOp::Write => {
            let mut a = raw.buffer(n)?;
            let pair = compare(plan, &mut || raw.write(&mut a, &data), ours)?;
            raw.read(&a, &mut out)?;
            if out != data {
                return Err(wrong_data("raw clEnqueueWriteBuffer"));
            }
            Ok(pair)
        }
        NativeOp::Read => {
            let mut a = raw.buffer(n)?;
            raw.write(&mut a, &data)?;
            let pair = compare(plan, &mut || raw.read(&a, &mut out), ours)?;
            if out != data {
                return Err(wrong_data("raw clEnqueueReadBuffer"));
            }
            Ok(pair)
        }
        NativeOp::Copy => {
            let mut a = raw.buffer(n)?;
            let mut b = raw.buffer(n)?;
            raw.write(&mut a, &data)?;
            let pair = compare(plan, &mut || raw.copy(&a, &mut b, n), ours)?;
            raw.read(&b, &mut out)?;
            if out != data {
                return Err(wrong_data("raw clEnqueueCopyBuffer"));
            }
            Ok(pair)
        }
    }
}

/// Median times of plain `opencl3` calls on one device, from [`raw_copy_baseline`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(super) struct RawCopyTimes {
    /// Bytes per copy.
    pub bytes: usize,
    /// Blocking `clEnqueueWriteBuffer` of `bytes` from a `Vec<u8>` (host to device).
    pub write: Duration,
    /// Blocking `clEnqueueReadBuffer` of `bytes` into a `Vec<u8>` (device to host).
    pub read: Duration,
    /// `clEnqueueCopyBuffer` of `bytes` between two buffers, waited for (device to device).
    pub copy: Duration,
    /// `clCreateBuffer` of `bytes` followed by its release, no data touched. Drivers may
    /// commit memory lazily (PoCL does), so this can be far cheaper than a usable buffer.
    pub create_buffer: Duration,
    /// `clCreateBuffer`, a zero `clEnqueueFillBuffer` over all of it (waited for), then the
    /// release: what a fresh `OpenClBackend` allocation does, since its memory is zeroed.
    pub create_buffer_zeroed: Duration,
}

/// The device an `OpenClBackend` opened now uses (the same `DCMEM_OPENCL_*` selectors), found
/// again through opencl3 by its platform and in-platform indices, with its largest allocation.
fn selected_device() -> CliResult<(Device, u64)> {
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
    Ok((device, summary.max_alloc))
}

/// Times plain `opencl3` calls on the device an `OpenClBackend` opened now would use: blocking
/// write and read of `bytes`, a copy between two buffers, and a buffer's creation and release
/// (plain, and zero-filled as a fresh backend allocation is).
///
/// After one untimed warm-up of each operation, each is run `repetitions` times (at least 1)
/// and the median is reported. Errors: the backend's own when no OpenCL device is available, a
/// failing call, and `bytes` of 0 or above the device's largest allocation.
#[cfg_attr(not(test), expect(dead_code, reason = "a standalone baseline; the bench rows use `against`"))]
pub(super) fn raw_copy_baseline(bytes: usize, repetitions: usize) -> CliResult<RawCopyTimes> {
    let (device, max_alloc) = selected_device()?;
    if bytes == 0 || bytes as u64 > max_alloc {
        return Err(CliError::Other(format!(
            "raw opencl3 baseline: {bytes} bytes asked for; the size must be between 1 and the device's largest \
             allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE, {max_alloc} bytes)"
        )));
    }
    let raw = Raw::on(&device)?;
    let mut a = raw.buffer(bytes)?;
    let mut b = raw.buffer(bytes)?;
    let src = vec![0xA5u8; bytes];
    let mut dst = vec![0u8; bytes];
    let reps = repetitions.max(1);
    let time = |f: &mut dyn FnMut() -> CliResult| -> CliResult<Duration> {
        f()?; // warm-up
        let mut v = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            f()?;
            v.push(t.elapsed());
        }
        v.sort();
        Ok(v[v.len() / 2])
    };
    let write = time(&mut || raw.write(&mut a, &src))?;
    let read = time(&mut || raw.read(&a, &mut dst))?;
    let copy = time(&mut || raw.copy(&a, &mut b, bytes))?;
    let create_buffer = time(&mut || raw.buffer(bytes).map(drop))?;
    let create_buffer_zeroed = time(&mut || raw.zero(&mut raw.buffer(bytes)?, bytes))?;
    if dst != src {
        return Err(wrong_data("raw clEnqueueReadBuffer"));
    }
    Ok(RawCopyTimes { bytes, write, read, copy, create_buffer, create_buffer_zeroed })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `DCMEM_REQUIRE_OPENCL=1` turns a missing OpenCL platform into a failure.
    fn required() -> bool {
        dotcompute_memory::backend::required("opencl").expect("DCMEM_REQUIRE_OPENCL")
    }

    #[test]
    fn raw_copy_baseline_times_every_call_and_rejects_a_zero_size() {
        if let Err(e) = OpenClBackend::new() {
            assert!(!required(), "DCMEM_REQUIRE_OPENCL=1 but: {e}");
            eprintln!("skipping: no OpenCL device: {e}");
            return;
        }
        let t = raw_copy_baseline(1 << 20, 3).unwrap();
        assert_eq!(t.bytes, 1 << 20);
        assert!(t.write > Duration::ZERO && t.read > Duration::ZERO && t.copy > Duration::ZERO, "{t:?}");
        assert!(t.create_buffer_zeroed > Duration::ZERO, "{t:?}");
        let err = raw_copy_baseline(0, 1).unwrap_err().to_string();
        assert!(err.contains("0 bytes") && err.contains("between 1 and"), "{err}");
    }
}
