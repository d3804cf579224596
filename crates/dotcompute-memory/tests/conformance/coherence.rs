//! Every transition of the coherence table (docs/ARCHITECTURE.md), with the copies each one costs.

use crate::support::{in_state, snapshot, transfers, Ctx, STATES};
use dotcompute_memory::BufferState::{self, *};
use dotcompute_memory::*;

#[derive(Debug, Clone, Copy)]
enum Op {
    EnsureOnHost,
    AsSlice,
    CopyTo,
    EnsureOnDevice,
    Synchronize,
    AsMutSlice,
    CopyFrom,
    Fill,
    PartialWrite,
    MarkDeviceDirty,
    Compact,
    CopyFromBuffer,
    Upload,
    CopyFromAsync,
    CopyToAsync,
    SynchronizeAsync,
}

/// The outcome from one state: the new state and the (host-to-device, device-to-host) copies
/// on a discrete device, or a refused conflicting write.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    To(BufferState, u64, u64),
    Conflict,
}
use Outcome::*;

/// Columns: from HostOnly, HostDirty, Synchronized, DeviceDirty, DeviceOnly (see `STATES`).
const TABLE: &[(Op, [Outcome; 5])] = &[
    // One copy straight into device memory; the whole buffer is overwritten, so no conflict.
    (
        Op::Upload,
        [
            To(DeviceDirty, 1, 0),
            To(DeviceDirty, 1, 0),
            To(DeviceDirty, 1, 0),
            To(DeviceDirty, 1, 0),
            To(DeviceOnly, 1, 0),
        ],
    ),
    (
        Op::EnsureOnHost,
        [
            To(HostOnly, 0, 0),
            To(HostDirty, 0, 0),
            To(Synchronized, 0, 0),
            To(Synchronized, 0, 1),
            To(Synchronized, 0, 1),
        ],
    ),
    (
        Op::AsSlice,
        [
            To(HostOnly, 0, 0),
            To(HostDirty, 0, 0),
            To(Synchronized, 0, 0),
            To(Synchronized, 0, 1),
            To(Synchronized, 0, 1),
        ],
    ),
    // Reads the current side without changing state.
    (
        Op::CopyTo,
        [To(HostOnly, 0, 0), To(HostDirty, 0, 0), To(Synchronized, 0, 0), To(DeviceDirty, 0, 1), To(DeviceOnly, 0, 1)],
    ),
    (
        Op::EnsureOnDevice,
        [
            To(Synchronized, 1, 0),
            To(Synchronized, 1, 0),
            To(Synchronized, 0, 0),
            To(DeviceDirty, 0, 0),
            To(DeviceOnly, 0, 0),
        ],
    ),
    (
        Op::Synchronize,
        [
            To(Synchronized, 1, 0),
            To(Synchronized, 1, 0),
            To(Synchronized, 0, 0),
            To(Synchronized, 0, 1),
            To(Synchronized, 0, 1),
        ],
    ),
    // A mutable view cannot know what will be written: it pulls stale data first.
    (
        Op::AsMutSlice,
        [To(HostOnly, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 1), To(HostDirty, 0, 1)],
    ),
    // Writes that cover the whole buffer never pull.
    (
        Op::CopyFrom,
        [To(HostOnly, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 0)],
    ),
    (
        Op::Fill,
        [To(HostOnly, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 0)],
    ),
    (
        Op::PartialWrite,
        [To(HostOnly, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 0), To(HostDirty, 0, 1), To(HostDirty, 0, 1)],
    ),
    (
        Op::MarkDeviceDirty,
        [To(DeviceDirty, 1, 0), Conflict, To(DeviceDirty, 0, 0), To(DeviceDirty, 0, 0), To(DeviceOnly, 0, 0)],
    ),
    (Op::Compact, [To(HostOnly, 0, 0), To(HostOnly, 0, 0), To(HostOnly, 0, 0), To(HostOnly, 0, 1), To(HostOnly, 0, 1)]),
    // A whole device write from a device-current source: one device-to-device copy.
    (
        Op::CopyFromBuffer,
        [
            To(DeviceDirty, 0, 0),
            To(DeviceDirty, 0, 0),
            To(DeviceDirty, 0, 0),
            To(DeviceDirty, 0, 0),
            To(DeviceOnly, 0, 0),
        ],
    ),
    (
        Op::CopyFromAsync,
        [
            To(Synchronized, 1, 0),
            To(Synchronized, 1, 0),
            To(Synchronized, 1, 0),
            To(Synchronized, 1, 0),
            To(Synchronized, 1, 0),
        ],
    ),
    (
        Op::CopyToAsync,
        [
            To(HostOnly, 0, 0),
            To(HostDirty, 0, 0),
            To(Synchronized, 0, 0),
            To(Synchronized, 0, 1),
            To(Synchronized, 0, 1),
        ],
    ),
    (
        Op::SynchronizeAsync,
        [
            To(Synchronized, 1, 0),
            To(Synchronized, 1, 0),
            To(Synchronized, 0, 0),
            To(Synchronized, 0, 1),
            To(Synchronized, 0, 1),
        ],
    ),
];

const N: usize = 1000;

