//! The large-copy routine around its size threshold and at sizes where it streams, at odd
//! alignments, against `copy_from_slice`; the other zero-copy ops on HostBuffers.

use crate::support::data::bytes;
use dotcompute_memory::ops::{self, CopyKind, StoreKind, NT_THRESHOLD};
use dotcompute_memory::*;

#[test]
fn copies_around_the_threshold_at_odd_alignments() {
    let src_buf = bytes(NT_THRESHOLD + 200, 3);
    for len in [NT_THRESHOLD - 1, NT_THRESHOLD, NT_THRESHOLD + 1, NT_THRESHOLD + 97] {
        for (so, dof) in [(0, 0), (1, 0), (0, 7), (13, 31), (32, 33)] {
            let src = &src_buf[so..so + len];
            let mut dst_buf = vec![0u8; len + 64];
            let used = ops::copy_bytes_with(&mut dst_buf[dof..dof + len], src, CopyKind::Auto).unwrap();
            if len < NT_THRESHOLD {
                assert_eq!(used, StoreKind::Cached);
            } else if cfg!(target_arch = "x86_64") {
                assert!(matches!(used, StoreKind::NonTemporalAvx2 | StoreKind::NonTemporalSse2), "{used:?}");
            }
            assert!(&dst_buf[dof..dof + len] == src, "len {len} src+{so} dst+{dof}");
            assert!(dst_buf[..dof].iter().chain(&dst_buf[dof + len..]).all(|&b| b == 0));
        }
    }
}

#[test]
fn ten_megabyte_typed_copy_between_host_buffers() {
    let n = 10_000_000 / 4;
    let src: HostBuffer<f32> = HostAlloc::new().allocate_from(&(0..n).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let mut dst = HostAlloc::new().huge_pages(true).allocate::<f32>(n).unwrap();
    ops::copy(&mut dst, &src).unwrap();
    assert!(*dst == *src);
    // Mismatch leaves the destination as it was.
    let err = ops::copy(&mut dst[..10], &src[..11]).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { expected: 10, actual: 11, .. }));
    assert_eq!(dst[10], 10.0);
}

#[test]
fn convert_and_fill_on_host_buffers() {
    let src = HostAlloc::new().allocate_from(&[1u8, 2, 255]).unwrap();
    let mut dst = HostAlloc::new().allocate::<f64>(3).unwrap();
    ops::convert(&mut dst, &src).unwrap();
    assert_eq!(&*dst, &[1.0, 2.0, 255.0]);
    ops::fill_range(&mut dst, 1.., -1.0).unwrap();
    assert_eq!(&*dst, &[1.0, -1.0, -1.0]);
    assert!(ops::fill_range(&mut dst, 2..4, 0.0).is_err());
    assert_eq!(&*dst, &[1.0, -1.0, -1.0]);
}
