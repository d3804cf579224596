//! Copies between devices that fail: a fault on either device, on any chunk of a staged copy, or a
//! lost device. Each is its own error, and the destination keeps its contents and state.

use crate::support::managers::sim_group;
use dotcompute_memory::BufferState::*;
use dotcompute_memory::*;

const MIB: usize = 1 << 20;

/// A destination in `DeviceDirty` holding `7`s, and a source holding `0..n` current on its
/// device, on devices 0 (source) and 1 (destination) of `group`.
fn pair(group: &[(std::sync::Arc<SimBackend>, MemoryManager)], n: usize) -> (UnifiedBuffer<u32>, UnifiedBuffer<u32>) {
    let mut src = group[0].1.allocate_from(&(0..n as u32).collect::<Vec<_>>()).unwrap();
    src.mark_device_dirty().unwrap();
    let mut dst = group[1].1.allocate_from(&vec![7u32; n]).unwrap();
    dst.mark_device_dirty().unwrap();
    (src, dst)
}

fn assert_unchanged(dst: &UnifiedBuffer<u32>, epochs: (u64, u64), at: &str) {
    assert_eq!((dst.state(), dst.epochs()), (DeviceDirty, epochs), "{at}: state");
    assert!(dst.to_vec().unwrap().iter().all(|&x| x == 7), "{at}: contents");
}

#[test]
fn a_fault_on_either_device_fails_a_direct_copy_and_changes_nothing() {
    for (faulty, name) in [(0, "source"), (1, "destination")] {
        let g = sim_group(2, SimOptions::default());
        let (src, mut dst) = pair(&g, 1000);
        let epochs = dst.epochs();
        g[faulty].0.fail_operation_after(1);
        let err = dst.copy_from_buffer(&src).unwrap_err();
        assert!(
            matches!(err, Error::Backend { backend: "sim", operation: "copy_from_peer", transient: false, .. }),
            "{name}: {err:?}"
        );
        assert_unchanged(&dst, epochs, name);
        assert_eq!(src.state(), DeviceDirty);
        dst.copy_from_buffer(&src).unwrap();
        assert_eq!(dst.to_vec().unwrap(), (0..1000).collect::<Vec<u32>>(), "{name}: a retry works");
    }
}

#[test]
fn a_fault_on_any_chunk_of_a_staged_copy_changes_nothing() {
    // Four chunks of 4 MiB: the source reads each, the destination writes each. Fail every
    // one of those eight operations in turn.
    for (faulty, step) in (1..=4).flat_map(|k| [(0, k), (1, k)]) {
        let at = format!("device {faulty}, its chunk operation {step}");
        let g = sim_group(2, SimOptions::default().with_unreachable_peers(vec![(0, 1)]));
        let (src, mut dst) = pair(&g, 4 * MIB);
        let epochs = dst.epochs();
        // The destination's first counted operation is the fresh block's allocation.
        let n = if faulty == 1 { step + 1 } else { step };
        g[faulty].0.fail_operation_after(n);
        let err = dst.copy_from_buffer(&src).unwrap_err();
        assert!(matches!(err, Error::Backend { backend: "sim", transient: false, .. }), "{at}: {err:?}");
        assert_unchanged(&dst, epochs, &at);
        assert_eq!(src.to_vec().unwrap(), (0..4 * MIB as u32).collect::<Vec<_>>(), "{at}: source");
    }
}

#[test]
fn a_lost_source_device_is_named_and_changes_nothing() {
    for reachable in [true, false] {
        let unreachable = if reachable { vec![] } else { vec![(0, 1)] };
        let g = sim_group(2, SimOptions::default().with_unreachable_peers(unreachable));
        let (src, mut dst) = pair(&g, 2048);
        let epochs = dst.epochs();
        g[0].0.lose_device();
        let err = dst.copy_from_buffer(&src).unwrap_err();
        match &err {
            Error::DeviceLost { backend: "sim", device, .. } => assert_eq!(device, "sim:0"),
            other => panic!("reachable {reachable}: expected DeviceLost, got {other:?}"),
        }
        assert!(err.to_string().contains("sim device sim:0 was lost"), "{err}");
        assert!(!err.is_transient());
        assert_unchanged(&dst, epochs, &format!("reachable {reachable}"));
    }
}

#[test]
fn a_lost_destination_device_leaves_its_host_part_as_it_was() {
    let g = sim_group(2, SimOptions::default());
    let mut src = g[0].1.allocate_from(&[1u32; 256]).unwrap();
    src.mark_device_dirty().unwrap();
    let mut dst = g[1].1.allocate_from(&[7u32; 256]).unwrap();
    let epochs = dst.epochs();
    g[1].0.lose_device();
    let err = dst.copy_from_buffer(&src).unwrap_err();
    assert!(matches!(&err, Error::DeviceLost { device, .. } if device == "sim:1"), "{err:?}");
    assert_eq!((dst.state(), dst.epochs()), (HostOnly, epochs));
    assert_eq!(dst.as_slice().unwrap(), &[7u32; 256][..]);
}
