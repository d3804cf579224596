//! Every bad input of the foundation issue, one test each: the call fails with the specific
//! `Error` variant carrying the offending values, nothing panics, and the buffers involved are
//! unchanged afterwards (contents, coherence state and modification epochs).

use dotcompute_memory::backend::BACKEND_NAMES;
use dotcompute_memory::*;
use std::sync::{Arc, Mutex};
use BufferState::*;

/// Everything observable about a buffer that a failed call must not change.
#[derive(Debug, PartialEq)]
struct Snapshot<T> {
    len: usize,
    state: BufferState,
    epochs: (u64, u64),
    contents: Vec<T>,
}

fn snapshot<T: Element + PartialEq>(buf: &UnifiedBuffer<T>) -> Snapshot<T> {
    let (state, epochs) = (buf.state(), buf.epochs());
    let contents = buf.to_vec().expect("reading a buffer");
    assert_eq!((buf.state(), buf.epochs()), (state, epochs), "to_vec must not change the state");
    Snapshot { len: buf.len(), state, epochs, contents }
}

fn quiet() -> ManagerOptions {
    ManagerOptions { maintenance_interval: None, ..Default::default() }
}

fn sim() -> MemoryManager {
    MemoryManager::with_backend(SimBackend::new(SimOptions::default()), quiet()).unwrap()
}

fn cpu() -> MemoryManager {
    MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap()
}

/// A cpu and a sim manager, for checks that must hold on unified and discrete memory alike.
fn managers() -> [MemoryManager; 2] {
    [cpu(), sim()]
}

/// A buffer of 10 u32 in each interesting state, with known contents.
fn buffers_in_every_state(mm: &MemoryManager) -> Vec<UnifiedBuffer<u32>> {
    let data: Vec<u32> = (100..110).collect();
    let mut out = Vec::new();
    for state in [HostOnly, HostDirty, Synchronized, DeviceDirty] {
        let mut b = mm.allocate_from(&data).unwrap();
        match state {
            HostOnly => {}
            HostDirty => {
                b.ensure_on_device().unwrap();
                b.as_mut_slice().unwrap()[0] = 100;
            }
            Synchronized => b.synchronize().unwrap(),
            DeviceDirty => b.mark_device_dirty().unwrap(),
            DeviceOnly => unreachable!(),
        }
        assert_eq!(b.state(), state);
        out.push(b);
    }
    out
}

#[test]
fn length_overflow_names_len_and_element_size() {
    for mm in managers() {
        let before = mm.statistics();
        let len = usize::MAX / 4;
        let err = mm.allocate::<u64>(len).unwrap_err();
        match &err {
            Error::LengthOverflow { len: l, element_size: 8, type_name } => {
                assert_eq!(*l, len);
                assert!(type_name.contains("u64"), "{type_name}");
            }
            other => panic!("expected LengthOverflow, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&len.to_string()) && msg.contains("8 bytes"), "{msg}");
        // Products that fit in usize but not in isize (the limit for any Rust allocation).
        let err = mm.allocate::<u8>(isize::MAX as usize + 1).unwrap_err();
        assert!(matches!(err, Error::LengthOverflow { element_size: 1, .. }), "{err:?}");
        let err = mm.allocate::<u32>(usize::MAX / 4 + 1).unwrap_err();
        assert!(matches!(err, Error::LengthOverflow { element_size: 4, .. }), "{err:?}");
        let err = mm.allocate_zeroed::<f64>(usize::MAX).unwrap_err();
        assert!(matches!(err, Error::LengthOverflow { len: usize::MAX, element_size: 8, .. }), "{err:?}");
        let after = mm.statistics();
        assert_eq!(after.buffers_allocated, before.buffers_allocated, "a failed allocate counts no buffer");
        assert_eq!(after.backend_allocations, before.backend_allocations);
    }
}

#[test]
fn huge_but_representable_lengths_fail_cleanly() {
    // len * size fits in isize, but no machine has that much memory: an error, not a panic or
    // an abort. Which error depends on where the allocation fails (host or device memory).
    for mm in managers() {
        let before = mm.statistics();
        for len in [1usize << 62, (1usize << 62) + 1, isize::MAX as usize - 4095, isize::MAX as usize] {
            let err = mm.allocate::<u8>(len).unwrap_err();
            assert!(
                matches!(err, Error::OutOfMemory { requested, .. } if requested >= len as u64)
                    || matches!(err, Error::LengthOverflow { len: l, .. } if l >= len),
                "{len}: {err:?}"
            );
        }
        let after = mm.statistics();
        assert_eq!(after.buffers_allocated, before.buffers_allocated);
        assert_eq!(after.active_allocations, 0);
    }
}

#[test]
fn copy_from_too_short_and_too_long() {
    for mm in managers() {
        for mut b in buffers_in_every_state(&mm) {
            let before = snapshot(&b);
            for n in [0usize, 9, 11, 100] {
                let src = vec![7u32; n];
                let err = b.copy_from(&src).unwrap_err();
                assert!(
                    matches!(err, Error::LengthMismatch { operation: "copy_from", expected: 10, actual } if actual == n),
                    "{err:?}"
                );
                let err = pollster::block_on(b.copy_from_async(&src)).unwrap_err();
                assert!(
                    matches!(err, Error::LengthMismatch { operation: "copy_from_async", expected: 10, actual } if actual == n),
                    "{err:?}"
                );
                // The same on a view: the view's length is what counts.
                let err = b.slice_mut(2..5).unwrap().copy_from(&src[..n.min(2)]).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 3, .. }), "{err:?}");
                assert_eq!(snapshot(&b), before, "{:?} after copy_from of {n} elements", before.state);
            }
        }
    }
}

