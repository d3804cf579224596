//! Round trips host -> device -> device -> host at sizes from 1 byte to 64 MiB.

use crate::support::{bytes, same, Ctx};
use dotcompute_memory::BufferState::*;

/// Odd sizes around powers of two, page and pool-class edges, and a few large ones.
const SIZES: &[usize] =
    &[1, 2, 3, 7, 8, 63, 64, 65, 511, 512, 513, 4095, 4096, 4097, 65_537, (1 << 20) + 3, (16 << 20) - 1, 64 << 20];

pub fn round_trips_from_1_byte_to_64_mib(ctx: &Ctx) {
    let mm = &ctx.mm;
    for &n in SIZES {
        let at = format!("{} {n} bytes", ctx.at());
        let data = bytes(n, (n % 251) as u8);
        // Host -> device.
        let mut a = mm.allocate::<u8>(n).unwrap();
        assert_eq!((a.len(), a.size_in_bytes()), (n, n));
        a.copy_from(&data).unwrap();
        a.ensure_on_device().unwrap();
        assert_eq!(a.state(), Synchronized, "{at}");
        // Device -> device into a second buffer, then device -> host.
        let mut b = mm.allocate::<u8>(n).unwrap();
        b.copy_from_buffer(&a).unwrap();
        assert_eq!(b.state(), DeviceDirty, "{at}");
        let mut out = vec![0u8; n];
        b.copy_to(&mut out).unwrap();
        same(&format!("{at}: copy_to after a device copy"), &out, &data);
        same(&format!("{at}: as_slice after a device copy"), b.as_slice().unwrap(), &data);
        assert_eq!(b.state(), Synchronized, "{at}");
        // Overwrite the source on the host and push it, then copy back on the device: the
        // first buffer must end with the second's (original) data, read from the device.
        a.fill(0xEE).unwrap();
        a.ensure_on_device().unwrap();
        a.copy_from_buffer(&b).unwrap();
        a.release_device_part().unwrap();
        assert_eq!(a.state(), HostOnly, "{at}");
        same(&format!("{at}: after compact"), a.as_slice().unwrap(), &data);
        if !ctx.unified() {
            let m = b.metrics();
            // copy_to reads the device without changing state; as_slice then pulls.
            assert_eq!((m.host_to_device, m.device_to_host, m.device_to_device), (0, 2, 1), "{at}: {m:?}");
            assert_eq!(m.bytes_transferred, 3 * n as u64, "{at}: {m:?}");
        }
    }
}

pub fn round_trips_of_typed_elements(ctx: &Ctx) {
    let mm = &ctx.mm;
    for n in [1usize, 3, 17, 1000, 65_537] {
        let f: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 7.25).collect();
        let mut b = mm.allocate_from(&f).unwrap();
        b.mark_device_dirty().unwrap();
        same(&format!("{} f32 x {n}", ctx.at()), &b.to_vec().unwrap(), &f);
        let d: Vec<f64> = (0..n).map(|i| (i as f64).sqrt()).collect();
        let mut b = mm.allocate::<f64>(n).unwrap();
        pollster::block_on(b.copy_from_async(&d)).unwrap();
        let mut out = vec![0.0; n];
        b.mark_device_dirty().unwrap();
        pollster::block_on(b.copy_to_async(&mut out)).unwrap();
        same(&format!("{} f64 x {n}", ctx.at()), &out, &d);
        let w: Vec<u128> = (0..n as u128).map(|i| i * 0x1_0000_0001_0000_0001).collect();
        let mut b = mm.allocate_from(&w).unwrap();
        b.synchronize().unwrap();
        b.mark_device_dirty().unwrap();
        same(&format!("{} u128 x {n}", ctx.at()), b.as_slice().unwrap(), &w);
        // Reinterpreted views see the same bytes.
        let bytes = b.cast::<u8>().unwrap();
        assert_eq!(bytes.len(), n * 16);
        let expected: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
        same(&format!("{} u128 as bytes", ctx.at()), &bytes.to_vec().unwrap(), &expected);
    }
}
