//! `MemoryBuffer<T>`: the operations every kind of buffer offers, for code generic over them.

use crate::element::Element;
use crate::error::Result;

/// A typed array of `len()` elements that can be read and written from the host: the one
/// interface of [`UnifiedBuffer`](crate::UnifiedBuffer), [`BufferSliceMut`](crate::BufferSliceMut),
/// [`HostBuffer`](crate::HostBuffer), [`PinnedBuffer`](crate::PinnedBuffer) and
/// [`SharedBuffer`](crate::SharedBuffer), and of buffer types of your own.
///
/// Every method that an implementation can fail returns [`Result`], so one signature fits
/// buffers whose host access may transfer data (a [`UnifiedBuffer`](crate::UnifiedBuffer)
/// downloads its device part first when that one is newer) and buffers whose host access never
/// fails (the host buffers return `Ok`). A copy whose other side has a different length fails
/// with [`Error::LengthMismatch`](crate::error::Error::LengthMismatch), naming the method
/// (`copy_from` or `copy_to`), the buffer's length (`expected`) and the other side's
/// (`actual`); a failed call changes nothing.
///
/// Where an implementing type has a method of its own with the same name (`UnifiedBuffer::fill`,
/// the slice-returning `HostBuffer::as_slice`, the `Vec`-returning `HostBuffer::to_vec`), that
/// method takes precedence in a method call on the type; a generic function, or a call naming
/// the trait (`MemoryBuffer::to_vec(&b)`), reaches the trait's. The read-only [`BufferSlice`](crate::BufferSlice) does not implement
/// it, as it has no mutable access; a mutable view, [`BufferSliceMut`](crate::BufferSliceMut),
/// does.
///
/// ```
/// use dotcompute_memory::{HostAlloc, MemoryBuffer, MemoryManager, Result};
///
/// /// The sum of the elements, on any kind of buffer.
/// fn checksum<B: MemoryBuffer<u32>>(b: &B) -> Result<u64> {
///     Ok(b.as_slice()?.iter().map(|&x| u64::from(x)).sum())
/// }
///
/// # fn main() -> Result<()> {
/// let mm = MemoryManager::cpu();
/// let mut unified = mm.allocate::<u32>(4)?;
/// unified.copy_from(&[1, 2, 3, 4])?;
/// let host = HostAlloc::new().allocate_from(&[10u32, 20, 30])?;
///
/// assert_eq!(checksum(&unified)?, 10);
/// assert_eq!(checksum(&host)?, 60);
/// # Ok(())
/// # }
/// ```
pub trait MemoryBuffer<T: Element> {
    /// Number of elements.
    fn len(&self) -> usize;

    /// True when the buffer holds no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `src` into the buffer. `src.len()` must equal `len()`, or the call fails with
    /// [`Error::LengthMismatch`](crate::error::Error::LengthMismatch) and changes nothing.
    fn copy_from(&mut self, src: &[T]) -> Result<()>;

    /// Copies the buffer into `out`. `out.len()` must equal `len()`, or the call fails with
    /// [`Error::LengthMismatch`](crate::error::Error::LengthMismatch) and changes nothing.
    fn copy_to(&self, out: &mut [T]) -> Result<()>;

    /// The elements, read in place on the host.
    fn as_slice(&self) -> Result<&[T]>;

    /// The elements, written in place on the host.
    fn as_mut_slice(&mut self) -> Result<&mut [T]>;

    /// The elements as a new `Vec` (through [`MemoryBuffer::copy_to`]).
    fn to_vec(&self) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); self.len()];
        self.copy_to(&mut v)?;
        Ok(v)
    }

    /// Sets every element to `value` (through [`MemoryBuffer::as_mut_slice`]; implementations
    /// with a cheaper fill override it).
    fn fill(&mut self, value: T) -> Result<()> {
        self.as_mut_slice()?.fill(value);
        Ok(())
    }
}

/// [`MemoryBuffer`] for a host buffer that dereferences to `[T]`, and inherent `to_vec` and
/// `fill` with the slice's signatures, so that calls on the type keep the slice's meaning where
/// the trait is in scope (the trait's versions return a `Result`).
macro_rules! slice_backed_buffer {
    ($ty:ident) => {
        impl<T: $crate::element::Element> $ty<T> {
            /// The elements as a new `Vec`, as the slice's own `to_vec` (kept where
            /// [`MemoryBuffer`](crate::MemoryBuffer) is in scope, whose `to_vec` returns a `Result`).
            pub fn to_vec(&self) -> Vec<T> {
                <[T]>::to_vec(self)
            }

            /// Sets every element to `value`, as the slice's own `fill` (kept where
            /// [`MemoryBuffer`](crate::MemoryBuffer) is in scope, whose `fill` returns a `Result`).
            pub fn fill(&mut self, value: T) {
                <[T]>::fill(self, value)
            }
        }

        impl<T: $crate::element::Element> $crate::buffer_trait::MemoryBuffer<T> for $ty<T> {
            fn len(&self) -> usize {
                <[T]>::len(self)
            }

            fn copy_from(&mut self, src: &[T]) -> $crate::error::Result<()> {
                $crate::error::check_len("copy_from", <[T]>::len(self), src.len())?;
                <[T]>::copy_from_slice(self, src);
                Ok(())
            }

            fn copy_to(&self, out: &mut [T]) -> $crate::error::Result<()> {
                $crate::error::check_len("copy_to", <[T]>::len(self), out.len())?;
                out.copy_from_slice(self);
                Ok(())
            }

            fn as_slice(&self) -> $crate::error::Result<&[T]> {
                Ok(self)
            }

            fn as_mut_slice(&mut self) -> $crate::error::Result<&mut [T]> {
                Ok(self)
            }

            fn to_vec(&self) -> $crate::error::Result<Vec<T>> {
                Ok(<[T]>::to_vec(self))
            }

            fn fill(&mut self, value: T) -> $crate::error::Result<()> {
                <[T]>::fill(self, value);
                Ok(())
            }
        }
    };
}
pub(crate) use slice_backed_buffer;
