//! Device views with closure kernels on the backends whose device memory the host can address
//! (cpu: the buffer's one allocation; sim: the simulated device memory). Small sizes: Miri runs
//! these tests to check the views' raw pointers (two views of different buffers of one pool
//! segment at once, views of slices, views outliving a pool reuse).

use crate::support::managers::{cpu, sim};
use dotcompute_memory::*;
use BufferState::*;

fn managers() -> [MemoryManager; 2] {
    [cpu(), sim()]
}

#[test]
fn saxpy_through_a_read_view_and_a_write_view_of_one_segment() {
    for mm in managers() {
        let name = mm.backend().name();
        // Two small buffers: the pool carves both from one device segment.
        let x = mm.allocate_from(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).unwrap();
        let mut y = mm.allocate_from(&[10.0f32; 8]).unwrap();
        {
            let xs = x.slice(2..6).unwrap();
            let xv = xs.device_view().unwrap();
            let mut ys = y.slice_mut(1..5).unwrap();
            let mut yv = ys.device_view_mut(Access::ReadWrite).unwrap();
            let (xd, yd) = (xv.device_slice().unwrap(), yv.device_slice_mut().unwrap());
            for (y, x) in yd.iter_mut().zip(xd) {
                *y += 2.0 * x;
            }
        }
        assert_eq!(y.state(), DeviceDirty, "{name}");
        assert_eq!(y.to_vec().unwrap(), [10.0, 16.0, 18.0, 20.0, 22.0, 10.0, 10.0, 10.0], "{name}");
        assert_eq!(x.state(), Synchronized, "{name}");
    }
}

#[test]
fn an_overwrite_kernel_needs_no_upload_and_a_pooled_buffer_starts_clean() {
    for mm in managers() {
        let name = mm.backend().name();
        for round in 0..3u32 {
            // From the second round on, the buffer's memory comes back from the pool.
            let mut b = mm.allocate::<u32>(16).unwrap();
            b.fill(7).unwrap();
            let h2d = b.metrics().host_to_device;
            b.with_device_mut(Access::Overwrite, |v| {
                for (i, x) in v.device_slice_mut().unwrap().iter_mut().enumerate() {
                    *x = i as u32 * round;
                }
            })
            .unwrap();
            assert_eq!(b.metrics().host_to_device, h2d, "{name}: Overwrite uploaded");
            let want: Vec<u32> = (0..16).map(|i| i * round).collect();
            assert_eq!(b.as_slice().unwrap(), &want[..], "{name} round {round}");
            assert_eq!(b.state(), Synchronized, "{name}");
        }
    }
}

#[test]
fn a_device_only_buffer_stays_device_only() {
    for mm in managers() {
        let mut b = mm.allocate_device::<u16>(5).unwrap();
        b.upload(&[1, 2, 3, 4, 5]).unwrap();
        b.with_device_mut(Access::ReadWrite, |v| v.device_slice_mut().unwrap().reverse()).unwrap();
        assert_eq!(b.state(), DeviceOnly);
        assert_eq!(b.to_vec().unwrap(), [5, 4, 3, 2, 1]);
    }
}
