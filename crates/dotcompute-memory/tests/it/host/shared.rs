//! Named cross-process buffers: a child process opens a buffer by name, writes, exits, and the
//! parent sees the data; one handle per segment and process, creation mode and exclusivity,
//! persisted, unlinked and stale segments. Their bad inputs are in `bad_input::shared_memory`.
#![cfg(unix)]

use crate::support::child::{self, test_name};
use dotcompute_memory::*;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A name no other test (or parallel run of this binary) uses.
fn unique(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("dcmem-test-{}-{tag}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn shm_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/dev/shm").join(name)
}

const CHILD_ENV: &str = "DCMEM_SHARED_CHILD";

/// Parent: creates the buffer and re-runs this test binary, filtered to this test, with
/// CHILD_ENV naming the buffer. Child (same test, env set): opens it, writes, exits.
#[test]
fn a_child_process_writes_and_the_parent_sees_it() {
    let mm = MemoryManager::cpu();
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let mut buf = mm.open_shared::<u32>(&name).expect("child opens the parent's buffer");
        assert!(!buf.is_creator());
        // One handle per process: the child's second open is refused, the parent's was not.
        assert!(matches!(mm.open_shared::<u32>(&name), Err(Error::SharedAlreadyOpen { .. })));
        assert_eq!(buf[0], 0xC0FFEE, "the child sees what the parent wrote");
        for (i, x) in buf.iter_mut().enumerate().skip(1) {
            *x = i as u32 * 3;
        }
        // The child's handle drops here; it is not the creator, so the name stays.
        return;
    }
    let name = unique("child");
    let mut buf = mm.allocate_shared::<u32>(&name, 1000).unwrap();
    assert!(buf.is_creator());
    assert_eq!(buf.creator_pid(), std::process::id());
    buf[0] = 0xC0FFEE;
    let test = test_name!(a_child_process_writes_and_the_parent_sees_it);
    child::check(test, &child::command(test).env(CHILD_ENV, &name).output().unwrap());
    assert_eq!(buf[0], 0xC0FFEE);
    assert!(buf.iter().enumerate().skip(1).all(|(i, &x)| x == i as u32 * 3), "parent sees the child's writes");
    assert!(shm_path(&name).exists(), "the name lives until the creator drops");
    drop(buf);
    assert!(!shm_path(&name).exists(), "the creator's drop removes the name");
}

