//! Prefetching (`prefetch_to_device`, `prefetch_to_host`): the transfer is in flight when the call
//! returns, the next access completes it instead of transferring again, and a prefetch that fails
//! is a hint that changes nothing; on sim with latency the upload overlaps host work. Allocation
//! hints (`allocate_for`).

use crate::support::managers::quiet;
use dotcompute_memory::BufferState::*;
use dotcompute_memory::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn held_sim(options: SimOptions) -> (Arc<SimBackend>, MemoryManager) {
    let sim = Arc::new(SimBackend::new(options));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    (sim, mm)
}

#[test]
fn a_prefetch_returns_with_the_upload_in_flight_and_the_next_access_completes_it() {
    let (sim, mm) = held_sim(SimOptions::default());
    let data: Vec<u32> = (0..10_000).collect();
    let mut b = mm.allocate_from(&data).unwrap();
    let hold = sim.hold_completions();
    b.prefetch_to_device().unwrap();
    // The call returned while the sim holds the upload's completion back: it did not wait.
    // (Every accessor, `state()` included, would wait for it now.)
    assert_eq!(sim.submissions(), 1, "the upload was enqueued");
    drop(hold);
    b.ensure_on_device().unwrap();
    assert_eq!(b.state(), Synchronized);
    assert_eq!(sim.submissions(), 1, "the access waited for the prefetch instead of uploading again");
    let m = b.metrics();
    assert_eq!((m.host_to_device, m.device_to_host), (1, 0));
    assert_eq!(b.to_vec().unwrap(), data);
    // Nothing to do once the device part is current.
    b.prefetch_to_device().unwrap();
    assert_eq!(sim.submissions(), 1);
}

#[test]
fn a_prefetch_to_the_host_is_read_by_the_next_host_access() {
    let (sim, mm) = held_sim(SimOptions::default());
    let data: Vec<f64> = (0..4096).map(f64::from).collect();
    let mut b = mm.allocate_from(&data).unwrap();
    b.mark_device_dirty().unwrap();
    let before = sim.submissions();
    b.prefetch_to_host().unwrap();
    assert_eq!(sim.submissions(), before + 1);
    assert_eq!(b.as_slice().unwrap(), &data[..]);
    assert_eq!(b.state(), Synchronized);
    assert_eq!(sim.submissions(), before + 1, "no second download");
    // A device-only buffer gets its host part from the prefetch.
    let mut d = mm.allocate_for::<f64>(4096, AccessHint::Device).unwrap();
    d.copy_from_buffer(&b).unwrap();
    d.prefetch_to_host().unwrap();
    assert_eq!(d.as_slice().unwrap(), &data[..]);
}

#[test]
fn a_prefetch_that_fails_when_it_completes_changes_nothing_and_is_not_reported_by_the_next_access() {
    let faults = FaultPlan::default().with_on_completion(true).with_transient(false);
    let (sim, mm) = held_sim(SimOptions::default().with_faults(faults));
    let mut b = mm.allocate_from(&[3u8; 1000]).unwrap();
    let epochs = b.epochs();
    // Operation 1 is the device block's allocation, 2 the upload.
    sim.fail_operation_after(2);
    b.prefetch_to_device().unwrap();
    // The access finds the failed prefetch, puts nothing in place, and uploads itself.
    b.ensure_on_device().unwrap();
    assert_eq!(b.state(), Synchronized);
    assert_ne!(b.epochs(), epochs);
    assert_eq!(b.metrics().host_to_device, 1, "only the access's own upload counts");
    assert_eq!(b.to_vec().unwrap(), vec![3u8; 1000]);
}

#[test]
fn a_prefetch_that_cannot_start_is_an_error_that_changes_nothing() {
    let (sim, mm) = held_sim(SimOptions::default());
    let mut b = mm.allocate_from(&[5u16; 300]).unwrap();
    let (state, epochs) = (b.state(), b.epochs());
    // Operation 1 is the device block's allocation, 2 the upload.
    sim.fail_operation_after(2);
    let err = b.prefetch_to_device().unwrap_err();
    assert!(matches!(err, Error::Backend { backend: "sim", operation: "write_async", .. }), "{err:?}");
    assert_eq!((b.state(), b.epochs()), (state, epochs));
    assert_eq!(b.as_slice().unwrap(), &[5u16; 300][..]);
}

#[test]
fn prefetching_on_unified_memory_moves_nothing() {
    let mm = MemoryManager::cpu();
    let mut b = mm.allocate_from(&[1i32; 64]).unwrap();
    b.prefetch_to_device().unwrap();
    b.prefetch_to_host().unwrap();
    assert_eq!(b.as_slice().unwrap(), &[1i32; 64][..]);
    let s = mm.statistics();
    assert_eq!((s.host_to_device.bytes, s.device_to_host.bytes), (0, 0));
}

#[test]
fn allocation_hints_place_the_parts() {
    let (_, mm) = held_sim(SimOptions::default());
    let host = mm.allocate_for::<u32>(1000, AccessHint::Host).unwrap();
    let device = mm.allocate_for::<u32>(1000, AccessHint::Device).unwrap();
    let both = mm.allocate_for::<u32>(1000, AccessHint::HostAndDevice).unwrap();
    assert_eq!((host.state(), device.state(), both.state()), (HostOnly, DeviceOnly, Synchronized));
    assert_eq!(AccessHint::default(), AccessHint::Host);
    let s = mm.memory_snapshot();
    assert!(s.device_reserved_bytes > 0, "the device and both-parts buffers took device memory");
    let err = mm.allocate_for::<u64>(usize::MAX, AccessHint::Device).unwrap_err();
    assert!(matches!(err, Error::LengthOverflow { len: usize::MAX, element_size: 8, .. }), "{err:?}");
}

/// On sim with a 200 ms transfer, host work as long as the transfer hides a prefetched upload:
/// the access after it finds the upload done, where without the prefetch it waits the whole
/// transfer. (The upload is due 200 ms after the prefetch, before the work ends; the bounds
/// are half the latency, far from the expected 0 and 200 ms.)
#[test]
fn a_prefetched_upload_overlaps_host_work_on_sim_with_latency() {
    let latency = Duration::from_millis(200);
    let mm = MemoryManager::sim(SimOptions::default().with_latency(latency));
    let data: Vec<u32> = (0..1024).collect();
    let host_work = || std::thread::sleep(latency);
    let waited = |b: &mut UnifiedBuffer<u32>| {
        let started = Instant::now();
        b.ensure_on_device().unwrap();
        started.elapsed()
    };

    let mut sequential = mm.allocate_from(&data).unwrap();
    host_work();
    let sequential_wait = waited(&mut sequential);

    let mut prefetched = mm.allocate_from(&data).unwrap();
    let started = Instant::now();
    prefetched.prefetch_to_device().unwrap();
    let call = started.elapsed();
    host_work();
    let overlapped_wait = waited(&mut prefetched);

    assert!(sequential_wait >= latency, "without a prefetch the access waits the transfer: {sequential_wait:?}");
    assert!(call < latency / 2, "the prefetch returned at once: {call:?}");
    assert!(overlapped_wait < latency / 2, "the upload ran during the host work: {overlapped_wait:?}");
    assert_eq!(prefetched.to_vec().unwrap(), data);
}
