//! Kernel rows (feature `opencl`, `--backend opencl`): real OpenCL kernels on our buffers
//! through device views, against a hand-written `opencl3` program doing the same work.
//!
//! - "Kernel loop": each iteration uploads x (16 MiB of f32), runs saxpy `y = a*x + y` and
//!   reads y back. Ours: `upload`, a read view of x and a read-write view of y, the kernel on
//!   the view's queue, `copy_to`. Baseline: blocking `clEnqueueWriteBuffer`, the same kernel,
//!   blocking `clEnqueueReadBuffer`, in a context and queue of its own on the same device.
//! - "Kernel chain": on one buffer, a kernel (add 1 to every element) then a host read, over and
//!   over. Ours copies only the stale side: the kernel's view uploads nothing (the host copy is
//!   current and unchanged), the host read downloads once. Baseline: the naive program that
//!   uploads before and downloads after every kernel.
//!
//! One timed call is a whole loop (100 iterations, 10 with `--quick`); the data both sides
//! produced is checked against the iteration count afterwards.

use super::ctx::Ctx;
use super::data::wrong_data;
use crate::measure::compare;
use crate::report::Row;
use crate::{units, CliError, CliResult};
use dotcompute_memory::backend::opencl::OpenClBackend;
use dotcompute_memory::{Access, OpenClMemory};
use opencl3::command_queue::{enqueue_nd_range_kernel, CommandQueue};
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::error_codes::ClError;
use opencl3::event::Event;
use opencl3::kernel::Kernel;
use opencl3::memory::{Buffer, ClMem, CL_MEM_READ_WRITE};
use opencl3::program::Program;
use opencl3::types::{cl_command_queue, cl_mem, CL_BLOCKING};
use std::hint::black_box;
use std::ptr;

const SOURCE: &str = r#"
__kernel void saxpy(__global const float* x, ulong x_off, __global float* y, ulong y_off, float a, ulong n) {
    size_t i = get_global_id(0);
    if (i < n) y[y_off + i] = a * x[x_off + i] + y[y_off + i];
}
__kernel void add_one(__global float* y, ulong off, ulong n) {
    size_t i = get_global_id(0);
    if (i < n) y[off + i] += 1.0f;
}
"#;

fn cl(call: &'static str) -> impl Fn(ClError) -> CliError {
    move |e| CliError::Other(format!("kernel rows: {call} failed: {e} ({})", e.0))
}

fn build(context: &Context) -> CliResult<(Program, Kernel, Kernel)> {
    let program = Program::create_and_build_from_source(context, SOURCE, "")
        .map_err(|log| CliError::Other(format!("kernel rows: building the kernels failed: {log}")))?;
    let saxpy = Kernel::create(&program, "saxpy").map_err(cl("clCreateKernel"))?;
    let add_one = Kernel::create(&program, "add_one").map_err(cl("clCreateKernel"))?;
    Ok((program, saxpy, add_one))
}

/// Enqueues `kernel` over `n` items on the raw `queue`: the arguments must be set. The event is
/// released when dropped; nothing waits for it (on our side the view's end orders the buffer
/// after the queue; on the baseline's, the in-order queue orders the read after the kernel).
fn launch(kernel: &Kernel, queue: cl_command_queue, n: usize) -> CliResult<Event> {
    let global = [n];
    // SAFETY: the caller set every argument; `global` outlives the call; no wait list.
    let ev = unsafe {
        enqueue_nd_range_kernel(queue, kernel.get(), 1, ptr::null(), global.as_ptr(), ptr::null(), 0, ptr::null())
    }
    .map_err(|code| cl("clEnqueueNDRangeKernel")(ClError(code)))?;
    Ok(Event::new(ev))
}

fn element_offset(m: &OpenClMemory) -> CliResult<u64> {
    m.element_offset::<f32>()
        .map(|o| o as u64)
        .ok_or_else(|| CliError::Other(format!("kernel rows: byte offset {} is not a whole f32", m.byte_offset)))
}

/// Sets saxpy's arguments.
fn saxpy_args(k: &Kernel, x: cl_mem, x_off: u64, y: cl_mem, y_off: u64, a: f32, n: usize) -> CliResult {
    // SAFETY: the argument types match the kernel's parameters (cl_mem, ulong, cl_mem, ulong,
    // float, ulong); the buffers are live for the launch that follows.
    unsafe {
        k.set_arg(0, &x).map_err(cl("clSetKernelArg"))?;
        k.set_arg(1, &x_off).map_err(cl("clSetKernelArg"))?;
        k.set_arg(2, &y).map_err(cl("clSetKernelArg"))?;
        k.set_arg(3, &y_off).map_err(cl("clSetKernelArg"))?;
        k.set_arg(4, &a).map_err(cl("clSetKernelArg"))?;
        k.set_arg(5, &(n as u64)).map_err(cl("clSetKernelArg"))?;
    }
    Ok(())
}

