//! Zero-copy operations on host memory: bounds-checked fill, copy and element-type
//! conversion between slices (and anything that dereferences to one: [`crate::HostBuffer`],
//! `Vec`, the slices of a buffer), with no intermediate allocation, plus the large-copy
//! routine [`copy_bytes`] that picks cached or non-temporal stores by size.
//!
//! Every function validates before it writes: a call that returns an error has changed
//! nothing.

mod convert;
mod copy;

pub use convert::{convert, CastInto};
pub use copy::{copy, copy_bytes, copy_bytes_with, libc_streaming_threshold, CopyKind, StoreKind, NT_THRESHOLD};

use crate::element::Element;
use crate::error::{check_range, Error, Result};
use std::ops::RangeBounds;

/// Sets every element of `dst` to `value`.
///
/// This is `slice::fill`, which the compiler turns into `memset` for bytes and a vectorised
/// store loop otherwise; it is here so the ops module offers the whole set.
pub fn fill<T: Copy>(dst: &mut [T], value: T) {
    dst.fill(value);
}

/// Sets the elements of `dst` in `range` to `value`.
///
/// Errors: [`Error::OutOfRange`] / [`Error::ReversedRange`] (nothing is written).
pub fn fill_range<T: Copy>(dst: &mut [T], range: impl RangeBounds<usize>, value: T) -> Result<()> {
    let (start, end) = check_range(range, dst.len())?;
    dst[start..end].fill(value);
    Ok(())
}

/// Copies `src` into `dst[offset..offset + src.len()]`.
///
/// Errors: [`Error::OutOfRange`] when it does not fit (nothing is written).
pub fn copy_at<T: Element>(dst: &mut [T], offset: usize, src: &[T]) -> Result<()> {
    let end =
        offset.checked_add(src.len()).ok_or(Error::OutOfRange { start: offset, end: usize::MAX, len: dst.len() })?;
    let (start, end) = check_range(offset..end, dst.len())?;
    copy(&mut dst[start..end], src)
}

/// Copies the elements of `buf` in `src` to `buf[dst_offset..]` (the ranges may overlap,
/// as with `memmove`).
///
/// Errors: [`Error::OutOfRange`] / [`Error::ReversedRange`] for a bad source range or a
/// destination that does not fit (nothing is written).
pub fn copy_within<T: Element>(buf: &mut [T], src: impl RangeBounds<usize>, dst_offset: usize) -> Result<()> {
    let (start, end) = check_range(src, buf.len())?;
    let dst_end = dst_offset.checked_add(end - start).ok_or(Error::OutOfRange {
        start: dst_offset,
        end: usize::MAX,
        len: buf.len(),
    })?;
    check_range(dst_offset..dst_end, buf.len())?;
    buf.copy_within(start..end, dst_offset);
    Ok(())
}

/// The crate's internal bulk copy: [`copy_bytes`] (streaming stores for large copies) for
/// slices the caller already knows to be of equal length.
#[inline]
pub(crate) fn copy_into(dst: &mut [u8], src: &[u8]) {
    if copy_bytes(dst, src).is_err() {
        // Unequal lengths are a bug in the caller; copy_from_slice reports it.
        dst.copy_from_slice(src);
    }
}

/// [`copy_into`] for typed slices.
#[inline]
pub(crate) fn copy_into_typed<T: crate::element::Element>(dst: &mut [T], src: &[T]) {
    copy_into(bytemuck::cast_slice_mut(dst), bytemuck::cast_slice(src));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_ranges_are_checked() {
        let mut v = vec![0u32; 10];
        fill_range(&mut v, 2..5, 7).unwrap();
        assert_eq!(v, [0, 0, 7, 7, 7, 0, 0, 0, 0, 0]);
        assert!(matches!(fill_range(&mut v, 8..11, 1), Err(Error::OutOfRange { start: 8, end: 11, len: 10 })));
        assert_eq!(v.iter().sum::<u32>(), 21, "a failed fill writes nothing");
        fill(&mut v, 1);
        assert_eq!(v, vec![1; 10]);
    }

    #[test]
    fn copy_at_and_within() {
        let mut v: Vec<u16> = (0..10).collect();
        copy_at(&mut v, 7, &[70, 80, 90]).unwrap();
        assert_eq!(&v[7..], &[70, 80, 90]);
        let err = copy_at(&mut v, 8, &[1, 2, 3]).unwrap_err();
        assert!(matches!(err, Error::OutOfRange { start: 8, end: 11, len: 10 }), "{err:?}");
        assert!(copy_at(&mut v, usize::MAX, &[1]).is_err());
        assert_eq!(&v[7..], &[70, 80, 90]);

        copy_within(&mut v, 0..4, 2).unwrap();
        assert_eq!(&v[..6], &[0, 1, 0, 1, 2, 3]);
        assert!(matches!(copy_within(&mut v, 0..4, 7), Err(Error::OutOfRange { start: 7, end: 11, len: 10 })));
        assert!(copy_within(&mut v, 0..11, 0).is_err());
        assert!(copy_within(&mut v, 0..1, usize::MAX).is_err());
        assert_eq!(&v[..6], &[0, 1, 0, 1, 2, 3]);
    }
}
