//! Size classes: how request sizes are rounded so freed blocks can serve later requests.
//!
//! Requests up to 512 bytes share one class (512 B, PyTorch's rounding unit). Above that, each
//! power-of-two interval `(2^k, 2^(k+1)]` is split into 4 equal steps, so a request is rounded
//! up by less than a quarter of itself: the waste bound is `< 25 %` (and `< 512 B` for small
//! requests). Class indices are dense, so a cache can be a plain array indexed by class.

/// Smallest class, in bytes.
pub const MIN_CLASS: usize = 512;
const STEPS_LOG2: u32 = 2;
/// Classes from one class size (above 512 B) to twice it: class `i + CLASSES_PER_DOUBLING`
/// holds twice the bytes of class `i`.
pub const CLASSES_PER_DOUBLING: usize = 1 << STEPS_LOG2;
/// Number of classes (enough for any `usize` size that can be rounded without overflow).
pub const CLASS_COUNT: usize = 1 + ((usize::BITS - MIN_CLASS.trailing_zeros()) as usize) * (1 << STEPS_LOG2);

/// The class a request of `size` bytes is served from, as `(index, class_bytes)`; `None` when
/// rounding would overflow `usize`.
pub fn class_of(size: usize) -> Option<(usize, usize)> {
    if size <= MIN_CLASS {
        return Some((0, MIN_CLASS));
    }
    // 2^k < size <= 2^(k+1)
    let k = usize::BITS - 1 - (size - 1).leading_zeros();
    let step = 1usize << (k - STEPS_LOG2);
    let rounded = (size - 1).checked_add(step)? / step * step;
    let j = rounded / step - (1 << STEPS_LOG2); // 1..=4
    let index = 1 + (k - MIN_CLASS.trailing_zeros()) as usize * (1 << STEPS_LOG2) + (j - 1);
    Some((index, rounded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(class_of(0), Some((0, 512)));
        assert_eq!(class_of(512), Some((0, 512)));
        assert_eq!(class_of(513), Some((1, 640)));
        assert_eq!(class_of(1024), Some((4, 1024)));
        assert_eq!(class_of(1025), Some((5, 1280)));
        assert_eq!(class_of(10_000_000).unwrap().1, 10 << 20);
        assert_eq!(class_of(usize::MAX), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 }))]
        #[test]
        fn rounding_is_tight_and_monotone(size in 1usize..(1usize << 48), other in 1usize..(1usize << 48)) {
            let (i, c) = class_of(size).unwrap();
            prop_assert!(c >= size);
            prop_assert!(i < CLASS_COUNT);
            if size > MIN_CLASS {
                prop_assert!((c - size) * 4 < size, "waste {} for {}", c - size, size);
            }
            // The class size maps to itself, and order is preserved.
            prop_assert_eq!(class_of(c).unwrap(), (i, c));
            if size > MIN_CLASS {
                prop_assert_eq!(class_of(2 * c).unwrap(), (i + CLASSES_PER_DOUBLING, 2 * c));
            }
            let (j, d) = class_of(other).unwrap();
            if size <= other { prop_assert!(i <= j && c <= d); }
            if i == j { prop_assert_eq!(c, d); }
        }
    }
}
