//! Device-to-device copies, whole and ranged, from sources in every state.

use crate::support::{in_state, snapshot, transfers, Ctx, STATES};
use dotcompute_memory::BufferState::*;
use dotcompute_memory::Error;

pub fn whole_device_copies_from_every_source_state(ctx: &Ctx) {
    let src_data: Vec<u32> = (0..300).map(|i| i * 3 + 1).collect();
    let dst_data: Vec<u32> = (0..300).map(|i| 7000 - i).collect();
    for src_state in STATES {
        for dst_state in STATES {
            let at = format!("{} {src_state:?} -> {dst_state:?}", ctx.at());
            let src = in_state(&ctx.mm, &src_data, src_state);
            let mut dst = in_state(&ctx.mm, &dst_data, dst_state);
            let (src_epochs, before) = (src.epochs(), dst.metrics());
            dst.copy_from_buffer(&src).unwrap();
            let device_written = if dst_state == DeviceOnly { DeviceOnly } else { DeviceDirty };
            assert_eq!(dst.state(), device_written, "{at}");
            let (h2d, d2h, d2d) = transfers(&dst.metrics());
            let delta = (h2d - before.host_to_device, d2h - before.device_to_host, d2d - before.device_to_device);
            let expected = if ctx.unified() || matches!(src_state, Synchronized | DeviceDirty | DeviceOnly) {
                (0, 0, 1) // one device-to-device copy, nothing else
            } else {
                (1, 0, 0) // the source's current data is on the host: one upload
            };
            assert_eq!(delta, expected, "{at}: (h2d, d2h, d2d)");
            assert_eq!((src.state(), src.epochs()), (src_state, src_epochs), "{at}: the source changed");
            assert_eq!(dst.to_vec().unwrap(), src_data, "{at}");
            assert_eq!(src.to_vec().unwrap(), src_data, "{at}");
            // From a view of equal length, into the whole buffer.
            let big = in_state(&ctx.mm, &[src_data.clone(), src_data.clone()].concat(), src_state);
            dst.copy_from_buffer(&big.slice(100..400).unwrap()).unwrap();
            let mut want = src_data[100..].to_vec();
            want.extend_from_slice(&src_data[..100]);
            assert_eq!(dst.as_slice().unwrap(), want, "{at}: from a view");
        }
    }
}

pub fn ranged_device_copies_at_every_offset_pair(ctx: &Ctx) {
    const N: usize = 40;
    for src_state in [DeviceDirty, HostOnly, Synchronized] {
        let src_data: Vec<u32> = (0..N as u32).map(|i| 100 + i).collect();
        let src = in_state(&ctx.mm, &src_data, src_state);
        let mut dst = ctx.mm.allocate_zeroed::<u32>(N).unwrap();
        let mut model = vec![0u32; N];
        for d in 0..16 {
            for s in 0..16 {
                for len in [1usize, 5, 16] {
                    let at = format!("{} from {src_state:?}: dst {d}..{} <- src {s}..{}", ctx.at(), d + len, s + len);
                    // Vary the destination's state so partial copies meet every case.
                    match (d + s + len) % 4 {
                        0 => {}
                        1 => dst.ensure_on_device().unwrap(),
                        2 => {
                            dst.ensure_on_device().unwrap();
                            dst.as_mut_slice().unwrap()[N - 1] = (d * 16 + s) as u32;
                            model[N - 1] = (d * 16 + s) as u32;
                        }
                        _ => dst.release_device_part().unwrap(),
                    }
                    dst.slice_mut(d..d + len).unwrap().copy_from_buffer(&src.slice(s..s + len).unwrap()).unwrap();
                    model[d..d + len].copy_from_slice(&src_data[s..s + len]);
                    assert_eq!(dst.state(), DeviceDirty, "{at}");
                    assert_eq!(dst.to_vec().unwrap(), model, "{at}");
                }
            }
        }
        assert_eq!(src.state(), src_state);
        assert_eq!(src.to_vec().unwrap(), src_data);
    }
}

