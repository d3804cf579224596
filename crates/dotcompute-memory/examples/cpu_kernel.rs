//! A kernel on a buffer's device memory, written as a plain closure: on the cpu backend (and
//! the `sim` backend) the device memory is host-addressable, so `device_slice_mut` hands it to
//! the kernel directly. The same program runs on a discrete device by using the view's native
//! handle (`view.opencl()`, `view.cuda()`) instead.
//!
//! Run: `cargo run -p dotcompute-memory --example cpu_kernel` (or with `DCMEM_BACKEND=sim`).

use dotcompute_memory::*;

fn main() -> Result<()> {
    let mm = MemoryManager::from_env()?;
    let n = 1 << 16;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let xs = mm.allocate_from(&x)?;
    let mut ys = mm.allocate_from(&vec![1.0f32; n])?;

    // saxpy on the device: y = 2x + y. The read view uploads x if the host side is newer; the
    // write view does the same for y, and when it ends y's device side is the current one.
    {
        let xv = xs.device_view()?;
        let mut yv = ys.device_view_mut(Access::ReadWrite)?;
        let (Some(x_dev), Some(y_dev)) = (xv.device_slice(), yv.device_slice_mut()) else {
            eprintln!(
                "the {} backend's device memory is not host-addressable: use view.opencl() or view.cuda()",
                mm.backend().name()
            );
            std::process::exit(2);
        };
        for (y, x) in y_dev.iter_mut().zip(x_dev) {
            *y += 2.0 * x;
        }
    }
    println!("after the kernel: y is {:?}", ys.state());

    // The host read pulls the kernel's results (a copy only on a discrete device).
    let y = ys.as_slice()?;
    assert!(y.iter().zip(&x).all(|(y, x)| *y == 2.0 * x + 1.0), "wrong results");
    println!(
        "y[..4] = {:?} on the {} backend; {} device-to-host copies",
        &y[..4],
        mm.backend().name(),
        ys.metrics().device_to_host
    );

    // A kernel on a slice: the view's offset says where the slice starts in device memory.
    ys.slice_mut(10..20)?.with_device_mut(Access::Overwrite, |v| {
        if let Some(part) = v.device_slice_mut() {
            part.fill(0.0);
        }
    })?;
    assert_eq!(&ys.as_slice()?[8..22], &[17.0, 19.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 41.0, 43.0]);
    println!("zeroed elements 10..20 through a slice view");
    Ok(())
}