/// Runs `op` on `b`, returning the contents it must leave.
fn apply(ctx: &Ctx, op: Op, b: &mut UnifiedBuffer<i64>, data: &[i64]) -> Result<Vec<i64>> {
    let mut want = data.to_vec();
    match op {
        Op::EnsureOnHost => b.ensure_on_host()?,
        Op::AsSlice => assert_eq!(b.as_slice()?, data, "{}", ctx.at()),
        Op::CopyTo => {
            let mut out = vec![0; N];
            b.copy_to(&mut out)?;
            assert_eq!(out, data, "{}", ctx.at());
        }
        Op::EnsureOnDevice => b.ensure_on_device()?,
        Op::Synchronize => b.synchronize()?,
        Op::AsMutSlice => {
            let host = b.as_mut_slice()?;
            assert_eq!(host, data, "{}: as_mut_slice must show current data", ctx.at());
            host[0] = -1;
            want[0] = -1;
        }
        Op::CopyFrom => {
            want = (0..N as i64).map(|i| i * 5).collect();
            b.copy_from(&want)?;
        }
        Op::Fill => {
            want = vec![42; N];
            b.fill(42)?;
        }
        Op::PartialWrite => {
            b.slice_mut(10..20)?.copy_from(&[-7; 10])?;
            want[10..20].fill(-7);
        }
        Op::MarkDeviceDirty => b.mark_device_dirty()?,
        Op::Compact => b.release_device_part()?,
        Op::CopyFromBuffer => {
            want = (0..N as i64).map(|i| -i).collect();
            let mut src = ctx.mm.allocate_from(&want)?;
            src.ensure_on_device()?;
            b.copy_from_buffer(&src)?;
        }
        Op::CopyFromAsync => {
            want = (0..N as i64).map(|i| i * i).collect();
            pollster::block_on(b.copy_from_async(&want))?;
        }
        Op::CopyToAsync => {
            let mut out = vec![0; N];
            pollster::block_on(b.copy_to_async(&mut out))?;
            assert_eq!(out, data, "{}", ctx.at());
        }
        Op::SynchronizeAsync => pollster::block_on(b.synchronize_async())?,
        Op::Upload => {
            want = (0..N as i64).map(|i| 3 - i).collect();
            b.upload(&want)?;
        }
    }
    Ok(want)
}

pub fn every_transition_of_the_table(ctx: &Ctx) {
    let data: Vec<i64> = (0..N as i64).map(|i| i * 1_000_003 - 17).collect();
    for &(op, outcomes) in TABLE {
        for (from, outcome) in STATES.into_iter().zip(outcomes) {
            let at = format!("{} {op:?} from {from:?}", ctx.at());
            let mut b = in_state(&ctx.mm, &data, from);
            let (before, epochs) = (b.metrics(), b.epochs());
            let r = apply(ctx, op, &mut b, &data);
            match outcome {
                To(to, h2d, d2h) => {
                    let want = r.unwrap_or_else(|e| panic!("{at}: {e}"));
                    assert_eq!(b.state(), to, "{at}");
                    let (h, d, dd) = transfers(&b.metrics());
                    let (h, d, dd) =
                        (h - before.host_to_device, d - before.device_to_host, dd - before.device_to_device);
                    if ctx.unified() {
                        assert_eq!((h, d), (0, 0), "{at}: unified memory never copies between host and device");
                    } else {
                        assert_eq!((h, d), (h2d, d2h), "{at}: (host-to-device, device-to-host) copies");
                    }
                    let device_copies = u64::from(matches!(op, Op::CopyFromBuffer));
                    assert_eq!(dd, device_copies, "{at}: device-to-device copies");
                    assert_eq!(b.to_vec().unwrap(), want, "{at}: contents");
                    assert_eq!(b.state(), to, "{at}: reading the contents changed the state");
                }
                Conflict => {
                    match r {
                        Err(Error::ConcurrentModification { host_epoch, device_epoch, .. }) => {
                            assert_eq!((host_epoch, device_epoch), epochs, "{at}");
                        }
                        other => panic!("{at}: expected ConcurrentModification, got {other:?}"),
                    }
                    assert_eq!((b.state(), b.epochs()), (from, epochs), "{at}: a refused write changed the state");
                    assert_eq!(b.to_vec().unwrap(), data, "{at}");
                }
            }
        }
    }
}

pub fn synchronize_copies_the_stale_side_once(ctx: &Ctx) {
    for from in STATES {
        let at = format!("{} from {from:?}", ctx.at());
        let mut b = in_state(&ctx.mm, &[1u16; 4096], from);
        b.synchronize().unwrap();
        let after_first = transfers(&b.metrics());
        for _ in 0..5 {
            b.synchronize().unwrap();
            b.ensure_on_device().unwrap();
            b.ensure_on_host().unwrap();
            let _ = b.as_slice().unwrap();
        }
        assert_eq!(transfers(&b.metrics()), after_first, "{at}: repeated syncs copied again");
        assert_eq!(b.state(), Synchronized, "{at}");
        if ctx.unified() {
            assert!(b.metrics().skipped_syncs >= 1 || from == Synchronized, "{at}: {:?}", b.metrics());
        }
    }
}

pub fn conflicting_writes_are_refused(ctx: &Ctx) {
    let mut b = in_state(&ctx.mm, &[5u32; 100], Synchronized);
    b.as_mut_slice().unwrap()[3] = 6;
    let before = snapshot(&b);
    for _ in 0..3 {
        assert!(matches!(b.mark_device_dirty(), Err(Error::ConcurrentModification { .. })), "{}", ctx.at());
        assert_eq!(snapshot(&b), before, "{}", ctx.at());
    }
    // Synchronizing resolves it; then the device write is accepted and the host write kept.
    b.synchronize().unwrap();
    b.mark_device_dirty().unwrap();
    assert_eq!(b.as_slice().unwrap()[3], 6);
    assert_eq!(b.as_slice().unwrap()[4], 5);
}
