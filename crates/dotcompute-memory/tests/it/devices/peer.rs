//! `copy_from_buffer` between buffers of different managers: the route each takes, the data, the
//! states, and what each manager counts.

use crate::support::managers::{cpu, quiet, sim_group};
use dotcompute_memory::BufferState::*;
use dotcompute_memory::*;
use std::sync::Arc;

const MIB: usize = 1 << 20;

fn words(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(seed)).collect()
}

#[test]
fn a_group_reports_labels_and_reachability() {
    let group = SimBackend::group(3, SimOptions::default().with_unreachable_peers(vec![(2, 0)]));
    let labels: Vec<String> = group.iter().map(|d| d.device_label()).collect();
    assert_eq!(labels, ["sim:0", "sim:1", "sim:2"]);
    assert_eq!(group[2].group_index(), Some(2));
    assert!(group[0].can_copy_from_peer(&group[1]) && group[1].can_copy_from_peer(&group[0]));
    assert!(group[1].can_copy_from_peer(&group[2]));
    assert!(
        !group[0].can_copy_from_peer(&group[2]) && !group[2].can_copy_from_peer(&group[0]),
        "(2, 0) works both ways"
    );
    assert!(!group[0].can_copy_from_peer(&group[0]), "a device is not its own peer");
    let alone = SimBackend::new(SimOptions::default());
    assert_eq!(alone.group_index(), None);
    assert!(!alone.can_copy_from_peer(&group[0]) && !group[0].can_copy_from_peer(&alone));
    assert!(!group[0].can_copy_from_peer(&CpuBackend::new()));
    let other_group = SimBackend::group(2, SimOptions::default());
    assert!(!other_group[0].can_copy_from_peer(&group[1]), "devices of two groups do not reach each other");
}

#[test]
fn a_direct_copy_between_reachable_devices_is_one_device_to_device_transfer() {
    let g = sim_group(2, SimOptions::default());
    let (d0, mm0) = &g[0];
    let (d1, mm1) = &g[1];
    let data = words(3000, 7);
    let mut src = mm0.allocate_from(&data).unwrap();
    src.ensure_on_device().unwrap();
    src.mark_device_dirty().unwrap();
    let src_epochs = src.epochs();
    let mut dst = mm1.allocate::<u32>(data.len()).unwrap();
    let (s0, s1) = (d0.submissions(), d1.submissions());
    dst.copy_from_buffer(&src).unwrap();
    // One peer copy, counted on both devices; no read from the source, no write to the
    // destination through host memory.
    assert_eq!((d0.submissions() - s0, d1.submissions() - s1), (1, 1));
    assert_eq!(dst.state(), DeviceDirty);
    assert_eq!((src.state(), src.epochs()), (DeviceDirty, src_epochs), "the source is unchanged");
    let stats = mm1.statistics();
    assert_eq!((stats.device_to_device.count, stats.device_to_device.bytes), (1, (data.len() * 4) as u64));
    assert_eq!(stats.host_to_device.count, 0);
    assert_eq!(mm0.statistics().device_to_host.count, 0, "the source's manager moved nothing");
    assert_eq!(dst.to_vec().unwrap(), data);
}

#[test]
fn a_copy_between_unreachable_devices_is_staged_in_chunks() {
    let g = sim_group(2, SimOptions::default().with_unreachable_peers(vec![(0, 1)]));
    let (d0, mm0) = &g[0];
    let (d1, mm1) = &g[1];
    // 16 MiB and 4 bytes: five 4 MiB staging chunks, the last one of 4 bytes.
    let data = words(4 * MIB + 1, 3);
    let mut src = mm0.allocate_from(&data).unwrap();
    src.mark_device_dirty().unwrap();
    let mut dst = mm1.allocate_from(&vec![9u32; data.len()]).unwrap();
    dst.ensure_on_device().unwrap();
    let (s0, s1) = (d0.submissions(), d1.submissions());
    dst.copy_from_buffer(&src).unwrap();
    assert_eq!((d0.submissions() - s0, d1.submissions() - s1), (5, 5), "one read and one write per chunk");
    assert_eq!(dst.state(), DeviceDirty);
    assert_eq!(src.state(), DeviceDirty);
    let stats = mm1.statistics();
    assert_eq!(stats.device_to_device.count, 1, "staged or not, one device-to-device transfer");
    assert_eq!(stats.host_to_device.count, 1, "only the destination's own earlier upload");
    assert_eq!(dst.to_vec().unwrap(), data);
}

