//! Element-type conversion between slices, in place, without intermediate allocation.
//!
//! Conversions follow Rust's `as` rules (documented in the reference): integer to integer
//! wraps (truncates or sign-extends), float to integer saturates (NaN becomes 0), integer to
//! float rounds to nearest, `f64` to `f32` rounds to nearest. The loop is a plain zip the
//! compiler vectorises (it turns into `vcvtdq2ps` and friends at `-O`); the benchmark
//! `host_ops` compares it with an indexed loop.

use crate::error::{Error, Result};

/// A value that converts to `D` with `as` semantics.
pub trait CastInto<D>: Copy {
    /// `self as D`.
    fn cast_into(self) -> D;
}

macro_rules! cast_all {
    ($($from:ty),*) => { $( cast_all!(@one $from => u8, i8, u16, i16, u32, i32, u64, i64, f32, f64, u128, i128, usize); )* };
    (@one $from:ty => $($to:ty),*) => { $(
        impl CastInto<$to> for $from {
            #[inline(always)]
            fn cast_into(self) -> $to {
                self as $to
            }
        }
    )* };
}

cast_all!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64, u128, i128, usize);

/// Converts each element of `src` into the corresponding element of `dst` (`as` semantics).
///
/// ```
/// use dotcompute_memory::ops::convert;
/// let src = [1i32, -2, 300];
/// let mut dst = [0f32; 3];
/// convert(&mut dst, &src)?;
/// assert_eq!(dst, [1.0, -2.0, 300.0]);
/// let mut bytes = [0u8; 3];
/// convert(&mut bytes, &src)?;                // wraps like `as`
/// assert_eq!(bytes, [1, 254, 44]);
/// # Ok::<(), dotcompute_memory::Error>(())
/// ```
///
/// Errors: [`Error::LengthMismatch`] when the lengths differ (nothing is written).
pub fn convert<S: CastInto<D>, D>(dst: &mut [D], src: &[S]) -> Result<()> {
    if dst.len() != src.len() {
        return Err(Error::LengthMismatch { operation: "ops::convert", expected: dst.len(), actual: src.len() });
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.cast_into();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_follow_as() {
        let src = [f32::NAN, -1.5, 1e10, 255.9, f32::INFINITY];
        let mut dst = [7u8; 5];
        convert(&mut dst, &src).unwrap();
        assert_eq!(dst, [0, 0, 255, 255, 255]);
        let mut wide = [0f64; 5];
        convert(&mut wide, &src).unwrap();
        assert_eq!(wide[1], -1.5);
        assert!(wide[0].is_nan());
        let mut i = [0i16; 3];
        convert(&mut i, &[70_000u32, 5, 32_768]).unwrap();
        assert_eq!(i, [70_000u32 as i16, 5, i16::MIN]);
    }

    #[test]
    fn mismatch_writes_nothing() {
        let mut dst = [9u64; 2];
        let err = convert(&mut dst, &[1u8, 2, 3]).unwrap_err();
        assert!(matches!(err, Error::LengthMismatch { operation: "ops::convert", expected: 2, actual: 3 }));
        assert_eq!(dst, [9, 9]);
    }
}