#[test]
fn copy_to_too_short_and_too_long() {
    for mm in managers() {
        for mut b in buffers_in_every_state(&mm) {
            let before = snapshot(&b);
            for n in [0usize, 9, 11, 100] {
                let mut out = vec![7u32; n];
                let err = b.copy_to(&mut out).unwrap_err();
                assert!(
                    matches!(err, Error::LengthMismatch { operation: "copy_to", expected: 10, actual } if actual == n),
                    "{err:?}"
                );
                assert!(out.iter().all(|&x| x == 7), "a failed copy_to wrote into the output");
                let err = pollster::block_on(b.copy_to_async(&mut out)).unwrap_err();
                assert!(
                    matches!(err, Error::LengthMismatch { operation: "copy_to_async", expected: 10, actual } if actual == n),
                    "{err:?}"
                );
                let err = b.slice(1..4).unwrap().copy_to(&mut out).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 3, .. }) || n == 3, "{err:?}");
                assert!(out.iter().all(|&x| x == 7));
                assert_eq!(snapshot(&b), before);
            }
        }
    }
}

#[test]
#[allow(clippy::reversed_empty_ranges)]
fn slice_ranges_out_of_bounds_reversed_and_past_the_end() {
    for mm in managers() {
        for mut b in buffers_in_every_state(&mm) {
            let before = snapshot(&b);
            // Out of bounds at the end.
            assert!(matches!(b.slice(2..11), Err(Error::OutOfRange { start: 2, end: 11, len: 10 })));
            assert!(matches!(b.slice_mut(0..=10), Err(Error::OutOfRange { start: 0, end: 11, len: 10 })));
            assert!(matches!(b.slice(..=usize::MAX), Err(Error::OutOfRange { len: 10, .. })));
            // Reversed.
            assert!(matches!(b.slice(6..2), Err(Error::ReversedRange { start: 6, end: 2 })));
            assert!(matches!(b.slice_mut(6..2), Err(Error::ReversedRange { start: 6, end: 2 })));
            // Starting past the end (even when the end is past it too, the start is reported).
            assert!(matches!(b.slice(11..), Err(Error::OutOfRange { start: 11, len: 10, .. })));
            assert!(matches!(b.slice_mut(12..15), Err(Error::OutOfRange { start: 12, end: 15, len: 10 })));
            assert!(matches!(b.slice(usize::MAX..), Err(Error::OutOfRange { start: usize::MAX, .. })));
            // Messages carry the numbers.
            let msg = b.slice(2..11).unwrap_err().to_string();
            assert!(msg.contains("2..11") && msg.contains("10"), "{msg}");
            // The edges themselves are fine.
            assert_eq!(b.slice(10..).unwrap().len(), 0);
            assert_eq!(b.slice(..).unwrap().len(), 10);
            assert_eq!(snapshot(&b), before);
        }
    }
}