#[test]
fn a_ranged_staged_copy_keeps_the_rest_of_the_destination() {
    let g = sim_group(2, SimOptions::default().with_unreachable_peers(vec![(0, 1)]));
    let (d0, mm0) = &g[0];
    let (d1, mm1) = &g[1];
    let data = words(2 * MIB, 5);
    let mut src = mm0.allocate_from(&data).unwrap();
    src.mark_device_dirty().unwrap();
    let mut dst = mm1.allocate_from(&vec![1u32; 3 * MIB]).unwrap();
    dst.mark_device_dirty().unwrap();
    let (s0, s1) = (d0.submissions(), d1.submissions());
    // 6 MiB from one part of the source into the middle of the destination: one staging
    // block, one read and one write, so a failure cannot leave half of it written.
    dst.slice_mut(MIB..3 * MIB).unwrap().copy_from_buffer(&src.slice(0..2 * MIB).unwrap()).unwrap();
    assert_eq!((d0.submissions() - s0, d1.submissions() - s1), (1, 1));
    let out = dst.to_vec().unwrap();
    assert!(out[..MIB].iter().all(|&x| x == 1));
    assert_eq!(&out[MIB..], &data[..]);
}

#[test]
fn a_source_current_on_its_host_is_uploaded_unless_its_device_is_reachable() {
    let data = words(1000, 1);
    for reachable in [true, false] {
        let unreachable = if reachable { vec![] } else { vec![(0, 1)] };
        let g = sim_group(2, SimOptions::default().with_unreachable_peers(unreachable));
        let (d0, mm0) = &g[0];
        let (_, mm1) = &g[1];
        for state in [HostOnly, HostDirty, Synchronized] {
            let at = format!("{state:?}, reachable {reachable}");
            let mut src = mm0.allocate_from(&data).unwrap();
            match state {
                HostDirty => {
                    src.ensure_on_device().unwrap();
                    src.as_mut_slice().unwrap();
                }
                Synchronized => src.ensure_on_device().unwrap(),
                _ => {}
            }
            assert_eq!(src.state(), state);
            let s0 = d0.submissions();
            let mut dst = mm1.allocate::<u32>(data.len()).unwrap();
            let before = mm1.statistics();
            dst.copy_from_buffer(&src).unwrap();
            let after = mm1.statistics();
            // Both parts of a synchronized source are current: a reachable device is read
            // directly (device to device); otherwise the host part is uploaded, never staged.
            let peer = reachable && state == Synchronized;
            assert_eq!(d0.submissions() - s0, u64::from(peer), "{at}: source device operations");
            let (h2d, d2d) = (
                after.host_to_device.count - before.host_to_device.count,
                after.device_to_device.count - before.device_to_device.count,
            );
            assert_eq!((h2d, d2d), if peer { (0, 1) } else { (1, 0) }, "{at}: (h2d, d2d)");
            assert_eq!(dst.to_vec().unwrap(), data, "{at}");
            assert_eq!(src.state(), state, "{at}");
        }
    }
}

