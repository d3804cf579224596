//! Views: `slice` and `slice_mut` out of bounds, reversed or past the end, slices of slices bounded
//! by their parent view, and what views do (copies, `fill`) with the wrong lengths.

use super::*;

// ---- slice and slice_mut ----

pub(super) mod slice {
    #![allow(clippy::reversed_empty_ranges)]
    use super::*;
    use std::ops::Bound;

    pub const CASES: &[BufferCase] = &[
        case("slice: end past the end", |_, b| {
            fails!(b.slice(2..11), Error::OutOfRange { start: 2, end: 11, len: 10 });
        }),
        case("slice_mut: inclusive end past the end", |_, b| {
            fails!(b.slice_mut(0..=10), Error::OutOfRange { start: 0, end: 11, len: 10 });
        }),
        case("slice: inclusive end usize::MAX (end + 1 overflows)", |_, b| {
            fails!(b.slice(..=usize::MAX), Error::OutOfRange { start: 0, end: usize::MAX, len: 10 });
        }),
        case("slice: reversed", |_, b| {
            fails!(b.slice(6..2), Error::ReversedRange { start: 6, end: 2 });
        }),
        case("slice_mut: reversed", |_, b| {
            fails!(b.slice_mut(6..2), Error::ReversedRange { start: 6, end: 2 });
        }),
        case("slice: start past the end, open end", |_, b| {
            fails!(b.slice(11..), Error::OutOfRange { start: 11, end: 10, len: 10 });
        }),
        case("slice_mut: start and end past the end", |_, b| {
            fails!(b.slice_mut(12..15), Error::OutOfRange { start: 12, end: 15, len: 10 });
        }),
        case("slice: start usize::MAX", |_, b| {
            fails!(b.slice(usize::MAX..), Error::OutOfRange { start: usize::MAX, end: 10, len: 10 });
        }),
        case("slice: excluded start usize::MAX (start + 1 overflows)", |_, b| {
            fails!(
                b.slice((Bound::Excluded(usize::MAX), Bound::Unbounded)),
                Error::OutOfRange { start: usize::MAX, end: usize::MAX, len: 10 }
            );
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
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
}

// ---- slices of slices ----

pub(super) mod nested_slices {
    #![allow(clippy::reversed_empty_ranges)]
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("slice of a slice: inside the buffer but past the view", |_, b| {
            // 0..5 of the view 2..6 would be 2..7 of the buffer, which exists.
            let view = b.slice(2..6).unwrap();
            fails!(view.slice(0..5), Error::OutOfRange { start: 0, end: 5, len: 4 });
        }),
        case("slice of a slice: start past the view", |_, b| {
            fails!(b.slice(2..6).unwrap().slice(5..), Error::OutOfRange { start: 5, end: 4, len: 4 });
        }),
        case("slice of a slice: reversed", |_, b| {
            fails!(b.slice(2..6).unwrap().slice(3..1), Error::ReversedRange { start: 3, end: 1 });
        }),
        case("slice of a slice of a slice: past the innermost view", |_, b| {
            let inner = b.slice(2..6).unwrap().slice(1..3).unwrap();
            assert_eq!((inner.offset(), inner.len()), (3, 2));
            fails!(inner.slice(0..3), Error::OutOfRange { start: 0, end: 3, len: 2 });
        }),
        case("slice of an empty view", |_, b| {
            fails!(b.slice(10..).unwrap().slice(0..1), Error::OutOfRange { start: 0, end: 1, len: 0 });
        }),
        case("slice_mut of a slice_mut: past the view", |_, b| {
            fails!(b.slice_mut(2..6).unwrap().slice_mut(1..5), Error::OutOfRange { start: 1, end: 5, len: 4 });
        }),
        case("slice of a slice_mut: inclusive end past the view", |_, b| {
            fails!(b.slice_mut(2..6).unwrap().slice(4..=4), Error::OutOfRange { start: 4, end: 5, len: 4 });
        }),
        case("slice_mut of a slice_mut of a slice_mut: past the innermost view", |_, b| {
            let mut view = b.slice_mut(2..6).unwrap();
            let mut inner = view.slice_mut(1..3).unwrap();
            fails!(inner.slice_mut(2..3), Error::OutOfRange { start: 2, end: 3, len: 2 });
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
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
}

// ---- what views do: copy_from, copy_to, copy_from_buffer, fill ----

pub(super) mod slice_ops {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("BufferSliceMut::copy_from: source shorter than the view", |_, b| {
            let mut view = b.slice_mut(2..5).unwrap();
            fails!(view.copy_from(&[1, 2]), Error::LengthMismatch { operation: "copy_from", expected: 3, actual: 2 });
        }),
        case("BufferSliceMut::copy_from: source as long as the buffer, longer than the view", |_, b| {
            let mut view = b.slice_mut(2..5).unwrap();
            fails!(view.copy_from(&[1; 10]), Error::LengthMismatch { operation: "copy_from", expected: 3, actual: 10 });
        }),
        case("BufferSlice::copy_to: output longer than the view", |_, b| {
            let mut out = [7u32; 4];
            fails!(
                b.slice(1..4).unwrap().copy_to(&mut out),
                Error::LengthMismatch { operation: "copy_to", expected: 3, actual: 4 }
            );
            assert_eq!(out, [7; 4]);
        }),
        case("BufferSliceMut::copy_to: output shorter than the view", |_, b| {
            let mut out = [7u32; 2];
            fails!(
                b.slice_mut(1..4).unwrap().copy_to(&mut out),
                Error::LengthMismatch { operation: "copy_to", expected: 3, actual: 2 }
            );
            assert_eq!(out, [7; 2]);
        }),
        case("BufferSliceMut::copy_from_buffer: source of another length", |fx, b| {
            fails!(
                b.slice_mut(0..2).unwrap().copy_from_buffer(&fx.short),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 2, actual: 7 }
            );
        }),
        case("BufferSliceMut::copy_from_buffer: view of another manager's buffer, of another length", |fx, b| {
            fails!(
                b.slice_mut(2..4).unwrap().copy_from_buffer(&fx.foreign.slice(0..3).unwrap()),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 2, actual: 3 }
            );
        }),
        // `fill` itself takes any value; its view is what can be wrong.
        case("BufferSliceMut::fill: view past the end", |_, b| {
            fails!(b.slice_mut(8..12).and_then(|mut v| v.fill(1)), Error::OutOfRange { start: 8, end: 12, len: 10 });
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }
}
