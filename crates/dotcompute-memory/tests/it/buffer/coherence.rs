//! The coherence table (docs/ARCHITECTURE.md), walked on the simulated discrete device and on the CPU, with
//! its copies, statistics and edge cases (empty views, zero-sized elements, coalesced free space).

use dotcompute_memory::*;
use BufferState::*;

#[test]
fn sim_walks_the_table_with_the_right_copies() {
    let mm = MemoryManager::sim(SimOptions::default());
    let mut b = mm.allocate::<u32>(8).unwrap();
    assert_eq!(b.state(), HostOnly);
    b.copy_from(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    assert_eq!(b.state(), HostOnly);
    b.ensure_on_device().unwrap();
    assert_eq!(b.state(), Synchronized);
    assert_eq!(b.metrics().host_to_device, 1);
    b.synchronize().unwrap();
    assert_eq!(b.metrics().transfer_count, 1, "synchronize on Synchronized copies nothing");
    b.as_mut_slice().unwrap()[0] = 10;
    assert_eq!(b.state(), HostDirty);
    assert!(matches!(b.mark_device_dirty(), Err(Error::ConcurrentModification { .. })));
    assert_eq!(b.state(), HostDirty, "a conflict changes nothing");
    b.synchronize().unwrap();
    assert_eq!(b.metrics().host_to_device, 2);
    b.mark_device_dirty().unwrap();
    assert_eq!(b.state(), DeviceDirty);
    assert_eq!(b.as_slice().unwrap()[0], 10);
    assert_eq!(b.state(), Synchronized);
    assert_eq!(b.metrics().device_to_host, 1);
    b.release_device_part().unwrap();
    assert_eq!(b.state(), HostOnly);
    assert_eq!(b.to_vec().unwrap(), vec![10, 2, 3, 4, 5, 6, 7, 8]);
}

#[test]
fn device_copies_and_device_only() {
    let mm = MemoryManager::sim(SimOptions::default());
    let src = mm.allocate_from(&[1u8, 2, 3, 4]).unwrap();
    let mut dst = mm.allocate::<u8>(4).unwrap();
    dst.copy_from_buffer(&src).unwrap();
    assert_eq!(dst.state(), DeviceDirty);
    let mut out = [0u8; 4];
    dst.copy_to(&mut out).unwrap();
    assert_eq!(out, [1, 2, 3, 4]);
    assert_eq!(dst.state(), DeviceDirty, "copy_to reads the current side without changing state");
    dst.slice_mut(1..3).unwrap().copy_from_buffer(&src.slice(2..4).unwrap()).unwrap();
    assert_eq!(dst.to_vec().unwrap(), vec![1, 3, 4, 4]);
    let other = MemoryManager::sim(SimOptions::default());
    let foreign = other.allocate::<u8>(3).unwrap();
    assert!(matches!(dst.copy_from_buffer(&foreign), Err(Error::LengthMismatch { expected: 4, actual: 3, .. })));
    assert_eq!(dst.to_vec().unwrap(), vec![1, 3, 4, 4]);
}

#[test]
fn cpu_tracks_states_without_copies() {
    let mm = MemoryManager::cpu();
    let mut b = mm.allocate_from(&[1.0f64, 2.0]).unwrap();
    b.ensure_on_device().unwrap();
    assert_eq!(b.state(), Synchronized);
    b.mark_device_dirty().unwrap();
    assert_eq!(b.state(), DeviceDirty);
    assert_eq!(b.as_slice().unwrap(), &[1.0, 2.0]);
    assert_eq!(b.state(), Synchronized);
    let m = b.metrics();
    assert_eq!(m.host_to_device + m.device_to_host, 0);
    assert!(m.skipped_syncs >= 2);
}

#[test]
fn async_round_trip_with_latency() {
    let mm = MemoryManager::sim(SimOptions::default().with_latency(std::time::Duration::from_millis(5)));
    let mut b = mm.allocate::<i32>(100).unwrap();
    let data: Vec<i32> = (0..100).collect();
    pollster::block_on(b.copy_from_async(&data)).unwrap();
    assert_eq!(b.state(), Synchronized);
    b.mark_device_dirty().unwrap();
    let mut out = vec![0; 100];
    pollster::block_on(b.copy_to_async(&mut out)).unwrap();
    assert_eq!(out, data);
    assert_eq!(b.state(), Synchronized);
}

#[test]
fn statistics_balance() {
    let mm = MemoryManager::sim(SimOptions::default());
    for _ in 0..10 {
        let mut b = mm.allocate::<u8>(1000).unwrap();
        b.ensure_on_device().unwrap();
    }
    let s = mm.statistics();
    assert_eq!(s.buffers_allocated, 10);
    assert_eq!(s.active_allocations, 0);
    assert_eq!(s.total_bytes_allocated, 10_000);
    assert_eq!(s.total_bytes_freed, 10_000);
    assert_eq!(s.backend_allocations, 2, "one host and one device block, reused 9 times");
    assert_eq!(s.pool_hits, 18);
    assert_eq!(s.host_to_device.count, 10);
    assert!(mm.trim_excess().unwrap() > 0);
    assert_eq!(mm.statistics().cached_bytes, 0);
}

#[test]
fn upload_is_one_copy_and_checks_lengths() {
    let mm = MemoryManager::sim(SimOptions::default());
    let mut b = mm.allocate_from(&[1u16, 2, 3]).unwrap();
    let err = b.upload(&[9, 9]).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { operation: "upload", expected: 3, actual: 2 }), "{err}");
    assert_eq!((b.state(), b.to_vec().unwrap()), (HostOnly, vec![1, 2, 3]));
    b.upload(&[7, 8, 9]).unwrap();
    assert_eq!(b.state(), DeviceDirty);
    assert_eq!(b.metrics().host_to_device, 1);
    assert_eq!(b.to_vec().unwrap(), vec![7, 8, 9]);
    // A failed upload leaves the device data it would have replaced.
    let faulty = MemoryManager::sim(
        SimOptions::default().with_faults(FaultPlan::default().with_fail_nth(Some(3)).with_transient(false)),
    );
    let mut c = faulty.allocate::<u16>(3).unwrap();
    c.upload(&[4, 5, 6]).unwrap(); // ops 1 (alloc) and 2 (write)
    assert!(c.upload(&[0, 0, 0]).is_err()); // op 3: the allocation of the new block fails
    assert_eq!((c.state(), c.to_vec().unwrap()), (DeviceDirty, vec![4, 5, 6]));
}