#[test]
fn copies_between_cpu_and_simulated_devices() {
    let data = words(500, 11);
    let (host_a, host_b) = (cpu(), cpu());
    let g = sim_group(1, SimOptions::default());
    let (_, device) = &g[0];
    // cpu -> cpu: a plain copy of the one memory, counted device-to-device.
    let a = host_a.allocate_from(&data).unwrap();
    let mut b = host_b.allocate::<u32>(data.len()).unwrap();
    b.copy_from_buffer(&a).unwrap();
    assert_eq!(b.as_slice().unwrap(), &data[..]);
    assert_eq!(host_b.statistics().device_to_device.count, 1);
    // cpu -> device: an upload.
    let mut on_device = device.allocate::<u32>(data.len()).unwrap();
    on_device.copy_from_buffer(&b).unwrap();
    assert_eq!(on_device.state(), DeviceDirty);
    // device -> cpu: read straight into the cpu buffer's memory.
    let mut back = host_a.allocate::<u32>(data.len()).unwrap();
    back.copy_from_buffer(&on_device).unwrap();
    assert_eq!(back.as_slice().unwrap(), &data[..]);
    assert_eq!(on_device.state(), DeviceDirty, "the source stays as it was");
    assert_eq!(host_a.statistics().device_to_device.count, 1);
}

#[test]
fn managers_sharing_one_device_copy_on_it() {
    let device = Arc::new(SimBackend::new(SimOptions::default()));
    let mm0 = MemoryManager::with_shared_backend(device.clone(), quiet()).unwrap();
    let mm1 = MemoryManager::with_shared_backend(device.clone(), quiet()).unwrap();
    let data = words(100, 2);
    let mut src = mm0.allocate_from(&data).unwrap();
    src.mark_device_dirty().unwrap();
    let mut dst = mm1.allocate::<u32>(data.len()).unwrap();
    let s = device.submissions();
    dst.copy_from_buffer(&src).unwrap();
    assert_eq!(device.submissions() - s, 1, "one copy on the device");
    assert_eq!(dst.to_vec().unwrap(), data);
}

#[test]
fn buffers_outlive_their_managers_and_still_copy() {
    let g = sim_group(2, SimOptions::default());
    let data = words(64, 9);
    let mut src = g[0].1.allocate_from(&data).unwrap();
    src.mark_device_dirty().unwrap();
    let mut dst = g[1].1.allocate::<u32>(data.len()).unwrap();
    drop(g);
    // Each buffer keeps its device and its pool alive: the copy is as with live managers.
    dst.copy_from_buffer(&src).unwrap();
    assert_eq!(dst.to_vec().unwrap(), data);
}

#[test]
fn copies_in_both_directions_at_once_do_not_deadlock() {
    let g = sim_group(2, SimOptions::default());
    let (a, b) = (g[0].1.clone(), g[1].1.clone());
    let threads: Vec<_> = [(a.clone(), b.clone()), (b, a)]
        .into_iter()
        .map(|(from, to)| {
            std::thread::spawn(move || {
                let data = words(4096, 4);
                let mut src = from.allocate_from(&data).unwrap();
                src.mark_device_dirty().unwrap();
                let mut dst = to.allocate::<u32>(data.len()).unwrap();
                for _ in 0..200 {
                    dst.copy_from_buffer(&src).unwrap();
                    src.copy_from_buffer(&dst).unwrap();
                }
                assert_eq!(dst.to_vec().unwrap(), data);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn open_devices_lists_every_device_of_a_backend_and_which_reach_each_other() {
    let sim = backend::open_devices("sim").unwrap();
    let labels: Vec<String> = sim.iter().map(|d| d.device_label()).collect();
    assert_eq!(labels, ["sim:0", "sim:1"]);
    assert_eq!(backend::peer_matrix(&sim), [[true, true], [true, true]]);
    let cpu = backend::open_devices("cpu").unwrap();
    assert_eq!(cpu.len(), 1);
    assert_eq!(backend::peer_matrix(&cpu), [[true]]);
    let mixed = [sim[0].clone(), cpu[0].clone()];
    assert_eq!(backend::peer_matrix(&mixed), [[true, false], [false, true]]);
    let err = backend::open_devices("tpu").err().expect("an unknown name");
    assert!(matches!(err, Error::UnknownBackend { ref name, .. } if name == "tpu"), "{err:?}");
}
