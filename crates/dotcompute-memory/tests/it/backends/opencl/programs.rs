//! The test kernels (saxpy, fill and an in-place scale, built from OpenCL C source by the
//! driver) and what the kernel tests share: launching on raw handles, contexts and queues of
//! the test's own, and managers on the backend with and without pooling.

use crate::support::skip;
use dotcompute_memory::backend::opencl::{OpenClBackend, OpenClOptions};
use dotcompute_memory::*;
use opencl3::command_queue::{enqueue_nd_range_kernel, CommandQueue};
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::event::Event;
use opencl3::kernel::Kernel;
use opencl3::program::Program;
use opencl3::types::{cl_command_queue, cl_event, cl_mem};
use std::ptr;

/// The kernels' OpenCL C source: each takes element offsets, so views of slices work.
pub const SOURCE: &str = r#"
__kernel void saxpy(__global const float* x, ulong x_off, __global float* y, ulong y_off, float a, ulong n) {
    size_t i = get_global_id(0);
    if (i < n) y[y_off + i] = a * x[x_off + i] + y[y_off + i];
}
__kernel void fill(__global float* y, ulong off, float v, ulong n) {
    size_t i = get_global_id(0);
    if (i < n) y[off + i] = v;
}
__kernel void scale(__global float* y, ulong off, float a, ulong n) {
    size_t i = get_global_id(0);
    if (i < n) y[off + i] *= a;
}
"#;

/// The test's kernels, built for one context.
pub struct Kernels {
    pub saxpy: Kernel,
    pub fill: Kernel,
    pub scale: Kernel,
    _program: Program,
}

/// Builds the kernels for `context` (a build failure shows the driver's log).
pub fn build(context: &Context) -> Kernels {
    let program = Program::create_and_build_from_source(context, SOURCE, "")
        .unwrap_or_else(|log| panic!("building the test kernels failed: {log}"));
    let kernel = |name| Kernel::create(&program, name).unwrap_or_else(|e| panic!("kernel {name}: {e}"));
    Kernels { saxpy: kernel("saxpy"), fill: kernel("fill"), scale: kernel("scale"), _program: program }
}

/// One kernel argument.
pub enum Arg {
    Mem(cl_mem),
    U64(u64),
    F32(f32),
}

/// Enqueues `kernel` over `n` work items on `queue` after `wait`; `None` for `n == 0` (nothing
/// to run).
pub fn launch(kernel: &Kernel, queue: cl_command_queue, n: usize, args: &[Arg], wait: &[cl_event]) -> Option<Event> {
    if n == 0 {
        return None;
    }
    for (i, arg) in args.iter().enumerate() {
        let i = i as u32;
        // SAFETY: each argument has the size and type of the kernel's parameter `i` (cl_mem for
        // __global pointers, u64 for ulong, f32 for float).
        let set = unsafe {
            match arg {
                Arg::Mem(m) => kernel.set_arg(i, m),
                Arg::U64(v) => kernel.set_arg(i, v),
                Arg::F32(v) => kernel.set_arg(i, v),
            }
        };
        set.unwrap_or_else(|e| panic!("argument {i}: {e}"));
    }
    let global = [n];
    let list = if wait.is_empty() { ptr::null() } else { wait.as_ptr() };
    // SAFETY: all arguments are set; the buffers are live views' memory; `global` and the wait
    // list outlive the call.
    let ev = unsafe {
        enqueue_nd_range_kernel(
            queue,
            kernel.get(),
            1,
            ptr::null(),
            global.as_ptr(),
            ptr::null(),
            wait.len() as u32,
            list,
        )
    }
    .unwrap_or_else(|code| panic!("clEnqueueNDRangeKernel failed: {code}"));
    Some(Event::new(ev))
}

/// `y = a*x + y` over the views' elements, on `queue`.
pub fn saxpy(
    k: &Kernels,
    x: &OpenClMemory,
    y: &OpenClMemory,
    a: f32,
    queue: cl_command_queue,
    wait: &[cl_event],
) -> Option<Event> {
    let n = y.byte_len / 4;
    let args = [
        Arg::Mem(x.mem),
        Arg::U64(x.element_offset::<f32>().unwrap() as u64),
        Arg::Mem(y.mem),
        Arg::U64(y.element_offset::<f32>().unwrap() as u64),
        Arg::F32(a),
        Arg::U64(n as u64),
    ];
    launch(&k.saxpy, queue, n, &args, wait)
}

/// Fills the view's elements with `v`.
pub fn fill(k: &Kernels, y: &OpenClMemory, v: f32) -> Option<Event> {
    let n = y.byte_len / 4;
    let args = [Arg::Mem(y.mem), Arg::U64(y.element_offset::<f32>().unwrap() as u64), Arg::F32(v), Arg::U64(n as u64)];
    launch(&k.fill, y.queue, n, &args, &[])
}

/// Multiplies the view's elements by `a` in place, after `wait`.
pub fn scale(k: &Kernels, y: &OpenClMemory, a: f32, wait: &[cl_event]) -> Option<Event> {
    let n = y.byte_len / 4;
    let args = [Arg::Mem(y.mem), Arg::U64(y.element_offset::<f32>().unwrap() as u64), Arg::F32(a), Arg::U64(n as u64)];
    launch(&k.scale, y.queue, n, &args, wait)
}

/// `n` floats `1, 1 + k, 1 + 2k, ...`.
pub fn ramp(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| i as f32 * k + 1.0).collect()
}

/// The buffer's host-to-device and device-to-host copies so far.
pub fn transfers(b: &UnifiedBuffer<f32>) -> (u64, u64) {
    let m = b.metrics();
    (m.host_to_device, m.device_to_host)
}

/// A backend this crate opens with default options (no environment), or `None` after
/// printing why it is unavailable.
pub fn ours() -> Option<OpenClBackend> {
    match OpenClBackend::with_options(OpenClOptions::default()) {
        Ok(b) => Some(b),
        Err(e @ Error::BackendUnavailable { .. }) => {
            skip::unavailable("opencl", "this OpenCL kernel case", &e);
            None
        }
        Err(e) => panic!("opening the OpenCL backend failed: {e}"),
    }
}

/// The backend's context as an `opencl3` `Context` holding a reference of its own, so the
/// test can build programs on it and drop it in any order with the backend.
pub fn context_of(b: &OpenClBackend) -> Context {
    // SAFETY: the backend's context is live; the new reference is the wrapper's, released
    // when it drops.
    unsafe { opencl3::context::context::retain_context(b.context()) }.unwrap();
    Context::new(b.context(), &[b.device_id()])
}

/// A context and an in-order queue of the test's own, on the device `ours()` picks.
pub fn own_context(properties: u64) -> Option<(Context, CommandQueue)> {
    let b = ours()?;
    let context = Context::from_device(&Device::new(b.device_id())).unwrap();
    // SAFETY: the context's own device; `properties` are valid queue properties.
    let queue = unsafe { CommandQueue::create_with_properties(&context, b.device_id(), properties, 0) }.unwrap();
    Some((context, queue))
}

/// A manager on `backend` with pooling (views of reused blocks).
pub fn pooled(backend: OpenClBackend) -> MemoryManager {
    MemoryManager::with_backend(backend, ManagerOptions::default()).unwrap()
}

/// A manager on `backend` without pooling (every buffer a fresh allocation).
pub fn fresh(backend: OpenClBackend) -> MemoryManager {
    MemoryManager::with_backend(backend, ManagerOptions::default().with_enable_pooling(false)).unwrap()
}
