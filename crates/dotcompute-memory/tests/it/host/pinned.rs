//! Pinned host memory: locking works within the limit, the pool reuses locked buffers, and
//! hitting RLIMIT_MEMLOCK is a clear error (tested in a child process that lowers the limit
//! and, when it runs as root, drops CAP_IPC_LOCK from its thread first).
#![cfg(all(unix, not(miri)))]

#[cfg(target_os = "linux")]
use crate::support::child::{self, test_name};
use dotcompute_memory::*;

const MIB: usize = 1 << 20;

#[test]
fn pinned_buffers_are_locked_page_aligned_and_zeroed() {
    let mut p = PinnedBuffer::<u32>::new(MIB / 4).unwrap(); // 1 MiB, under the default 8 MiB limit
    assert_eq!(p.len(), MIB / 4);
    assert_eq!(p.as_ptr() as usize % 4096, 0);
    assert_eq!(p.locked_len(), MIB);
    assert!(p.iter().all(|&x| x == 0));
    p[12345] = 7;
    assert_eq!(p[12345], 7);
    #[cfg(target_os = "linux")]
    {
        let locked = p.resident_locked_bytes().unwrap();
        assert!(locked >= MIB as u64, "smaps reports {locked} locked bytes");
    }
    // Partial pages are locked whole; an empty buffer locks nothing.
    assert_eq!(PinnedBuffer::<u8>::new(5000).unwrap().locked_len(), 8192);
    assert_eq!(PinnedBuffer::<u8>::new(0).unwrap().locked_len(), 0);
}

#[test]
fn pinned_with_huge_pages_and_numa() {
    let alloc = HostAlloc::new().huge_pages(true).numa_node(0);
    let p = PinnedBuffer::<f64>::with_options(&alloc, MIB / 4).unwrap(); // 2 MiB: one huge page
    assert_eq!(p.host().numa_node(), Some(0));
    assert_eq!(p.as_ptr() as usize % 4096, 0);
    assert!(p.iter().all(|&x| x == 0.0));
}

#[test]
fn the_pool_reuses_locked_buffers() {
    let pool = PinnedPool::new(MIB);
    let mut a = pool.rent(100_000).unwrap();
    assert_eq!(a.len(), 128 << 10);
    a[0] = 9;
    let addr = a.as_ptr();
    drop(a);
    assert_eq!(pool.cached_bytes(), 128 << 10);
    let b = pool.rent(70_000).unwrap();
    assert_eq!(b.as_ptr(), addr, "same size class comes back from the cache");
    assert_eq!(b[0], 9, "reused buffers keep their contents");
    assert_eq!((pool.hits(), pool.misses()), (1, 1));
    // Over the cache bound, released buffers are freed instead of kept.
    let big = pool.rent(2 * MIB).unwrap();
    drop(big);
    assert_eq!(pool.cached_bytes(), 0);
    drop(b);
    assert_eq!(pool.trim(), 128 << 10);
    assert_eq!(pool.cached_bytes(), 0);
}

/// Drops CAP_IPC_LOCK from this thread's effective and permitted sets (Linux capabilities
/// are per thread at the syscall level). Returns whether the thread had it.
#[cfg(target_os = "linux")]
fn drop_cap_ipc_lock() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes one header and two data structs, which we provide.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut Header, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    let had = data[0].effective & (1 << CAP_IPC_LOCK) != 0;
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset reads the header and two data structs, which we provide.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
    had
}

#[test]
#[cfg(target_os = "linux")]
fn exceeding_rlimit_memlock_is_a_clear_error() {
    if child::is_child() {
        // Child: 1 MiB lock limit, no CAP_IPC_LOCK, then ask for 4 MiB.
        let limit = rustix::process::Rlimit { current: Some(MIB as u64), maximum: Some(MIB as u64) };
        rustix::process::setrlimit(rustix::process::Resource::Memlock, limit).unwrap();
        drop_cap_ipc_lock();
        let err = PinnedBuffer::<u8>::new(4 * MIB).unwrap_err();
        match &err {
            Error::MemoryLockLimit { requested, soft_limit, hard_limit, .. } => {
                assert_eq!(*requested, 4 * MIB);
                assert_eq!((*soft_limit, *hard_limit), (Some(MIB as u64), Some(MIB as u64)));
            }
            other => panic!("expected MemoryLockLimit, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("RLIMIT_MEMLOCK") && msg.contains("4194304"), "{msg}");
        println!("CHILD-ERROR: {msg}");
        // Within the limit still works (and the failed attempt leaked no lock).
        let ok = PinnedBuffer::<u8>::new(512 << 10).unwrap();
        assert_eq!(ok.locked_len(), 512 << 10);
        return;
    }
    let test = test_name!(exceeding_rlimit_memlock_is_a_clear_error);
    let out = child::command(test).output().unwrap();
    let text = child::check(test, &out);
    assert!(text.contains("CHILD-ERROR:"), "{text}");
}
