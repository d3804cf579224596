//! The state each writing method leaves, as its documentation says, on the CPU (unified memory)
//! and on the simulated discrete device; and the eager `allocate_on_device`, whose
//! out-of-memory error comes at allocation with nothing left allocated.

use dotcompute_memory::*;
use BufferState::*;

fn quiet() -> ManagerOptions {
    ManagerOptions::default().with_maintenance_interval(None)
}

fn managers() -> [MemoryManager; 2] {
    [
        MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap(),
        MemoryManager::with_backend(SimBackend::new(SimOptions::default()), quiet()).unwrap(),
    ]
}

const DATA: [u32; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const OTHER: [u32; 8] = [9, 8, 7, 6, 5, 4, 3, 2];

/// A buffer holding `DATA` in `state`.
fn in_state(mm: &MemoryManager, state: BufferState) -> UnifiedBuffer<u32> {
    let mut b = match state {
        DeviceOnly => {
            let mut b = mm.allocate_device::<u32>(DATA.len()).unwrap();
            b.with_device_mut(Access::Overwrite, |v| v.device_slice_mut().unwrap().copy_from_slice(&DATA)).unwrap();
            b
        }
        _ => mm.allocate_from(&DATA).unwrap(),
    };
    match state {
        HostOnly | DeviceOnly => {}
        Synchronized => b.ensure_on_device().unwrap(),
        HostDirty => {
            b.ensure_on_device().unwrap();
            b.as_mut_slice().unwrap()[0] = DATA[0];
        }
        DeviceDirty => {
            b.ensure_on_device().unwrap();
            b.mark_device_dirty().unwrap();
        }
    }
    assert_eq!(b.state(), state, "{}: setting up {state:?}", mm.backend().name());
    b
}

const ALL: [BufferState; 5] = [HostOnly, DeviceOnly, Synchronized, HostDirty, DeviceDirty];

/// The state after a host write: the host part is newer, if there is a device part at all.
fn host_written(before: BufferState) -> BufferState {
    if before == HostOnly {
        HostOnly
    } else {
        HostDirty
    }
}

/// The state after a device write: the device part is newer, if there is a host part at all.
fn device_written(before: BufferState) -> BufferState {
    if before == DeviceOnly {
        DeviceOnly
    } else {
        DeviceDirty
    }
}

#[test]
fn host_writes_leave_host_dirty_or_host_only() {
    for mm in managers() {
        let name = mm.backend().name();
        for start in ALL {
            let mut b = in_state(&mm, start);
            b.copy_from(&OTHER).unwrap();
            assert_eq!(b.state(), host_written(start), "{name}: copy_from from {start:?}");
            assert_eq!(b.to_vec().unwrap(), OTHER);

            let mut b = in_state(&mm, start);
            b.fill(3).unwrap();
            assert_eq!(b.state(), host_written(start), "{name}: fill from {start:?}");

            let mut b = in_state(&mm, start);
            b.as_mut_slice().unwrap()[1] = 0;
            assert_eq!(b.state(), host_written(start), "{name}: as_mut_slice from {start:?}");
            assert_eq!(b.to_vec().unwrap()[..3], [1, 0, 3]);

            let mut b = in_state(&mm, start);
            b.slice_mut(2..4).unwrap().copy_from(&[0, 0]).unwrap();
            assert_eq!(b.state(), host_written(start), "{name}: slice copy_from from {start:?}");
            assert_eq!(b.to_vec().unwrap()[..5], [1, 2, 0, 0, 5]);

            let mut b = in_state(&mm, start);
            b.slice_mut(2..4).unwrap().as_mut_slice().unwrap()[0] = 0;
            assert_eq!(b.state(), host_written(start), "{name}: slice as_mut_slice from {start:?}");

            let mut b = in_state(&mm, start);
            b.slice_mut(2..2).unwrap().copy_from(&[]).unwrap();
            assert_eq!(b.state(), start, "{name}: an empty slice write changes nothing");
        }
        let mut fresh = mm.allocate_zeroed::<u32>(4).unwrap();
        assert_eq!(fresh.state(), HostOnly, "{name}: allocate_zeroed");
        fresh = mm.allocate_from(&[1u32, 2]).unwrap();
        assert_eq!(fresh.state(), HostOnly, "{name}: allocate_from");
    }
}

#[test]
fn copy_from_async_ends_as_copy_from_then_ensure_on_device() {
    for mm in managers() {
        let name = mm.backend().name();
        for start in ALL {
            let mut blocking = in_state(&mm, start);
            blocking.copy_from(&OTHER).unwrap();
            blocking.ensure_on_device().unwrap();

            let mut asynchronous = in_state(&mm, start);
            pollster::block_on(asynchronous.copy_from_async(&OTHER)).unwrap();

            assert_eq!(asynchronous.state(), Synchronized, "{name}: copy_from_async from {start:?}");
            assert_eq!(
                (asynchronous.state(), asynchronous.epochs()),
                (blocking.state(), blocking.epochs()),
                "{name}: from {start:?}"
            );
            assert_eq!(asynchronous.to_vec().unwrap(), blocking.to_vec().unwrap());
        }
        let mut empty = mm.allocate::<u32>(0).unwrap();
        pollster::block_on(empty.copy_from_async(&[])).unwrap();
        let mut blocking = mm.allocate::<u32>(0).unwrap();
        blocking.copy_from(&[]).unwrap();
        blocking.ensure_on_device().unwrap();
        assert_eq!((empty.state(), empty.epochs()), (blocking.state(), blocking.epochs()), "{name}: empty");
    }
}

#[test]
fn upload_leaves_device_dirty_or_device_only() {
    for mm in managers() {
        let name = mm.backend().name();
        for start in ALL {
            let mut b = in_state(&mm, start);
            b.upload(&OTHER).unwrap();
            assert_eq!(b.state(), device_written(start), "{name}: upload from {start:?}");
            assert_eq!(b.to_vec().unwrap(), OTHER, "{name}: reads see the uploaded data");
            assert_eq!(b.as_slice().unwrap(), OTHER, "{name}: the host part is refreshed on access");
            assert_eq!(b.state(), Synchronized, "{name}: after the host access");
        }
        let mut empty = mm.allocate::<u32>(0).unwrap();
        empty.upload(&[]).unwrap();
        assert_eq!(empty.state(), HostOnly, "{name}: a zero-length buffer is left as it was");
    }
}

#[test]
fn upload_on_a_discrete_device_leaves_the_host_part_stale_until_accessed() {
    let mm = MemoryManager::with_backend(SimBackend::new(SimOptions::default()), quiet()).unwrap();
    let mut b = in_state(&mm, Synchronized);
    let before = b.metrics();
    b.upload(&OTHER).unwrap();
    assert_eq!(b.metrics().host_to_device, before.host_to_device + 1);
    assert_eq!(b.metrics().device_to_host, before.device_to_host, "no copy back to the host");
    b.as_slice().unwrap();
    assert_eq!(b.metrics().device_to_host, before.device_to_host + 1, "the first host access downloads");
}

#[test]
fn ensure_on_device_and_ensure_on_host_synchronize_or_keep_a_current_part() {
    for mm in managers() {
        let name = mm.backend().name();
        for start in ALL {
            let mut b = in_state(&mm, start);
            b.ensure_on_device().unwrap();
            let expected = if matches!(start, DeviceOnly | DeviceDirty) { start } else { Synchronized };
            assert_eq!(b.state(), expected, "{name}: ensure_on_device from {start:?}");

            let b = in_state(&mm, start);
            b.ensure_on_host().unwrap();
            let expected = if matches!(start, HostOnly | HostDirty | Synchronized) { start } else { Synchronized };
            assert_eq!(b.state(), expected, "{name}: ensure_on_host from {start:?}");

            let b = in_state(&mm, start);
            b.as_slice().unwrap();
            assert_eq!(b.state(), expected, "{name}: as_slice from {start:?}");
            b.slice(0..2).unwrap().as_slice().unwrap();
            assert_eq!(b.state(), expected, "{name}: slice as_slice from {start:?}");

            let mut b = in_state(&mm, start);
            b.synchronize().unwrap();
            assert_eq!(b.state(), Synchronized, "{name}: synchronize from {start:?}");

            let mut b = in_state(&mm, start);
            pollster::block_on(b.synchronize_async()).unwrap();
            assert_eq!(b.state(), Synchronized, "{name}: synchronize_async from {start:?}");

            let mut b = in_state(&mm, start);
            let mut out = [0u32; 8];
            pollster::block_on(b.copy_to_async(&mut out)).unwrap();
            assert_eq!(b.state(), expected, "{name}: copy_to_async from {start:?}");
            assert_eq!(out, DATA);

            let b = in_state(&mm, start);
            b.copy_to(&mut out).unwrap();
            assert_eq!(b.state(), start, "{name}: copy_to changes nothing");
        }
    }
}

#[test]
fn device_views_and_device_writes() {
    for mm in managers() {
        let name = mm.backend().name();
        for start in ALL {
            let on_device = if matches!(start, DeviceOnly | DeviceDirty) { start } else { Synchronized };

            let b = in_state(&mm, start);
            drop(b.device_view().unwrap());
            assert_eq!(b.state(), on_device, "{name}: device_view from {start:?}");

            let mut b = in_state(&mm, start);
            drop(b.device_view_mut(Access::Read).unwrap());
            assert_eq!(b.state(), on_device, "{name}: Read view from {start:?}");

            for access in [Access::ReadWrite, Access::Overwrite] {
                let mut b = in_state(&mm, start);
                b.with_device_mut(access, |v| v.device_slice_mut().unwrap().copy_from_slice(&OTHER)).unwrap();
                assert_eq!(b.state(), device_written(start), "{name}: {access:?} view from {start:?}");
                assert_eq!(b.to_vec().unwrap(), OTHER);

                let mut b = in_state(&mm, start);
                b.slice_mut(2..4).unwrap().with_device_mut(access, |v| v.device_slice_mut().unwrap().fill(0)).unwrap();
                assert_eq!(b.state(), device_written(start), "{name}: slice {access:?} view from {start:?}");
                assert_eq!(b.to_vec().unwrap()[..5], [1, 2, 0, 0, 5]);
            }

            let src = mm.allocate_from(&OTHER).unwrap();
            let mut b = in_state(&mm, start);
            b.copy_from_buffer(&src).unwrap();
            assert_eq!(b.state(), device_written(start), "{name}: copy_from_buffer from {start:?}");
            assert_eq!(b.to_vec().unwrap(), OTHER);

            let mut b = in_state(&mm, start);
            b.slice_mut(0..2).unwrap().copy_from_buffer(&src.slice(0..2).unwrap()).unwrap();
            assert_eq!(b.state(), device_written(start), "{name}: slice copy_from_buffer from {start:?}");

            let b = in_state(&mm, start);
            let clone = b.try_clone().unwrap();
            assert_eq!(b.state(), start, "{name}: try_clone leaves the source as it was");
            assert_eq!(clone.state(), DeviceDirty, "{name}: the clone of a {start:?} buffer");

            if start != HostDirty {
                let mut b = in_state(&mm, start);
                b.mark_device_dirty().unwrap();
                assert_eq!(b.state(), device_written(start), "{name}: mark_device_dirty from {start:?}");
            }
        }
    }
}

#[test]
fn release_device_part_leaves_host_only_and_compact_is_its_deprecated_name() {
    for mm in managers() {
        let name = mm.backend().name();
        for start in ALL {
            let mut b = in_state(&mm, start);
            b.release_device_part().unwrap();
            assert_eq!(b.state(), HostOnly, "{name}: release_device_part from {start:?}");
            assert_eq!(b.to_vec().unwrap(), DATA);

            let mut b = in_state(&mm, start);
            #[allow(deprecated)]
            b.compact().unwrap();
            assert_eq!(b.state(), HostOnly, "{name}: compact from {start:?}");
        }
    }
}

#[test]
fn last_transfer_is_also_readable_as_the_deprecated_last_access() {
    let mm = MemoryManager::with_backend(SimBackend::new(SimOptions::default()), quiet()).unwrap();
    let mut b = mm.allocate_from(&DATA).unwrap();
    assert_eq!(b.metrics().last_transfer, None, "no transfer yet");
    b.ensure_on_device().unwrap();
    let m = b.metrics();
    assert!(m.last_transfer.is_some());
    #[allow(deprecated)]
    let old = m.last_access;
    assert_eq!(old, m.last_transfer);
}

#[test]
fn allocate_on_device_makes_both_parts_now() {
    for mm in managers() {
        let name = mm.backend().name();
        let mut b = mm.allocate_on_device::<u32>(DATA.len()).unwrap();
        assert_eq!(b.state(), Synchronized, "{name}: allocate_on_device");
        assert_eq!(b.len(), DATA.len());
        b.copy_from(&DATA).unwrap();
        assert_eq!(b.state(), HostDirty, "{name}: a host write after allocate_on_device");
        b.ensure_on_device().unwrap();
        assert_eq!(b.state(), Synchronized);
        assert_eq!(b.to_vec().unwrap(), DATA);

        let empty = mm.allocate_on_device::<u32>(0).unwrap();
        assert_eq!(empty.state(), Synchronized, "{name}: an empty buffer");
        drop((b, empty));
        assert_eq!(mm.statistics().active_allocations, 0);
    }
}

#[test]
fn allocate_on_device_takes_the_device_part_whose_upload_then_needs_no_memory() {
    // Room for one 1 MiB buffer (device pools fall back to exact-size segments on a small
    // device): the upload into the part made at allocation must not ask for a second block.
    let mm =
        MemoryManager::with_backend(SimBackend::new(SimOptions::default().with_capacity(1 << 20)), quiet()).unwrap();
    let mut b = mm.allocate_on_device::<u8>(1 << 20).unwrap();
    assert!(
        matches!(mm.allocate_on_device::<u8>(1 << 20), Err(Error::OutOfMemory { .. })),
        "the first buffer's device part is taken already"
    );
    b.fill(7).unwrap();
    b.ensure_on_device().unwrap();
    assert_eq!(b.state(), Synchronized);
    assert_eq!(b.to_vec().unwrap(), vec![7; 1 << 20]);
}

#[test]
fn allocate_on_device_reports_out_of_memory_at_allocation_and_leaks_nothing() {
    let options = quiet().with_track_allocations(true);
    let sim = SimBackend::new(SimOptions::default().with_capacity(1 << 20));
    let mm = MemoryManager::with_backend(sim, options).unwrap();

    // Lazily, the error comes at the first upload.
    let mut lazy = mm.allocate::<u8>(2 << 20).unwrap();
    assert!(matches!(lazy.ensure_on_device(), Err(Error::OutOfMemory { .. })));
    assert_eq!(lazy.state(), HostOnly, "a failed upload changes nothing");
    drop(lazy);
    let before = mm.statistics();

    let err = mm.allocate_on_device::<u8>(2 << 20).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { requested, .. } if requested == 2 << 20), "{err}");
    let after = mm.statistics();
    assert_eq!(after.active_allocations, 0);
    assert_eq!(after.active_bytes, 0);
    assert_eq!(after.buffers_allocated, before.buffers_allocated, "a failed allocation counts no buffer");
    assert_eq!(mm.diagnostics().live_count(), 0, "nor stays in the registry");

    // Nothing was kept: the whole device is still there.
    let fits = mm.allocate_on_device::<u8>(1 << 20).unwrap();
    assert_eq!(fits.state(), Synchronized);
}

#[test]
fn allocate_on_device_respects_the_device_memory_limit() {
    let options = quiet().with_device_memory_limit(Some(1 << 20));
    let mm = MemoryManager::with_backend(SimBackend::new(SimOptions::default()), options).unwrap();
    assert!(matches!(mm.allocate_on_device::<u8>(2 << 20), Err(Error::MemoryLimitExceeded { .. })));
    assert_eq!(mm.statistics().active_allocations, 0);
    let b = mm.allocate_on_device::<u8>(1 << 19).unwrap();
    assert_eq!(b.state(), Synchronized);
}