/// Sets add_one's arguments.
fn add_one_args(k: &Kernel, y: cl_mem, y_off: u64, n: usize) -> CliResult {
    // SAFETY: as in `saxpy_args` (cl_mem, ulong, ulong).
    unsafe {
        k.set_arg(0, &y).map_err(cl("clSetKernelArg"))?;
        k.set_arg(1, &y_off).map_err(cl("clSetKernelArg"))?;
        k.set_arg(2, &(n as u64)).map_err(cl("clSetKernelArg"))?;
    }
    Ok(())
}

/// The baseline's own context, queue and kernels on the device of `backend`.
struct Native {
    queue: CommandQueue,
    saxpy: Kernel,
    add_one: Kernel,
    _program: Program,
    context: Context,
}

impl Native {
    fn new(backend: &OpenClBackend) -> CliResult<Self> {
        let context = Context::from_device(&Device::new(backend.device_id())).map_err(cl("clCreateContext"))?;
        let queue = CommandQueue::create_default_with_properties(&context, 0, 0).map_err(cl("clCreateCommandQueue"))?;
        let (program, saxpy, add_one) = build(&context)?;
        Ok(Native { queue, saxpy, add_one, _program: program, context })
    }

    fn buffer(&self, n: usize) -> CliResult<Buffer<f32>> {
        // SAFETY: a valid context, no host pointer.
        unsafe { Buffer::<f32>::create(&self.context, CL_MEM_READ_WRITE, n, ptr::null_mut()) }
            .map_err(cl("clCreateBuffer"))
    }

    fn write(&self, buf: &mut Buffer<f32>, data: &[f32]) -> CliResult {
        // SAFETY: `buf` holds `data.len()` elements; the call is blocking, so `data` outlives
        // the transfer.
        unsafe { self.queue.enqueue_write_buffer(buf, CL_BLOCKING, 0, data, &[]) }
            .map_err(cl("clEnqueueWriteBuffer"))?;
        Ok(())
    }

    fn read(&self, buf: &Buffer<f32>, out: &mut [f32]) -> CliResult {
        // SAFETY: `buf` holds `out.len()` elements; blocking, so `out` outlives the transfer.
        unsafe { self.queue.enqueue_read_buffer(buf, CL_BLOCKING, 0, out, &[]) }.map_err(cl("clEnqueueReadBuffer"))?;
        Ok(())
    }

    /// Enqueues `kernel` (arguments set) on the baseline's queue; the blocking read that
    /// follows on this in-order queue waits for it.
    fn run(&self, kernel: &Kernel, n: usize) -> CliResult {
        launch(kernel, self.queue.get(), n).map(drop)
    }
}

/// Our backend's context as an `opencl3` `Context` holding a reference of its own.
fn our_context(backend: &OpenClBackend) -> CliResult<Context> {
    // SAFETY: the backend's context is live; the wrapper releases the reference taken here.
    unsafe { opencl3::context::context::retain_context(backend.context()) }
        .map_err(|code| cl("clRetainContext")(ClError(code)))?;
    Ok(Context::new(backend.context(), &[backend.device_id()]))
}

fn opencl_backend(ctx: &Ctx) -> CliResult<&OpenClBackend> {
    ctx.opencl().ok_or_else(|| CliError::Other("kernel rows: the backend is not OpenCL".into()))
}

fn check(what: &str, got: &[f32], want: impl Fn(usize) -> f32) -> CliResult {
    match got.iter().enumerate().find(|&(i, &g)| g != want(i)) {
        None => Ok(()),
        Some((i, g)) => Err(CliError::Other(format!(
            "benchmark self-check failed: {what}: element {i} is {g}, expected {}",
            want(i)
        ))),
    }
}

