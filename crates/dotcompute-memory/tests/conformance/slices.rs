//! Views at every alignment offset 0..16, for 1-, 4- and 8-byte elements, with the data on the
//! host and on the device.

use crate::support::{in_state, Ctx};
use dotcompute_memory::BufferState::*;
use dotcompute_memory::*;
use std::fmt::Debug;

const N: usize = 48;
const LENS: &[usize] = &[0, 1, 2, 3, 5, 8, 13, 17];

fn every_offset<T: Element + PartialEq + Debug>(ctx: &Ctx, make: impl Fn(usize) -> T) {
    let base: Vec<T> = (0..N).map(&make).collect();
    for state in [Synchronized, DeviceDirty, HostOnly] {
        let mut buf = in_state(&ctx.mm, &base, state);
        let mut model = base.clone();
        let at = format!("{} {} from {state:?}", ctx.at(), std::any::type_name::<T>());
        // Reads at every offset and several lengths; from DeviceDirty these are device reads
        // at byte offsets that are not multiples of anything larger than the element.
        for off in 0..16 {
            for &len in LENS.iter().chain([N - off].iter()) {
                let view = buf.slice(off..off + len).unwrap();
                assert_eq!((view.offset(), view.len()), (off, len));
                let mut out = vec![make(999); len];
                view.copy_to(&mut out).unwrap();
                assert_eq!(out, model[off..off + len], "{at}: slice({off}..{})", off + len);
            }
        }
        assert_eq!(buf.state(), state, "{at}: reading views changes no state");
        // Writes at every offset, each followed by a device round trip of the whole buffer.
        for off in 0..16 {
            let len = 1 + off % 7;
            let new: Vec<T> = (0..len).map(|i| make(1000 + off * 10 + i)).collect();
            let before = buf.state();
            buf.slice_mut(off..off + len).unwrap().copy_from(&new).unwrap();
            model[off..off + len].copy_from_slice(&new);
            assert_eq!(buf.state(), if before == HostOnly { HostOnly } else { HostDirty }, "{at}");
            buf.ensure_on_device().unwrap();
            buf.mark_device_dirty().unwrap();
            assert_eq!(buf.to_vec().unwrap(), model, "{at}: after writing slice_mut({off}..{})", off + len);
            // Fill and host access through a view at the same offset.
            let mut view = buf.slice_mut(off..off + len).unwrap();
            view.fill(make(2000 + off)).unwrap();
            model[off..off + len].fill(make(2000 + off));
            assert_eq!(view.as_slice().unwrap(), &model[off..off + len], "{at}");
            view.as_mut_slice().unwrap()[0] = make(3000 + off);
            model[off] = make(3000 + off);
            buf.synchronize().unwrap();
            buf.mark_device_dirty().unwrap();
            assert_eq!(buf.slice(off..).unwrap().as_slice().unwrap(), &model[off..], "{at}");
        }
    }
}

pub fn slices_at_every_offset_u8(ctx: &Ctx) {
    every_offset(ctx, |i| (i * 7 + 1) as u8);
}

pub fn slices_at_every_offset_u32(ctx: &Ctx) {
    every_offset(ctx, |i| (i as u32).wrapping_mul(0x0101_0101) ^ 0xA5A5_0000);
}

pub fn slices_at_every_offset_f64(ctx: &Ctx) {
    every_offset(ctx, |i| i as f64 * 1.5 - 3.0);
}

pub fn nested_slices_at_every_offset(ctx: &Ctx) {
    let base: Vec<u32> = (0..N as u32).collect();
    let b = in_state(&ctx.mm, &base, DeviceDirty);
    for outer in 0..16 {
        let view = b.slice(outer..).unwrap();
        for inner in 0..16 {
            let v = view.slice(inner..inner + 8).unwrap();
            assert_eq!(v.offset(), outer + inner);
            assert_eq!(v.to_vec().unwrap(), base[outer + inner..outer + inner + 8], "{}", ctx.at());
            let vv = v.slice(1..=2).unwrap();
            assert_eq!(vv.to_vec().unwrap(), [(outer + inner + 1) as u32, (outer + inner + 2) as u32]);
        }
    }
    assert_eq!(b.state(), DeviceDirty);
}
