//! Kernels on device views: closure kernels over `device_slice_mut` where the backend's device
//! memory is host-addressable (cpu, sim), and on every backend the view's state rules: which
//! access uploads, what a view's end makes current, offsets of slice views.

use crate::support::{in_state, options, snapshot, transfers, Ctx, STATES};
use dotcompute_memory::BufferState::*;
use dotcompute_memory::*;

fn ramp(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| i as f32 * k + 1.0).collect()
}

/// The state a write through a device view leaves: the device side current.
fn after_device_write(from: BufferState) -> BufferState {
    if from == DeviceOnly {
        DeviceOnly
    } else {
        DeviceDirty
    }
}

/// Scales every element of the view by `a` with a closure kernel; false where the backend has
/// no host-addressable device memory (the view's rules are still checked by the caller).
fn scale(view: &mut DeviceViewMut<'_, f32>, a: f32) -> bool {
    match view.device_slice_mut() {
        Some(xs) => {
            xs.iter_mut().for_each(|x| *x *= a);
            true
        }
        None => false,
    }
}

pub fn closure_kernels_from_every_state(ctx: &Ctx) {
    let n = 1000;
    let data = ramp(n, 0.5);
    for from in STATES {
        for access in [Access::ReadWrite, Access::Overwrite] {
            let at = format!("{} {access:?} from {from:?}", ctx.at());
            let mut b = in_state(&ctx.mm, &data, from);
            let before = transfers(&b.metrics());
            let mut view = b.device_view_mut(access).unwrap();
            assert_eq!((view.len(), view.byte_len(), view.access()), (n, 4 * n, access), "{at}");
            let ran = match access {
                Access::ReadWrite => scale(&mut view, 3.0),
                _ => view.device_slice_mut().map(|xs| xs.copy_from_slice(&ramp(n, 2.0))).is_some(),
            };
            drop(view);
            let (h2d, _, _) = transfers(&b.metrics());
            // Only ReadWrite of a buffer whose host side is newer uploads first.
            let uploads = !ctx.unified() && access == Access::ReadWrite && matches!(from, HostOnly | HostDirty);
            assert_eq!(h2d - before.0, u64::from(uploads), "{at}: uploads");
            assert_eq!(b.state(), after_device_write(from), "{at}");
            if ran {
                let want: Vec<f32> = match access {
                    Access::ReadWrite => data.iter().map(|x| x * 3.0).collect(),
                    _ => ramp(n, 2.0),
                };
                assert_eq!(b.to_vec().unwrap(), want, "{at}: the kernel's results");
            } else {
                assert!(b.device_view().unwrap().device_slice().is_none(), "{at}");
            }
        }
    }
}

pub fn read_views_change_nothing(ctx: &Ctx) {
    let data = ramp(777, 1.5);
    for from in STATES {
        let at = format!("{} from {from:?}", ctx.at());
        let b = in_state(&ctx.mm, &data, from);
        let view = b.device_view().unwrap();
        if let Some(xs) = view.device_slice() {
            assert_eq!(xs, &data[..], "{at}: the device memory a kernel reads");
        }
        let epochs = b.epochs();
        drop(view);
        // A read view uploads a newer host side first, and changes nothing itself.
        let expected = match from {
            HostOnly | HostDirty => Synchronized,
            other => other,
        };
        assert_eq!(b.state(), expected, "{at}");
        let again = b.device_view().unwrap();
        drop(again);
        assert_eq!(b.epochs(), epochs, "{at}: a second read view changed the epochs");
        let mut out = vec![0.0; data.len()];
        b.copy_to(&mut out).unwrap();
        assert_eq!(out, data, "{at}");
    }
}

/// saxpy `y = a*x + y` on slices at element offsets, with `x` read through a read view and `y`
/// written through a mutable one; pooled and fresh buffers.
pub fn saxpy_on_slices_at_offsets(ctx: &Ctx) {
    let n = 4096;
    let x = ramp(n, 0.25);
    let y0 = ramp(n, -0.5);
    for round in 0..2 {
        // The second round's buffers come from the pool.
        let xb = ctx.mm.allocate_from(&x).unwrap();
        let mut yb = ctx.mm.allocate_from(&y0).unwrap();
        let x_base = xb.device_view().unwrap().byte_offset();
        let y_base = yb.device_view().unwrap().byte_offset();
        for (start, len) in [(0, n), (1, n - 1), (100, 333), (n - 7, 7), (5, 0)] {
            let at = format!("{} round {round} [{start}, +{len})", ctx.at());
            let before = yb.to_vec().unwrap();
            let xs = xb.slice(start..start + len).unwrap();
            let xv = xs.device_view().unwrap();
            let mut ys = yb.slice_mut(start..start + len).unwrap();
            let mut yv = ys.device_view_mut(Access::ReadWrite).unwrap();
            assert_eq!((xv.byte_offset(), yv.byte_offset()), (x_base + 4 * start, y_base + 4 * start), "{at}");
            assert_eq!(yv.len(), len, "{at}");
            let ran = match (xv.device_slice(), yv.device_slice_mut()) {
                (Some(xd), Some(yd)) => {
                    for (y, x) in yd.iter_mut().zip(xd) {
                        *y += 2.0 * x;
                    }
                    true
                }
                _ => false,
            };
            drop((xv, yv));
            if !ran {
                return;
            }
            let mut want = before;
            for i in start..start + len {
                want[i] += 2.0 * x[i];
            }
            assert_eq!(yb.to_vec().unwrap(), want, "{at}");
            assert_eq!(xb.to_vec().unwrap(), x, "{at}: the read side changed");
        }
    }
}

