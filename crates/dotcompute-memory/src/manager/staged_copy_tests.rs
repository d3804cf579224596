//! The staged copy between devices that cannot reach each other, end to end through buffers of two
//! managers: every chunk through the ring, a ranged copy through one block, and a failure on a
//! later chunk. Sized in chunks, so it runs under Miri too (4 KiB chunks there).

use super::{ManagerOptions, MemoryManager};
use crate::backend::sim::{SimBackend, SimOptions};
use crate::buffer::raw::PEER_CHUNK;
use crate::buffer::state::BufferState;
use crate::error::Error;
use std::sync::Arc;

fn unreachable_pair() -> (Arc<SimBackend>, MemoryManager, MemoryManager) {
    let mut devices = SimBackend::group(2, SimOptions::default().with_unreachable_peers(vec![(0, 1)]));
    let (one, zero) = (Arc::new(devices.pop().unwrap()), devices.pop().unwrap());
    let options = ManagerOptions::default().with_maintenance_interval(None);
    let mm0 = MemoryManager::with_backend(zero, options.clone()).unwrap();
    let mm1 = MemoryManager::with_shared_backend(one.clone(), options).unwrap();
    (one, mm0, mm1)
}

#[test]
fn a_staged_copy_moves_every_chunk_through_the_ring_and_a_failure_changes_nothing() {
    let (device1, mm0, mm1) = unreachable_pair();
    // Six chunks and a bit: the ring of four blocks wraps around.
    let n = PEER_CHUNK * 6 + 3;
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let mut src = mm0.allocate_from(&data).unwrap();
    src.mark_device_dirty().unwrap();
    let mut dst = mm1.allocate_from(&vec![7u8; n]).unwrap();
    dst.mark_device_dirty().unwrap();
    let epochs = dst.epochs();

    // The destination's operations: allocating the fresh block, then one write per chunk; fail
    // the fifth write.
    device1.fail_operation_after(6);
    let err = dst.copy_from_buffer(&src).unwrap_err();
    assert!(matches!(err, Error::Backend { backend: "sim", .. }), "{err:?}");
    assert_eq!((dst.state(), dst.epochs()), (BufferState::DeviceDirty, epochs));
    assert!(dst.to_vec().unwrap().iter().all(|&b| b == 7), "the failed copy changed nothing");

    dst.copy_from_buffer(&src).unwrap();
    assert_eq!(dst.to_vec().unwrap(), data);
    assert_eq!(src.state(), BufferState::DeviceDirty);

    // A range through one block.
    dst.slice_mut(1..n).unwrap().copy_from_buffer(&src.slice(0..n - 1).unwrap()).unwrap();
    let mut want = data.clone();
    want.copy_within(0..n - 1, 1);
    assert_eq!(dst.to_vec().unwrap(), want);
}
