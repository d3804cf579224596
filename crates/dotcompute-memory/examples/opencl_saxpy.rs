//! saxpy (`y = a*x + y`) as an OpenCL kernel on dotcompute-memory buffers.
//!
//! Run with `cargo run -p dotcompute-memory --example opencl_saxpy --features opencl`.
//!
//! The program owns its OpenCL context and queue (made with `opencl3`, as an application
//! that already uses OpenCL would) and hands them to the memory manager with
//! `OpenClBackend::from_raw`. The buffers then live in that context: a device view gives the
//! kernel the buffer's `cl_mem` and its offset in it (pooled buffers share one allocation),
//! uploads what the host changed first, and when it ends makes the buffer wait for the kernel
//! before the host reads it.

use dotcompute_memory::backend::opencl::OpenClBackend;
use dotcompute_memory::{Access, BufferState, ManagerOptions, MemoryManager};
use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::device::{get_all_devices, Device, CL_DEVICE_TYPE_ALL};
use opencl3::kernel::{ExecuteKernel, Kernel};
use opencl3::program::Program;
use std::error::Error;

const SAXPY: &str = r#"
__kernel void saxpy(__global const float* x, ulong x_off, __global float* y, ulong y_off, float a, ulong n) {
    size_t i = get_global_id(0);
    if (i < n) y[y_off + i] = a * x[x_off + i] + y[y_off + i];
}
"#;

fn main() -> Result<(), Box<dyn Error>> {
    // The application's own OpenCL objects.
    let device = *get_all_devices(CL_DEVICE_TYPE_ALL)?.first().ok_or("no OpenCL device found")?;
    let context = Context::from_device(&Device::new(device))?;
    let queue = CommandQueue::create_default_with_properties(&context, 0, 0)?;
    let program = Program::create_and_build_from_source(&context, SAXPY, "")
        .map_err(|log| format!("building the kernel failed: {log}"))?;
    let kernel = Kernel::create(&program, "saxpy")?;

    // A memory manager on them. The backend takes references of its own, so the order in
    // which the application and the manager drop their objects does not matter.
    // SAFETY: the three handles are live objects of this program's, held for the call.
    let backend = unsafe { OpenClBackend::from_raw(context.get(), device, queue.get())? };
    println!("device: {}", backend.device().name);
    let mm = MemoryManager::with_backend(backend, ManagerOptions::default())?;

    let n = 1 << 20;
    let a = 2.5f32;
    let x_host: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let y_host: Vec<f32> = (0..n).map(|i| (n - i) as f32).collect();
    let x = mm.allocate_from(&x_host)?;
    let mut y = mm.allocate_from(&y_host)?;

    // Whole buffers, then the second half of y again through a slice.
    for (start, len) in [(0, n), (n / 2, n / 2)] {
        let xs = x.slice(start..start + len)?;
        let xv = xs.device_view()?; // uploads x the first time
        let mut ys = y.slice_mut(start..start + len)?;
        let yv = ys.device_view_mut(Access::ReadWrite)?; // uploads y the first time
        let (xm, ym) = (xv.opencl().ok_or("not an OpenCL buffer")?, yv.opencl().ok_or("not an OpenCL buffer")?);
        let x_off = xm.element_offset::<f32>().ok_or("x offset is not a whole element")? as u64;
        let y_off = ym.element_offset::<f32>().ok_or("y offset is not a whole element")? as u64;
        // SAFETY: the arguments match the kernel's parameters (cl_mem, ulong, cl_mem, ulong,
        // float, ulong) and the views keep both buffers' device memory in place; the kernel runs
        // on the application's queue, which is `ym.queue`, the queue the views order after.
        unsafe {
            ExecuteKernel::new(&kernel)
                .set_arg(&xm.mem)
                .set_arg(&x_off)
                .set_arg(&ym.mem)
                .set_arg(&y_off)
                .set_arg(&a)
                .set_arg(&(len as u64))
                .set_global_work_size(len)
                .enqueue_nd_range(&queue)?;
        }
        println!(
            "saxpy on elements {start}..{}: x at byte {} of its cl_mem, y at byte {}",
            start + len,
            xm.byte_offset,
            ym.byte_offset
        );
        // Dropping the views (here, at the end of the iteration) marks y's device side as the
        // newest and makes y's next host access wait for the kernel.
    }
    assert_eq!(y.state(), BufferState::DeviceDirty);

    // The host read downloads y once, after the kernels have finished.
    let result = y.as_slice()?;
    let expect = |i: usize| {
        let once = a * x_host[i] + y_host[i];
        if i >= n / 2 {
            a * x_host[i] + once
        } else {
            once
        }
    };
    let wrong = (0..n).filter(|&i| result[i] != expect(i)).count();
    let m = y.metrics();
    println!(
        "y: {} elements checked, {wrong} wrong; {} upload(s), {} download(s)",
        n, m.host_to_device, m.device_to_host
    );
    if wrong != 0 {
        return Err(format!("{wrong} elements differ from a*x + y").into());
    }
    println!("opencl_saxpy: OK");
    Ok(())
}
