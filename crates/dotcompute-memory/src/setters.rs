//! `with_*` setters for the option structs, so callers can write
//! `Options::default().with_x(..)` as well as `Options { x, ..Default::default() }`. The
//! structs are not `#[non_exhaustive]`: that would forbid the struct-update form outside the
//! crate, which the documented API uses.

/// Defines, for each `setter => field: Type`, a method `setter(self, value: Type) -> Self` that
/// returns the options with `field` set to `value`.
macro_rules! with_setters {
    ($ty:ident { $($setter:ident => $field:ident : $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Returns these options with `", stringify!($field), "` set to `value`.")]
                #[must_use]
                pub fn $setter(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
pub(crate) use with_setters;
