//! `MemoryBuffer`: one generic body run on every implementation (unified buffers on cpu and sim,
//! a mutable view, host, pinned and shared buffers, and a type defined here), and the
//! implementing types' own methods keeping precedence over the trait's.

use crate::support::data::words;
use crate::support::managers;
use dotcompute_memory::*;
use std::io::Write;

/// Elements in every buffer the body runs on.
const N: usize = 16;

/// Runs every trait method on `b` (which holds `N` elements): a round trip, `to_vec`, copies of
/// the wrong length (refused with both lengths, nothing changed), writes through `as_mut_slice`
/// read back through `as_slice`, and `fill`.
fn exercise<B: MemoryBuffer<u32>>(what: &str, b: &mut B) {
    assert_eq!(b.len(), N, "{what}: len");
    assert!(!b.is_empty(), "{what}: is_empty");

    // Round trip.
    let data = words(N, 7);
    b.copy_from(&data).unwrap_or_else(|e| panic!("{what}: copy_from: {e}"));
    let mut out = vec![0u32; N];
    b.copy_to(&mut out).unwrap_or_else(|e| panic!("{what}: copy_to: {e}"));
    assert_eq!(out, data, "{what}: copy_to after copy_from");
    assert_eq!(b.to_vec().unwrap(), data, "{what}: to_vec");

    // A copy from a slice of the wrong length fails, naming both lengths, and writes nothing.
    for wrong in [0, N - 1, N + 1] {
        let err = b.copy_from(&vec![0xBAD; wrong]).unwrap_err();
        match &err {
            Error::LengthMismatch { operation, expected, actual } => {
                assert_eq!((*operation, *expected, *actual), ("copy_from", N, wrong), "{what}: {err}");
            }
            other => panic!("{what}: copy_from of {wrong} elements: expected LengthMismatch, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&N.to_string()) && message.contains(&wrong.to_string()), "{what}: {message}");
        assert_eq!(b.to_vec().unwrap(), data, "{what}: a failed copy_from changed the buffer");
    }

    // A copy into a slice of the wrong length fails, naming both lengths, and writes nothing.
    for wrong in [0, N - 1, N + 1] {
        let mut out = vec![0xBAD; wrong];
        let err = b.copy_to(&mut out).unwrap_err();
        match &err {
            Error::LengthMismatch { operation, expected, actual } => {
                assert_eq!((*operation, *expected, *actual), ("copy_to", N, wrong), "{what}: {err}");
            }
            other => panic!("{what}: copy_to of {wrong} elements: expected LengthMismatch, got {other:?}"),
        }
        assert!(out.iter().all(|&x| x == 0xBAD), "{what}: a failed copy_to wrote its output");
        assert_eq!(b.to_vec().unwrap(), data, "{what}: a failed copy_to changed the buffer");
    }

    // Writes through as_mut_slice are read back through as_slice and to_vec.
    {
        let s = b.as_mut_slice().unwrap();
        assert_eq!(s, &data[..], "{what}: as_mut_slice sees the data");
        s[0] = 1;
        s[N - 1] = 2;
    }
    let mut expected = data.clone();
    expected[0] = 1;
    expected[N - 1] = 2;
    assert_eq!(b.as_slice().unwrap(), &expected[..], "{what}: as_slice after as_mut_slice");
    assert_eq!(b.to_vec().unwrap(), expected, "{what}: to_vec after as_mut_slice");

    // Fill.
    b.fill(0x5EED).unwrap();
    assert!(b.as_slice().unwrap().iter().all(|&x| x == 0x5EED), "{what}: as_slice after fill");
    assert_eq!(b.to_vec().unwrap(), vec![0x5EED; N], "{what}: to_vec after fill");
}

/// Writes why `test` did not run past the test harness's output capture.
fn skipped(test: &str, reason: &dyn std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "skipped {test}: {reason}");
}

#[test]
fn unified_buffer_on_cpu() {
    let mut buf = managers::cpu().allocate::<u32>(N).unwrap();
    exercise("cpu UnifiedBuffer", &mut buf);
}

#[test]
fn unified_buffer_on_sim_with_the_device_part_newer() {
    let mm = MemoryManager::sim(SimOptions::default());
    let mut buf = mm.allocate::<u32>(N).unwrap();
    buf.upload(&words(N, 3)).unwrap();
    assert_eq!(buf.state(), BufferState::DeviceDirty);
    exercise("sim UnifiedBuffer", &mut buf);
    buf.ensure_on_device().unwrap();
    assert_eq!(buf.state(), BufferState::Synchronized);
    assert_eq!(buf.to_vec().unwrap(), vec![0x5EED; N], "the device part holds the fill after an upload");
}

#[test]
fn buffer_slice_mut_leaves_the_rest_of_its_buffer_alone() {
    let mm = managers::sim();
    let mut buf = mm.allocate::<u32>(N + 8).unwrap();
    buf.fill(9).unwrap();
    {
        let mut view = buf.slice_mut(4..4 + N).unwrap();
        exercise("BufferSliceMut", &mut view);
    }
    let all = buf.to_vec().unwrap();
    assert_eq!(all[..4], [9; 4]);
    assert_eq!(all[4..4 + N], [0x5EED; N]);
    assert_eq!(all[4 + N..], [9; 4]);
}

#[test]
fn host_buffer() {
    let mut buf = HostAlloc::new().allocate::<u32>(N).unwrap();
    exercise("HostBuffer", &mut buf);
}

#[test]
fn pinned_buffer() {
    let mut buf = match PinnedBuffer::<u32>::new(N) {
        Ok(buf) => buf,
        Err(e @ (Error::MemoryLockLimit { .. } | Error::Unsupported { .. })) => {
            return skipped("buffer::trait_impls::pinned_buffer", &e);
        }
        Err(e) => panic!("PinnedBuffer::new({N}): {e}"),
    };
    exercise("PinnedBuffer", &mut buf);
}

#[cfg(all(unix, not(miri)))]
#[test]
fn shared_buffer() {
    let name = format!("dcmem-test-{}-trait-impls", std::process::id());
    let mm = managers::cpu();
    let mut buf = mm.allocate_shared::<u32>(&name, N).unwrap();
    exercise("SharedBuffer", &mut buf);
    drop(buf); // the creator's drop removes the name
    assert!(
        matches!(SharedBuffer::remove(&name), Err(Error::SharedNotFound { .. })),
        "the segment's name is gone after the test"
    );
}

/// A buffer type of a user's own: a `Vec` behind the trait.
struct VecBuffer<T>(Vec<T>);

impl<T: Element> MemoryBuffer<T> for VecBuffer<T> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn copy_from(&mut self, src: &[T]) -> Result<()> {
        if src.len() != self.0.len() {
            return Err(Error::LengthMismatch { operation: "copy_from", expected: self.0.len(), actual: src.len() });
        }
        self.0.copy_from_slice(src);
        Ok(())
    }

    fn copy_to(&self, out: &mut [T]) -> Result<()> {
        if out.len() != self.0.len() {
            return Err(Error::LengthMismatch { operation: "copy_to", expected: self.0.len(), actual: out.len() });
        }
        out.copy_from_slice(&self.0);
        Ok(())
    }

    fn as_slice(&self) -> Result<&[T]> {
        Ok(&self.0)
    }

    fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        Ok(&mut self.0)
    }
}

#[test]
fn a_user_defined_buffer_type() {
    let mut buf = VecBuffer(vec![0u32; N]);
    exercise("VecBuffer", &mut buf);
    assert_eq!(buf.0, vec![0x5EED; N]);
}

/// With the trait in scope (the glob import above), method calls on the concrete types still
/// reach their own methods: the slice-like `to_vec` and `fill` of the host buffers, and the
/// unified buffer's inherent ones.
#[test]
fn the_types_own_methods_keep_precedence() {
    let mut host = HostAlloc::new().allocate_from(&[1u32, 2, 3]).unwrap();
    host.fill(4);
    let v: Vec<u32> = host.to_vec();
    assert_eq!(v, [4, 4, 4]);
    let s: &[u32] = host.as_slice();
    assert_eq!(s.len(), 3);

    let mut unified = managers::cpu().allocate::<u32>(3).unwrap();
    unified.fill(5).unwrap();
    assert_eq!(unified.to_vec().unwrap(), [5, 5, 5]);
    assert_eq!(MemoryBuffer::to_vec(&host).unwrap(), [4, 4, 4], "the trait's form, named");
}
