//! Peer copies in a transfer batch: each report line names its two devices and route, and the
//! report gives the bandwidth per pair.

use crate::support::managers::sim_group;
use dotcompute_memory::*;

#[test]
fn a_batch_of_peer_copies_reports_bandwidth_per_pair_and_route() {
    // Device 1 receives from device 0 (reachable) and from device 2 (unreachable: staged).
    let g = sim_group(3, SimOptions::default().with_unreachable_peers(vec![(1, 2)]));
    let data: Vec<u32> = (0..10_000).collect();
    let mut from0 = g[0].1.allocate_from(&data).unwrap();
    from0.mark_device_dirty().unwrap();
    let mut from2 = g[2].1.allocate_from(&data).unwrap();
    from2.mark_device_dirty().unwrap();
    let host_current = g[0].1.allocate_from(&data).unwrap();
    let mut dsts: Vec<UnifiedBuffer<u32>> = (0..4).map(|_| g[1].1.allocate(data.len()).unwrap()).collect();
    let mut batch = TransferBatch::new();
    let [a, b, c, d] = &mut dsts[..] else { unreachable!() };
    batch.copy(&from0, a).unwrap();
    batch.copy(&from2, b).unwrap();
    batch.copy(&from0, c).unwrap();
    batch.copy(&host_current, d).unwrap();
    let report = g[1].1.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.is_success(), "{report:?}");
    let peer = |i: usize| report.transfers[i].peer.clone();
    let direct = PeerCopy { source: "sim:0".into(), destination: "sim:1".into(), direct: true };
    let staged = PeerCopy { source: "sim:2".into(), destination: "sim:1".into(), direct: false };
    assert_eq!(peer(0), Some(direct.clone()));
    assert_eq!(peer(1), Some(staged.clone()));
    assert_eq!(peer(2), Some(direct.clone()));
    assert_eq!(peer(3), None, "a source current on its host is an upload, not a peer copy");
    let pairs: Vec<(&PeerCopy, usize, u64)> =
        report.peer_bandwidth.iter().map(|p| (&p.pair, p.copies, p.bytes)).collect();
    assert_eq!(pairs, [(&direct, 2, 80_000), (&staged, 1, 40_000)]);
    assert!(report.peer_bandwidth.iter().all(|p| p.bandwidth > 0.0 && p.seconds > 0.0));
    assert!(report.device_to_device_bandwidth > 0.0);
    for d in &dsts {
        assert_eq!(d.to_vec().unwrap(), data);
    }
    // The report survives a JSON round trip with its peer lines.
    let json = serde_json::to_string(&report).unwrap();
    let back: TransferReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.peer_bandwidth.len(), 2);
    assert_eq!(back.transfers[1].peer, Some(staged));
}

#[test]
fn a_failed_peer_copy_in_a_batch_fails_alone() {
    let g = sim_group(2, SimOptions::default());
    let data = vec![3u32; 512];
    let mut src = g[0].1.allocate_from(&data).unwrap();
    src.mark_device_dirty().unwrap();
    let mut ok = g[1].1.allocate::<u32>(512).unwrap();
    let mut lost_src_dst = g[1].1.allocate_from(&[7u32; 512]).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut ok).unwrap();
    batch.copy(&src, &mut lost_src_dst).unwrap();
    g[0].0.lose_device();
    let report = g[1].1.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert_eq!(report.failed, 1);
    let err = report.transfers[1].error.as_ref().and_then(|e| e.error()).unwrap();
    assert!(matches!(err, Error::DeviceLost { device, .. } if device == "sim:0"), "{err:?}");
    assert!(report.peer_bandwidth.is_empty(), "only successful copies count");
    assert_eq!(ok.to_vec().unwrap(), data);
    assert_eq!(lost_src_dst.as_slice().unwrap(), &[7u32; 512][..]);
}
