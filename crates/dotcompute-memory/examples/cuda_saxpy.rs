//! saxpy (`y = a * x + y`) on dotcompute-memory buffers with a CUDA kernel.
//!
//! The kernel is PTX text (`examples/saxpy.ptx`) loaded through cudarc; device views hand it
//! the buffers' device pointers and the stream to launch on, and the buffers wait for the
//! kernel on their own when the views drop. Runs the kernel on whole buffers, then on a slice.
//!
//! ```text
//! cargo run -p dotcompute-memory --features cuda --example cuda_saxpy
//! ```
//!
//! Without a usable GPU it prints why on stderr and exits with status 1.

use dotcompute_memory::backend::cuda::cudarc::driver::{
    CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg,
};
use dotcompute_memory::backend::cuda::cudarc::nvrtc::Ptx;
use dotcompute_memory::backend::cuda::CudaBackend;
use dotcompute_memory::{Access, BufferState, ManagerOptions, MemoryManager};
use std::process::ExitCode;
use std::sync::Arc;

type AnyError = Box<dyn std::error::Error>;

const SAXPY_PTX: &str = include_str!("saxpy.ptx");

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cuda_saxpy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), AnyError> {
    // Opening the backend checks for the driver and a GPU (cudarc's `CudaContext::new` would
    // panic without the driver library).
    let mm = MemoryManager::with_backend_name("cuda", ManagerOptions::default())?;
    let cuda = mm.backend().downcast_ref::<CudaBackend>().ok_or("the \"cuda\" backend is not the CUDA backend")?;
    println!("device: {}", mm.backend().description());
    // The device's primary context, the one the backend uses.
    let ctx = CudaContext::new(cuda.ordinal())?;
    let saxpy = ctx.load_module(Ptx::from_src(SAXPY_PTX))?.load_function("saxpy")?;

    let n = 1 << 20;
    let a = 2.0f32;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let y: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let xb = mm.allocate_from(&x)?;
    let mut yb = mm.allocate_from(&y)?;

    // Whole buffers: the views upload the host data, the kernel runs on the views' stream.
    {
        let xv = xb.device_view()?;
        let yv = yb.device_view_mut(Access::ReadWrite)?;
        let (xm, ym) = (xv.cuda().ok_or("no CUDA memory")?, yv.cuda().ok_or("no CUDA memory")?);
        // SAFETY: `ym.stream` is the backend's stream in this (primary) context, and `mm`,
        // which keeps it alive, outlives the wrapper.
        let stream = unsafe { ctx.wrap_borrowed_stream(ym.stream) };
        launch(&saxpy, &stream, n, a, xm.ptr, ym.ptr)?;
    } // the views drop: the buffer now waits for the kernel before its next use
    let want: Vec<f32> = x.iter().zip(&y).map(|(x, y)| a * x + y).collect();
    check("whole buffers", &yb.to_vec()?, &want)?;
    println!("after the kernel: y is {:?}; transfers: {:?}", yb.state(), yb.metrics().transfer_count);

    // A slice: the view's pointer includes the slice's offset.
    let (start, len) = (n / 4, n / 2);
    {
        let xs = xb.slice(start..start + len)?;
        let xv = xs.device_view()?;
        let mut ys = yb.slice_mut(start..start + len)?;
        let yv = ys.device_view_mut(Access::ReadWrite)?;
        let (xm, ym) = (xv.cuda().ok_or("no CUDA memory")?, yv.cuda().ok_or("no CUDA memory")?);
        // SAFETY: as above.
        let stream = unsafe { ctx.wrap_borrowed_stream(ym.stream) };
        launch(&saxpy, &stream, len, a, xm.ptr, ym.ptr)?;
    }
    let mut want_slice = want.clone();
    want_slice[start..start + len].iter_mut().zip(&x[start..]).for_each(|(y, x)| *y += a * x);
    check("a slice", &yb.to_vec()?, &want_slice)?;
    assert_eq!(yb.state(), BufferState::DeviceDirty);
    println!("saxpy on {n} elements and on the slice [{start}, {}) matches the host", start + len);
    Ok(())
}

/// Enqueues saxpy over `n` elements at device addresses `x` and `y` on `stream`.
fn launch(f: &CudaFunction, stream: &Arc<CudaStream>, n: usize, a: f32, x: u64, y: u64) -> Result<(), AnyError> {
    let n = u32::try_from(n)?;
    let mut args = stream.launch_builder(f);
    args.arg(&n).arg(&a).arg(&x).arg(&y);
    // SAFETY: the arguments match the kernel's parameters (u32, f32, f32*, f32*), and `x` and
    // `y` come from live device views of `n` f32 each.
    unsafe { args.launch(LaunchConfig::for_num_elems(n)) }?;
    Ok(())
}

fn check(what: &str, got: &[f32], want: &[f32]) -> Result<(), AnyError> {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        None => Ok(()),
        Some(i) => Err(format!("{what}: element {i} is {}, expected {}", got[i], want[i]).into()),
    }
}