#[test]
#[allow(clippy::reversed_empty_ranges)]
fn slice_of_a_slice_is_bounded_by_the_parent_view() {
    for mm in managers() {
        for mut b in buffers_in_every_state(&mm) {
            let before = snapshot(&b);
            {
                // 2..6 of a length-10 buffer: 0..5 of the view would be 2..7 of the buffer,
                // which exists, but lies outside the view.
                let view = b.slice(2..6).unwrap();
                assert!(matches!(view.slice(0..5), Err(Error::OutOfRange { start: 0, end: 5, len: 4 })));
                assert!(matches!(view.slice(5..), Err(Error::OutOfRange { start: 5, len: 4, .. })));
                assert!(matches!(view.slice(3..1), Err(Error::ReversedRange { start: 3, end: 1 })));
                let inner = view.slice(1..3).unwrap();
                assert_eq!((inner.offset(), inner.len()), (3, 2));
                assert!(matches!(inner.slice(0..3), Err(Error::OutOfRange { start: 0, end: 3, len: 2 })));
                assert_eq!(inner.to_vec().unwrap(), before.contents[3..5]);
            }
            {
                let mut view = b.slice_mut(2..6).unwrap();
                assert!(matches!(view.slice_mut(1..5), Err(Error::OutOfRange { start: 1, end: 5, len: 4 })));
                assert!(matches!(view.slice(4..=4), Err(Error::OutOfRange { start: 4, end: 5, len: 4 })));
                let mut inner = view.slice_mut(1..3).unwrap();
                assert!(matches!(inner.slice_mut(2..3), Err(Error::OutOfRange { start: 2, end: 3, len: 2 })));
                assert!(matches!(
                    inner.copy_from(&[1, 2, 3]),
                    Err(Error::LengthMismatch { expected: 2, actual: 3, .. })
                ));
            }
            assert_eq!(snapshot(&b), before);
        }
    }
}

/// `DCMEM_BACKEND` is process-global: every test that sets it holds this lock.
static ENV: Mutex<()> = Mutex::new(());

fn from_env_with(value: Option<&str>) -> Result<MemoryManager> {
    let _guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let old = std::env::var_os("DCMEM_BACKEND");
    match value {
        Some(v) => std::env::set_var("DCMEM_BACKEND", v),
        None => std::env::remove_var("DCMEM_BACKEND"),
    }
    let r = MemoryManager::from_env();
    match old {
        Some(v) => std::env::set_var("DCMEM_BACKEND", v),
        None => std::env::remove_var("DCMEM_BACKEND"),
    }
    r
}

#[test]
fn from_env_reads_the_device_memory_limit_and_names_a_bad_one() {
    let _guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let old = std::env::var_os("DCMEM_DEVICE_MEMORY_LIMIT");
    let with = |v: &str| {
        std::env::set_var("DCMEM_DEVICE_MEMORY_LIMIT", v);
        MemoryManager::from_env()
    };
    let ok = with("6MiB").map(|mm| mm.options().device_memory_limit);
    let bad = with("6 megabytes").err();
    let empty = with(" ").map(|mm| mm.options().device_memory_limit);
    match old {
        Some(v) => std::env::set_var("DCMEM_DEVICE_MEMORY_LIMIT", v),
        None => std::env::remove_var("DCMEM_DEVICE_MEMORY_LIMIT"),
    }
    assert_eq!(ok.unwrap(), Some(6 << 20));
    assert_eq!(empty.unwrap(), None, "empty means unset");
    let err = bad.expect("a malformed limit is an error");
    assert!(
        matches!(&err, Error::InvalidArgument { option: "DCMEM_DEVICE_MEMORY_LIMIT", value, .. } if value == "6 megabytes"),
        "{err:?}"
    );
    assert!(err.to_string().contains("512MiB"), "says what is accepted: {err}");
}