/// Byte offsets of slice views: the view's offset added to the buffer's place in its segment.
pub fn slice_views_carry_their_offset(ctx: &Ctx) {
    let mut b = ctx.mm.allocate_from(&ramp(256, 1.0)).unwrap();
    let base = b.device_view().unwrap().byte_offset();
    #[cfg(all(feature = "metal", target_os = "macos"))]
    let metal_base = b.device_view().unwrap().metal().map(|m| m.byte_offset);
    for start in [0usize, 1, 3, 64, 255] {
        let mut s = b.slice_mut(start..).unwrap();
        let v = s.device_view_mut(Access::Read).unwrap();
        assert_eq!(v.byte_offset(), base + 4 * start, "{} slice at {start}", ctx.at());
        if let Some(xs) = v.device_slice() {
            assert_eq!(xs[0], ramp(256, 1.0)[start], "{}", ctx.at());
        }
        #[cfg(all(feature = "metal", target_os = "macos"))]
        metal_view_carries_its_offset(ctx, &v, metal_base.map(|at| at + 4 * start));
    }
    // Read access through a mutable view changes nothing.
    assert_eq!(b.state(), Synchronized, "{}", ctx.at());
}

/// On Metal: the view's offset in its `MTLBuffer` is `want` (the whole buffer's plus the
/// slice's), its length is the view's, and with shared storage the buffer's CPU address at that
/// offset is the view's `device_slice`.
#[cfg(all(feature = "metal", target_os = "macos"))]
fn metal_view_carries_its_offset(ctx: &Ctx, v: &DeviceViewMut<'_, f32>, want: Option<usize>) {
    use dotcompute_memory::backend::metal::objc2_metal::MTLBuffer;
    let Some(m) = v.metal() else {
        assert_ne!(ctx.name, "metal", "{}: a view of a Metal buffer has no Metal memory", ctx.at());
        return;
    };
    assert_eq!(Some(m.byte_offset), want, "{}", ctx.at());
    assert_eq!(m.byte_len, v.byte_len(), "{}", ctx.at());
    if let Some(xs) = v.device_slice() {
        let cpu = m.buffer.contents().as_ptr().cast::<u8>().wrapping_add(m.byte_offset);
        assert_eq!(cpu.cast_const(), xs.as_ptr().cast::<u8>(), "{}", ctx.at());
    }
}

/// A partial `Overwrite` view uploads first (the rest of the buffer stays correct); a whole
/// one never does.
pub fn overwrite_of_a_part_keeps_the_rest(ctx: &Ctx) {
    let data = ramp(100, 1.0);
    let mut b = ctx.mm.allocate_from(&data).unwrap();
    let h2d = b.metrics().host_to_device;
    let ran = b
        .slice_mut(10..20)
        .unwrap()
        .with_device_mut(Access::Overwrite, |v| v.device_slice_mut().map(|xs| xs.fill(-1.0)).is_some())
        .unwrap();
    if !ctx.unified() {
        assert_eq!(b.metrics().host_to_device, h2d + 1, "{}: a partial overwrite uploads", ctx.at());
    }
    assert_eq!(b.state(), DeviceDirty, "{}", ctx.at());
    if ran {
        let mut want = data.clone();
        want[10..20].fill(-1.0);
        assert_eq!(b.to_vec().unwrap(), want, "{}", ctx.at());
    }
}

/// A view of a buffer whose device part cannot be allocated fails with the device's
/// out-of-memory error and leaves the buffer (and its host data) as it was.
pub fn a_view_without_device_memory_changes_nothing(ctx: &Ctx) {
    if ctx.unified() {
        return;
    }
    let limited = if ctx.name == "sim" {
        MemoryManager::with_backend(SimBackend::new(SimOptions::default().with_capacity(1 << 20)), options())
    } else {
        MemoryManager::with_backend_name(ctx.name, options().with_device_memory_limit(Some(1 << 20)))
    }
    .unwrap();
    let data = ramp((2 << 20) / 4, 1.0);
    let mut b = limited.allocate_from(&data).unwrap();
    let before = snapshot(&b);
    for access in [Access::Read, Access::ReadWrite, Access::Overwrite] {
        let err = b.device_view_mut(access).map(drop).unwrap_err();
        assert!(
            matches!(err, Error::OutOfMemory { .. } | Error::MemoryLimitExceeded { .. }),
            "{} {access:?}: {err:?}",
            ctx.at()
        );
        assert_eq!(snapshot(&b), before, "{} {access:?}", ctx.at());
    }
    let err = b.device_view().map(drop).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. } | Error::MemoryLimitExceeded { .. }), "{err:?}");
    assert_eq!(snapshot(&b), before);
}