/// A zero-sized element type is refused at allocation, not a panic later.
#[test]
fn zero_sized_element_types_are_refused() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Nothing;
    impl Element for Nothing {
        const TYPE_TAG: TypeTag = TypeTag { id: 4242, name: "Nothing" };
    }
    let mm = MemoryManager::sim(SimOptions::default());
    assert!(matches!(mm.allocate::<Nothing>(5), Err(Error::InvalidArgument { .. })));
}

#[test]
fn an_empty_view_of_a_device_only_buffer_copies_into_an_empty_buffer() {
    let mm = MemoryManager::sim(SimOptions::default());
    let src = mm.allocate_device::<u32>(8).unwrap();
    let mut dst = mm.allocate::<u32>(0).unwrap();
    dst.copy_from_buffer(&src.slice(4..4).unwrap()).unwrap();
}

/// Out of memory is not reported while a coalesced free block fits (on a 2 MiB device).
#[test]
fn a_request_that_fits_coalesced_free_blocks_is_not_out_of_memory() {
    let small = MemoryManager::sim(SimOptions::default().with_capacity(2 << 20));
    let keep = small.allocate_device::<u8>(512 << 10).unwrap();
    {
        let a = small.allocate_device::<u8>(512 << 10).unwrap();
        let b = small.allocate_device::<u8>(1 << 20);
        drop((a, b));
    }
    let big = small.allocate_device::<u8>(1536 << 10);
    assert!(big.is_ok(), "{:?}", big.err());
    drop(keep);
}