#[test]
fn from_env_unknown_backend_lists_the_valid_names() {
    for bad in ["vulkan", "cpux", "s i m", "opencl3"] {
        let err = from_env_with(Some(bad)).unwrap_err();
        match &err {
            Error::UnknownBackend { name, valid } => {
                assert_eq!(name, bad);
                for n in BACKEND_NAMES {
                    assert!(valid.contains(n), "{valid} lacks {n}");
                }
            }
            other => panic!("{bad}: expected UnknownBackend, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(bad) && msg.contains("cpu") && msg.contains("sim"), "{msg}");
    }
    // The same through the explicit constructor.
    let err = MemoryManager::with_backend_name("nope", quiet()).unwrap_err();
    assert!(matches!(err, Error::UnknownBackend { ref name, .. } if name == "nope"), "{err:?}");
    // Unset, empty, and differently spelt known names work.
    assert_eq!(from_env_with(None).unwrap().backend().name(), "cpu");
    assert_eq!(from_env_with(Some("")).unwrap().backend().name(), "cpu");
    assert_eq!(from_env_with(Some(" SIM ")).unwrap().backend().name(), "sim");
}

#[test]
fn from_env_backends_missing_from_the_build_are_unavailable_with_a_reason() {
    let compiled = |name: &str| match name {
        "opencl" => cfg!(feature = "opencl"),
        "cuda" => cfg!(feature = "cuda"),
        "metal" => cfg!(target_os = "macos"),
        _ => true,
    };
    for name in ["opencl", "cuda", "metal"] {
        match from_env_with(Some(name)) {
            Ok(mm) => {
                assert!(compiled(name), "{name} opened in a build without it");
                assert_eq!(mm.backend().name(), name);
            }
            Err(Error::BackendUnavailable { backend, reason }) => {
                assert_eq!(backend, name);
                assert!(!reason.trim().is_empty(), "{name}: empty reason");
                if !compiled(name) && name != "metal" {
                    assert!(reason.contains(&format!("--features {name}")), "{name}: {reason}");
                }
                if name == "metal" && !cfg!(target_os = "macos") {
                    assert!(reason.contains("Apple"), "{reason}");
                }
                eprintln!("{name}: unavailable: {reason}");
            }
            Err(other) => panic!("{name}: expected BackendUnavailable or success, got {other:?}"),
        }
    }
}

#[test]
fn allocation_beyond_sim_capacity_names_requested_and_available() {
    let sim = Arc::new(SimBackend::new(SimOptions { capacity: 1 << 20, ..Default::default() }));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();

    // Device memory is allocated lazily: the host part alone fits anywhere.
    let mut big = mm.allocate_from(&vec![3u8; 2 << 20]).unwrap();
    let before = snapshot(&big);
    let err = big.ensure_on_device().unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { backend: "sim", requested, free, cached: 0, .. }
            if requested == 2 << 20 && free == 1 << 20),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&(2u64 << 20).to_string()) && msg.contains(&(1u64 << 20).to_string()), "{msg}");
    assert_eq!(snapshot(&big), before);
    for r in [big.synchronize(), big.mark_device_dirty(), pollster::block_on(big.synchronize_async())] {
        assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
        assert_eq!(snapshot(&big), before);
    }
    assert_eq!(sim.used(), 0);

    // With part of the device in use, "available" is what is left.
    let mut a = mm.allocate_from(&vec![1u8; 512 << 10]).unwrap();
    a.ensure_on_device().unwrap();
    let mut b = mm.allocate_from(&vec![2u8; 768 << 10]).unwrap();
    let before_b = snapshot(&b);
    let err = b.ensure_on_device().unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { requested: 786_432, free: 524_288, .. }),
        "requested 768 KiB with 512 KiB free: {err:?}"
    );
    assert_eq!(snapshot(&b), before_b);
    // A device copy into a buffer without room fails the same way and changes nothing.
    let err = b.slice_mut(0..512 << 10).unwrap().copy_from_buffer(&a).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err:?}");
    assert_eq!(snapshot(&b), before_b);
    assert_eq!(a.state(), Synchronized);
    assert_eq!(sim.used(), 512 << 10);
    drop((a, b, big));
    assert_eq!(mm.statistics().active_allocations, 0);
}

