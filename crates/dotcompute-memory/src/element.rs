//! Element types a buffer can hold.
//!
//! `Element` is `bytemuck::Pod` (any bit pattern is a valid value, no padding), so host memory
//! can be reinterpreted as `[T]` and copied to devices byte for byte. Each element type carries
//! a stable tag that survives process boundaries: named shared buffers store it in their header
//! and refuse to open as a different type.

/// Stable identity of an element type: a numeric tag plus the size it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TypeTag {
    /// Tag number. Built-in types use 1..=13; user types should use values >= 1024.
    pub id: u32,
    /// Human-readable name for error messages.
    pub name: &'static str,
}

/// A plain-old-data element that buffers can hold and devices can copy byte for byte.
///
/// Implemented for the primitive numeric types. For your own `#[repr(C)]` Pod struct:
///
/// ```
/// use dotcompute_memory::{Element, TypeTag};
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Complex { re: f32, im: f32 }
/// impl Element for Complex {
///     const TYPE_TAG: TypeTag = TypeTag { id: 1024, name: "Complex" };
/// }
/// ```
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The type's stable tag.
    const TYPE_TAG: TypeTag;
}

macro_rules! elements {
    ($($t:ty => $id:expr),* $(,)?) => {
        $(impl Element for $t {
            const TYPE_TAG: TypeTag = TypeTag { id: $id, name: stringify!($t) };
        })*
    };
}

elements! {
    u8 => 1, i8 => 2, u16 => 3, i16 => 4, u32 => 5, i32 => 6, u64 => 7, i64 => 8,
    f32 => 9, f64 => 10, u128 => 11, i128 => 12, usize => 13,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_distinct() {
        let tags = [
            u8::TYPE_TAG,
            i8::TYPE_TAG,
            u16::TYPE_TAG,
            i16::TYPE_TAG,
            u32::TYPE_TAG,
            i32::TYPE_TAG,
            u64::TYPE_TAG,
            i64::TYPE_TAG,
            f32::TYPE_TAG,
            f64::TYPE_TAG,
            u128::TYPE_TAG,
            i128::TYPE_TAG,
            usize::TYPE_TAG,
        ];
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a.id, b.id, "{} and {} share a tag", a.name, b.name);
            }
        }
        assert_eq!(f32::TYPE_TAG.name, "f32");
    }
}