pub fn device_copies_keep_the_rest_of_the_destination(ctx: &Ctx) {
    for dst_state in STATES {
        let at = format!("{} into {dst_state:?}", ctx.at());
        let src = in_state(&ctx.mm, &[9u8; 64], DeviceDirty);
        let old: Vec<u8> = (0..64).collect();
        let mut dst = in_state(&ctx.mm, &old, dst_state);
        if dst_state == HostDirty {
            // Host writes the device has not seen must survive a partial device copy.
            dst.as_mut_slice().unwrap()[63] = 200;
        }
        dst.slice_mut(10..20).unwrap().copy_from_buffer(&src.slice(0..10).unwrap()).unwrap();
        let mut want = old.clone();
        want[10..20].fill(9);
        if dst_state == HostDirty {
            want[63] = 200;
        }
        let device_written = if dst_state == DeviceOnly { DeviceOnly } else { DeviceDirty };
        assert_eq!(dst.state(), device_written, "{at}");
        assert_eq!(dst.to_vec().unwrap(), want, "{at}");
        // An empty range copies nothing and changes nothing.
        let before = (dst.state(), dst.epochs(), dst.metrics().transfer_count);
        dst.slice_mut(5..5).unwrap().copy_from_buffer(&src.slice(1..1).unwrap()).unwrap();
        assert_eq!((dst.state(), dst.epochs(), dst.metrics().transfer_count), before, "{at}");
    }
}

/// Copies from a buffer of another manager on a second instance of the backend (a second
/// device, as far as the buffers know): whole and ranged, from every source state into every
/// destination state, with the source unchanged.
pub fn copies_from_another_device(ctx: &Ctx) {
    let Some(other) = ctx.another_manager() else { return };
    let src_data: Vec<u64> = (0..32).map(|i| i * 11 + 3).collect();
    for src_state in STATES {
        let src = in_state(&other, &src_data, src_state);
        let src_epochs = src.epochs();
        for dst_state in STATES {
            let at = format!("{} {src_state:?} on another device -> {dst_state:?}", ctx.at());
            let mut dst = in_state(&ctx.mm, &[2u64; 32], dst_state);
            let before = dst.metrics();
            dst.copy_from_buffer(&src).unwrap();
            let device_written = if dst_state == DeviceOnly { DeviceOnly } else { DeviceDirty };
            assert_eq!(dst.state(), device_written, "{at}");
            let (h2d, d2h, d2d) = transfers(&dst.metrics());
            let delta = (h2d - before.host_to_device, d2h - before.device_to_host, d2d - before.device_to_device);
            let from_host = !other.backend().is_unified() && matches!(src_state, HostOnly | HostDirty | Synchronized);
            let expected = if ctx.unified() || !from_host { (0, 0, 1) } else { (1, 0, 0) };
            assert_eq!(delta, expected, "{at}: (h2d, d2h, d2d)");
            assert_eq!(dst.to_vec().unwrap(), src_data, "{at}");
            // A range of one into a range of the other keeps the rest of the destination.
            let mut want = src_data.clone();
            dst.slice_mut(0..4).unwrap().copy_from_buffer(&src.slice(4..8).unwrap()).unwrap();
            want[..4].copy_from_slice(&src_data[4..8]);
            assert_eq!(dst.to_vec().unwrap(), want, "{at}: ranged");
            // Lengths that differ: an error that changes nothing.
            let before = snapshot(&dst);
            let err = dst.copy_from_buffer(&src.slice(0..31).unwrap()).unwrap_err();
            assert!(matches!(err, Error::LengthMismatch { expected: 32, actual: 31, .. }), "{at}: {err:?}");
            assert_eq!(snapshot(&dst), before, "{at}");
        }
        assert_eq!(
            (src.state(), src.epochs()),
            (src_state, src_epochs),
            "{} {src_state:?}: the source changed",
            ctx.at()
        );
        assert_eq!(src.to_vec().unwrap(), src_data);
    }
}