/// "Kernel loop": upload x, saxpy, read y back, `iterations` times per call.
pub(super) fn kernel_loop(ctx: &Ctx) -> CliResult<Vec<Row>> {
    let backend = opencl_backend(ctx)?;
    let (bytes, iterations, plan) = ctx.sizes().kernels;
    let n = bytes / 4;
    let a = 1.0f32;
    // Small integers: y grows by x each iteration and stays exact in f32.
    let xs: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let y0: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();

    let context = our_context(backend)?;
    let (_program, saxpy, _) = build(&context)?;
    let mut x = ctx.pooled().allocate::<f32>(n)?;
    let mut y = ctx.pooled().allocate_from(&y0)?;
    let mut out = vec![0f32; n];

    let native = Native::new(backend)?;
    let mut nx = native.buffer(n)?;
    let mut ny = native.buffer(n)?;
    native.write(&mut ny, &y0)?;
    let mut native_out = vec![0f32; n];

    let (mut ours_runs, mut native_runs) = (0usize, 0usize);
    let pair = compare(
        &plan,
        &mut || {
            for _ in 0..iterations {
                native.write(&mut nx, &xs)?;
                saxpy_args(&native.saxpy, nx.get(), 0, ny.get(), 0, a, n)?;
                native.run(&native.saxpy, n)?;
                native.read(&ny, &mut native_out)?;
                black_box(native_out.as_ptr());
            }
            native_runs += iterations;
            Ok(())
        },
        &mut || {
            for _ in 0..iterations {
                x.upload(&xs)?;
                {
                    let xv = x.device_view()?;
                    let yv = y.device_view_mut(Access::ReadWrite)?;
                    let (xm, ym) = match (xv.opencl(), yv.opencl()) {
                        (Some(xm), Some(ym)) => (xm, ym),
                        _ => return Err(CliError::Other("kernel rows: a view has no OpenCL memory".into())),
                    };
                    saxpy_args(&saxpy, xm.mem, element_offset(&xm)?, ym.mem, element_offset(&ym)?, a, n)?;
                    launch(&saxpy, ym.queue, n)?;
                }
                y.copy_to(&mut out)?;
                black_box(out.as_ptr());
            }
            ours_runs += iterations;
            Ok(())
        },
    )?;
    check("kernel loop (raw opencl3)", &native_out, |i| y0[i] + native_runs as f32 * xs[i])?;
    check("kernel loop (ours)", &out, |i| y0[i] + ours_runs as f32 * xs[i])?;
    // y uploads once, for the first view (HostOnly); from then on its device side is current.
    if y.metrics().host_to_device != 1 {
        return Err(wrong_data("kernel loop (ours uploaded y again, though its device side was current)"));
    }
    let size = units::bytes(bytes as u64);
    Ok(vec![Row::new(
        &format!("Kernel loop ({iterations} x upload {size}, saxpy, read back)"),
        bytes,
        format!(
            "raw opencl3, {iterations} x: blocking clEnqueueWriteBuffer of x, saxpy kernel, blocking \
             clEnqueueReadBuffer of y"
        ),
        format!(
            "{iterations} x: x.upload(), device_view() of x + device_view_mut(ReadWrite) of y, the same kernel on \
             view.opencl().queue, y.copy_to()"
        ),
        pair,
    )])
}

/// "Kernel chain": kernel then host read on one buffer, `iterations` times per call.
pub(super) fn kernel_chain(ctx: &Ctx) -> CliResult<Vec<Row>> {
    let backend = opencl_backend(ctx)?;
    let (bytes, iterations, plan) = ctx.sizes().kernels;
    let n = bytes / 4;
    let init: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();

    let context = our_context(backend)?;
    let (_program, _, add_one) = build(&context)?;
    let mut y = ctx.pooled().allocate_from(&init)?;
    y.ensure_on_device()?;

    let native = Native::new(backend)?;
    let mut ny = native.buffer(n)?;
    let mut host = init.clone();

    let (mut ours_runs, mut native_runs) = (0usize, 0usize);
    let before = y.metrics();
    let pair = compare(
        &plan,
        &mut || {
            for _ in 0..iterations {
                native.write(&mut ny, &host)?;
                add_one_args(&native.add_one, ny.get(), 0, n)?;
                native.run(&native.add_one, n)?;
                native.read(&ny, &mut host)?;
                black_box(host[0] + host[n - 1]);
            }
            native_runs += iterations;
            Ok(())
        },
        &mut || {
            for _ in 0..iterations {
                {
                    let v = y.device_view_mut(Access::ReadWrite)?;
                    let m = v.opencl().ok_or_else(|| CliError::Other("kernel rows: no OpenCL memory".into()))?;
                    add_one_args(&add_one, m.mem, element_offset(&m)?, n)?;
                    launch(&add_one, m.queue, n)?;
                }
                let s = y.as_slice()?;
                black_box(s[0] + s[n - 1]);
            }
            ours_runs += iterations;
            Ok(())
        },
    )?;
    check("kernel chain (raw opencl3)", &host, |i| init[i] + native_runs as f32)?;
    check("kernel chain (ours)", y.as_slice()?, |i| init[i] + ours_runs as f32)?;
    let after = y.metrics();
    let (uploads, downloads) =
        (after.host_to_device - before.host_to_device, after.device_to_host - before.device_to_host);
    if uploads != 0 || downloads != ours_runs as u64 {
        return Err(CliError::Other(format!(
            "benchmark self-check failed: kernel chain (ours) made {uploads} uploads and {downloads} downloads \
             for {ours_runs} steps, expected 0 and {ours_runs}"
        )));
    }
    let size = units::bytes(bytes as u64);
    Ok(vec![Row::new(
        &format!("Kernel chain ({iterations} x kernel + host read, {size})"),
        bytes,
        format!(
            "raw opencl3 naive, {iterations} x: blocking clEnqueueWriteBuffer, add-one kernel, blocking \
             clEnqueueReadBuffer, read 2 elements"
        ),
        format!(
            "{iterations} x: device_view_mut(ReadWrite) + the same kernel (no upload: host side unchanged), \
             as_slice() (one download), read 2 elements"
        ),
        pair,
    )])
}