#[test]
fn created_with_mode_0600_and_exclusively() {
    use std::os::unix::fs::PermissionsExt;
    let mm = MemoryManager::cpu();
    let name = unique("mode");
    let a = mm.allocate_shared::<f64>(&name, 10).unwrap();
    let mode = std::fs::metadata(shm_path(&name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let err = mm.allocate_shared::<f64>(&name, 10).unwrap_err();
    match &err {
        Error::SharedExists { name: n, creator_pid } => {
            assert_eq!(n, &name);
            assert_eq!(*creator_pid, Some(std::process::id()));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(a.iter().all(|&x| x == 0.0), "the failed create left the first buffer alone");
}

#[test]
fn a_segment_open_in_this_process_cannot_be_opened_again() {
    let mm = MemoryManager::cpu();
    let name = unique("twice");
    let before = mm.statistics().active_allocations;
    let mut creator = mm.allocate_shared::<i64>(&name, 16).unwrap();
    match mm.open_shared::<i64>(&name).unwrap_err() {
        Error::SharedAlreadyOpen { name: n } => assert_eq!(n, name),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(mm.statistics().active_allocations, before + 1, "the refused open counts nothing");
    creator[5] = -5;
    assert_eq!(creator[5], -5);
    drop(creator);
    assert!(!shm_path(&name).exists(), "the creator's drop removes the name");
    assert!(matches!(mm.open_shared::<i64>(&name), Err(Error::SharedNotFound { .. })));
    assert_eq!(mm.statistics().active_allocations, before);
}

#[test]
fn a_persisted_segment_is_opened_once_at_a_time_until_removed() {
    let mm = MemoryManager::cpu();
    let name = unique("persist");
    let mut creator = mm.allocate_shared::<i64>(&name, 16).unwrap();
    creator[5] = -5;
    creator.persist();
    assert!(shm_path(&name).exists(), "persist keeps the name");
    let opened = mm.open_shared::<i64>(&name).unwrap();
    assert!(!opened.is_creator());
    assert_eq!((opened.len(), opened[5]), (16, -5));
    assert!(matches!(mm.open_shared::<i64>(&name), Err(Error::SharedAlreadyOpen { .. })));
    drop(opened);
    assert!(shm_path(&name).exists(), "an opened handle's drop keeps the name");
    let mut again = mm.open_shared::<i64>(&name).unwrap();
    again[5] = 6;
    drop(again);
    SharedBuffer::remove(&name).unwrap();
    assert!(matches!(mm.open_shared::<i64>(&name), Err(Error::SharedNotFound { .. })));
}

/// Opens racing on one segment from several threads: exactly one gets a handle.
#[test]
fn concurrent_opens_give_one_handle() {
    let name = unique("race");
    MemoryManager::cpu().allocate_shared::<u8>(&name, 64).unwrap().persist();
    let threads = 8;
    let (opened, held) = (std::sync::Barrier::new(threads), std::sync::Barrier::new(threads));
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mm = MemoryManager::cpu();
                    opened.wait();
                    let handle = mm.open_shared::<u8>(&name);
                    held.wait(); // every open has been tried before any handle drops
                    handle.map(drop)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    SharedBuffer::remove(&name).unwrap();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(()) | Err(Error::SharedAlreadyOpen { .. }))), "{results:?}");
}

#[test]
fn explicit_unlink_and_recreate() {
    let mm = MemoryManager::cpu();
    let name = unique("unlink");
    let mut old = mm.allocate_shared::<u8>(&name, 8).unwrap();
    old.unlink().unwrap();
    assert!(!shm_path(&name).exists());
    old[0] = 1; // the mapping is still valid
    let new = mm.allocate_shared::<u8>(&name, 8).unwrap();
    assert_eq!(new[0], 0, "a fresh segment, not the old one");
    drop(old); // must not remove the new segment's name
    assert!(shm_path(&name).exists());
    drop(new);
    assert!(!shm_path(&name).exists());
}

#[test]
fn stale_segments_of_dead_creators_can_be_removed() {
    let name = unique("stale");
    // A segment whose creator "crashed": pid of a child that has exited.
    let dead_pid = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let header = SharedHeader::for_type::<u8>(10, dead_pid).unwrap();
    let mut bytes = header.encode().to_vec();
    bytes.resize(header.segment_size() as usize, 0);
    std::fs::write(shm_path(&name), &bytes).unwrap();

    let mm = MemoryManager::cpu();
    match mm.allocate_shared::<u8>(&name, 10).unwrap_err() {
        Error::SharedExists { creator_pid, .. } => assert_eq!(creator_pid, Some(dead_pid)),
        other => panic!("unexpected {other:?}"),
    }
    // A live creator's segment is kept.
    let live = unique("live");
    let live_buf = mm.allocate_shared::<u8>(&live, 1).unwrap();
    assert!(!SharedBuffer::remove_stale(&live).unwrap());
    drop(live_buf);

    assert!(SharedBuffer::remove_stale(&name).unwrap());
    assert!(!shm_path(&name).exists());
    let fresh = mm.allocate_shared::<u8>(&name, 10).unwrap();
    assert!(matches!(SharedBuffer::remove(&unique("gone")), Err(Error::SharedNotFound { .. })));
    SharedBuffer::remove(&name).unwrap();
    drop(fresh);
}

#[test]
fn empty_shared_buffers_work() {
    let mm = MemoryManager::cpu();
    let name = unique("empty");
    let a = mm.allocate_shared::<u128>(&name, 0).unwrap();
    assert!(a.is_empty());
    a.persist();
    let b = mm.open_shared::<u128>(&name).unwrap();
    assert!(b.is_empty());
    assert_eq!(b.header().data_offset, 64);
    drop(b);
    SharedBuffer::remove(&name).unwrap();
}