#[test]
fn copy_from_buffer_with_different_lengths() {
    for mm in managers() {
        let src = mm.allocate_from(&[9u32; 7]).unwrap();
        for mut dst in buffers_in_every_state(&mm) {
            let before = snapshot(&dst);
            let src_before = snapshot(&src);
            let err = dst.copy_from_buffer(&src).unwrap_err();
            assert!(
                matches!(err, Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 7 }),
                "{err:?}"
            );
            let err = dst.copy_from_buffer(&src.slice(0..3).unwrap()).unwrap_err();
            assert!(matches!(err, Error::LengthMismatch { expected: 10, actual: 3, .. }), "{err:?}");
            let err = dst.slice_mut(0..2).unwrap().copy_from_buffer(&src).unwrap_err();
            assert!(matches!(err, Error::LengthMismatch { expected: 2, actual: 7, .. }), "{err:?}");
            let err = dst.slice_mut(1..9).unwrap().copy_from_buffer(&src.slice(1..).unwrap()).unwrap_err();
            assert!(matches!(err, Error::LengthMismatch { expected: 8, actual: 6, .. }), "{err:?}");
            assert_eq!(snapshot(&dst), before);
            assert_eq!(snapshot(&src), src_before);
        }
    }
}

#[test]
fn copy_from_buffer_between_managers() {
    for (a, b) in [(cpu(), cpu()), (sim(), sim()), (cpu(), sim()), (sim(), cpu())] {
        let mut src = b.allocate_from(&[5u32; 10]).unwrap();
        src.mark_device_dirty().unwrap();
        for mut dst in buffers_in_every_state(&a) {
            let before = snapshot(&dst);
            let err = dst.copy_from_buffer(&src).unwrap_err();
            match err {
                Error::ManagerMismatch { operation: "copy_from_buffer", left, right } => {
                    assert_eq!((left, right), (a.id(), b.id()));
                    assert_ne!(left, right);
                }
                other => panic!("expected ManagerMismatch, got {other:?}"),
            }
            let err = dst.slice_mut(2..4).unwrap().copy_from_buffer(&src.slice(0..2).unwrap()).unwrap_err();
            assert!(matches!(err, Error::ManagerMismatch { .. }), "{err:?}");
            assert_eq!(snapshot(&dst), before);
            assert_eq!(src.state(), DeviceDirty);
        }
    }
}

#[test]
fn zero_length_buffers_are_valid_and_empty() {
    let sim_backend = Arc::new(SimBackend::new(SimOptions::default()));
    let sim_mm = MemoryManager::with_shared_backend(sim_backend.clone(), quiet()).unwrap();
    for mm in [cpu(), sim_mm] {
        let mut b = mm.allocate::<f32>(0).unwrap();
        let mut c = mm.allocate::<f32>(0).unwrap();
        assert_eq!((b.len(), b.size_in_bytes()), (0, 0));
        assert!(b.is_empty());
        assert_eq!(b.state(), HostOnly);
        assert!(b.as_slice().unwrap().is_empty());
        assert!(b.as_mut_slice().unwrap().is_empty());
        b.copy_from(&[]).unwrap();
        b.copy_to(&mut []).unwrap();
        b.fill(1.0).unwrap();
        assert!(b.to_vec().unwrap().is_empty());
        b.synchronize().unwrap();
        b.ensure_on_device().unwrap();
        b.ensure_on_host().unwrap();
        b.mark_device_dirty().unwrap();
        b.copy_from_buffer(&c).unwrap();
        c.copy_from_buffer(&b.slice(..).unwrap()).unwrap();
        b.compact().unwrap();
        assert_eq!(b.state(), HostOnly);
        pollster::block_on(b.copy_from_async(&[])).unwrap();
        pollster::block_on(b.copy_to_async(&mut [])).unwrap();
        pollster::block_on(b.synchronize_async()).unwrap();
        assert!(b.slice(..).unwrap().is_empty());
        assert!(b.slice(0..0).unwrap().as_slice().unwrap().is_empty());
        assert!(matches!(b.slice(0..1), Err(Error::OutOfRange { start: 0, end: 1, len: 0 })));
        assert!(matches!(b.copy_from(&[1.0]), Err(Error::LengthMismatch { expected: 0, actual: 1, .. })));
        let bytes = b.cast::<u8>().unwrap();
        assert!(bytes.is_empty());
        assert_eq!(mm.statistics().active_allocations, 2);
        assert_eq!(mm.statistics().active_bytes, 0);
        drop((bytes, c));
        let s = mm.statistics();
        assert_eq!((s.active_allocations, s.buffers_allocated, s.buffers_freed), (0, 2, 2));
        assert_eq!(s.backend_allocations, 0, "empty buffers need no memory");
    }
    assert_eq!(sim_backend.used(), 0);
}

#[test]
fn manager_options_that_contradict_each_other() {
    let err = MemoryManager::with_backend(
        CpuBackend::new(),
        ManagerOptions { min_pool_bytes: 2000, max_pool_bytes: 1000, ..quiet() },
    )
    .unwrap_err();
    match &err {
        Error::InvalidArgument { option, value, .. } => {
            assert!(option.contains("min_pool_bytes"), "{option}");
            assert!(value.contains("2000") && value.contains("1000"), "{value}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let err = MemoryManager::with_backend_name(
        "sim",
        ManagerOptions { maintenance_interval: Some(std::time::Duration::ZERO), ..Default::default() },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { option, .. } if option.contains("maintenance_interval")), "{err:?}");
    // Equal bounds are fine.
    MemoryManager::with_backend(
        CpuBackend::new(),
        ManagerOptions { min_pool_bytes: 1000, max_pool_bytes: 1000, ..quiet() },
    )
    .unwrap();
}

#[test]
fn cast_with_sizes_that_do_not_divide() {
    for mm in managers() {
        let mut b = mm.allocate_from(&[1u8, 2, 3, 4, 5, 6, 7]).unwrap();
        b.mark_device_dirty().unwrap();
        let before = snapshot(&b);
        let (b, err) = b.try_cast::<u32>().unwrap_err();
        match err {
            Error::CastMismatch { len: 7, from: "u8", from_size: 1, to: "u32", to_size: 4, .. } => {}
            other => panic!("expected CastMismatch, got {other:?}"),
        }
        assert_eq!(snapshot(&b), before, "try_cast must hand the buffer back intact");
        let (b, err) = b.try_cast::<u16>().unwrap_err();
        assert!(matches!(err, Error::CastMismatch { to_size: 2, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains('7') && msg.contains("u16"), "{msg}");
        assert_eq!(snapshot(&b), before);
        let err = b.cast::<u64>().unwrap_err();
        assert!(matches!(err, Error::CastMismatch { len: 7, to_size: 8, .. }), "{err:?}");
        assert_eq!(mm.statistics().active_allocations, 0, "cast consumes the buffer on failure");

        // And a cast that fits keeps contents and state.
        let mut w = mm.allocate_from(&[0x0403_0201u32, 0x0807_0605, 0x0c0b_0a09]).unwrap();
        w.mark_device_dirty().unwrap();
        let bytes = w.cast::<u8>().unwrap();
        assert_eq!(bytes.len(), 12);
        assert_eq!(bytes.state(), DeviceDirty);
        let expected: Vec<u8> =
            [0x0403_0201u32, 0x0807_0605, 0x0c0b_0a09].iter().flat_map(|x| x.to_ne_bytes()).collect();
        assert_eq!(bytes.to_vec().unwrap(), expected);
        let back = bytes.cast::<u16>().unwrap();
        assert_eq!(back.len(), 6);
    }
}

#[test]
fn device_write_over_unsynchronized_host_writes_is_a_conflict() {
    for mm in managers() {
        let mut b = mm.allocate_from(&[1u32, 2, 3]).unwrap();
        b.ensure_on_device().unwrap();
        b.as_mut_slice().unwrap()[1] = 20;
        let before = snapshot(&b);
        assert_eq!(before.state, HostDirty);
        match b.mark_device_dirty().unwrap_err() {
            Error::ConcurrentModification { operation: "mark_device_dirty", host_epoch, device_epoch } => {
                assert_eq!((host_epoch, device_epoch), before.epochs);
                assert!(host_epoch > device_epoch);
            }
            other => panic!("expected ConcurrentModification, got {other:?}"),
        }
        assert_eq!(snapshot(&b), before);
        assert_eq!(b.to_vec().unwrap(), [1, 20, 3]);
    }
}
