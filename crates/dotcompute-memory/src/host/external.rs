//! Foreign memory as a [`HostBuffer`]: `unsafe HostBuffer::from_raw_parts(ptr, len, ownership)`.
//!
//! Memory from another library (a C array, a NumPy buffer, an mmap, a `Vec` kept elsewhere) is
//! used in place, without a copy. The [`Ownership`] says who frees it:
//!
//! - [`Ownership::Borrowed`]: never freed by us; the caller keeps it alive and unaliased for as
//!   long as the buffer lives.
//! - [`Ownership::Owned`]: the deleter is called exactly once, with the original pointer and
//!   length, when the buffer is dropped (like the "owner" wrappers of the `bytes` crate).

use super::aligned::{HostBuffer, PageInfo, PageKind};
use super::os;
pub use super::storage::Deleter;
use super::storage::Storage;
use crate::element::Element;
use crate::error::{byte_len, Error, Result};
use std::fmt;
use std::ptr::NonNull;

/// Who frees memory wrapped with [`HostBuffer::from_raw_parts`].
pub enum Ownership<T> {
    /// The caller keeps ownership; dropping the buffer frees nothing.
    Borrowed,
    /// The buffer takes ownership; the deleter runs exactly once when it is dropped.
    Owned(Deleter<T>),
}

impl<T> Ownership<T> {
    /// `Ownership::Owned` from a closure (boxes it).
    pub fn owned(deleter: impl FnOnce(*mut T, usize) + Send + 'static) -> Self {
        Ownership::Owned(Box::new(deleter))
    }
}

impl<T> fmt::Debug for Ownership<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ownership::Borrowed => "Borrowed",
            Ownership::Owned(_) => "Owned(<deleter>)",
        })
    }
}

impl<T: Element> HostBuffer<T> {
    /// Wraps `len` elements at `ptr` without copying.
    ///
    /// ```
    /// use dotcompute_memory::*;
    /// # fn main() -> Result<()> {
    /// let mut v = vec![1.0f32, 2.0, 3.0];
    /// // SAFETY: `v` outlives `wrapped` and is not touched while it lives.
    /// let mut wrapped = unsafe { HostBuffer::<f32>::from_raw_parts(v.as_mut_ptr(), v.len(), Ownership::Borrowed) };
    /// wrapped[0] = 10.0;
    /// drop(wrapped);                      // frees nothing
    /// assert_eq!(v, [10.0, 2.0, 3.0]);
    ///
    /// // Handing over a Vec: the deleter rebuilds and drops it, exactly once.
    /// let mut v = std::mem::ManuallyDrop::new(vec![7u64; 4]);
    /// let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
    /// // SAFETY: the Vec's allocation is handed over; only the deleter frees it.
    /// let owned = unsafe {
    ///     HostBuffer::try_from_raw_parts(ptr, len, Ownership::owned(move |p, n| drop(Vec::from_raw_parts(p, n, cap))))?
    /// };
    /// assert_eq!(&*owned, &[7, 7, 7, 7]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The shape of `std::slice::from_raw_parts`, returning the buffer itself;
    /// [`HostBuffer::try_from_raw_parts`] is the same with the pointer and length checks
    /// reported as errors instead.
    ///
    /// # Panics
    ///
    /// When `ptr` is null with a non-zero length, not aligned for `T`, or `len *
    /// size_of::<T>()` overflows: each breaks the safety contract below, so this refuses
    /// rather than wrap the memory (the deleter is then dropped without being called).
    ///
    /// # Safety
    ///
    /// As [`HostBuffer::try_from_raw_parts`], and `ptr` must be non-null (unless `len` is 0)
    /// and aligned for `T`, and `len * size_of::<T>()` must not exceed `isize::MAX`.
    pub unsafe fn from_raw_parts(ptr: *mut T, len: usize, ownership: Ownership<T>) -> Self {
        // SAFETY: forwarded contract.
        match unsafe { Self::try_from_raw_parts(ptr, len, ownership) } {
            Ok(buffer) => buffer,
            Err(e) => panic!("HostBuffer::from_raw_parts: {e} (use try_from_raw_parts to handle this as an error)"),
        }
    }

    /// Wraps `len` elements at `ptr` without copying, checking the pointer and length first.
    ///
    /// Errors (the deleter is then dropped without being called, and the memory stays the
    /// caller's to free): a null `ptr` with a non-zero size ([`Error::InvalidArgument`]), a
    /// `ptr` not aligned for `T` ([`Error::InvalidAlignment`]), `len * size_of::<T>()`
    /// overflowing ([`Error::LengthOverflow`]).
    ///
    /// # Safety
    ///
    /// For as long as the returned buffer lives:
    /// 1. `ptr` must be valid for reads and writes of `len` elements of `T` (one allocation),
    ///    all initialised (any bit pattern is a valid `T`, since `T` is `Pod`);
    /// 2. nothing else may access that memory (the buffer hands out `&mut [T]`), except
    ///    through the buffer;
    /// 3. the memory may be accessed from whichever thread the buffer is moved to;
    /// 4. with [`Ownership::Owned`], the deleter must be a correct way to free exactly this
    ///    memory, and nothing else may free it.
    pub unsafe fn try_from_raw_parts(ptr: *mut T, len: usize, ownership: Ownership<T>) -> Result<Self> {
        let bytes = byte_len::<T>(len)?;
        let element_align = std::mem::align_of::<T>();
        let nn = match NonNull::new(ptr) {
            Some(nn) => nn,
            None if bytes == 0 => NonNull::dangling(),
            None => {
                return Err(Error::InvalidArgument {
                    option: "HostBuffer::from_raw_parts(ptr)",
                    value: format!("null with len {len}"),
                    reason: "a non-empty buffer needs a non-null pointer",
                })
            }
        };
        if !(nn.as_ptr() as usize).is_multiple_of(element_align) {
            return Err(Error::InvalidAlignment {
                alignment: nn.as_ptr() as usize % element_align,
                type_name: std::any::type_name::<T>(),
                element_align,
                reason: "the pointer is misaligned for the element type (value shown: address modulo alignment)",
            });
        }
        let storage = match ownership {
            Ownership::Borrowed => Storage::Borrowed,
            Ownership::Owned(deleter) => Storage::Owned(Some(wrap_deleter(deleter, ptr))),
        };
        Ok(HostBuffer {
            ptr: nn,
            len,
            storage,
            page: PageInfo {
                kind: PageKind::Foreign,
                size: os::page_size(),
                reason: "wrapped foreign memory: its pages are the owner's; base page size assumed".into(),
            },
            numa_node: None,
            alignment: element_align,
            stats: None,
        })
    }

    /// True when this buffer wraps foreign memory (from [`HostBuffer::from_raw_parts`]).
    pub fn is_foreign(&self) -> bool {
        self.storage.is_foreign()
    }
}

/// The deleter must see the caller's original pointer (which may be null for an empty
/// buffer), not the dangling one we store.
fn wrap_deleter<T: 'static>(deleter: Deleter<T>, original: *mut T) -> Deleter<T> {
    struct SendPtr<T>(*mut T);
    // SAFETY: the pointer is only handed back to the caller's own `Send` deleter, which the
    // from_raw_parts contract allows to run on any thread.
    unsafe impl<T> Send for SendPtr<T> {}
    let original = SendPtr(original);
    Box::new(move |_stored, len| {
        let original = original;
        deleter(original.0, len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn borrowed_memory_is_used_in_place_and_never_freed() {
        let mut v = vec![1u32, 2, 3, 4];
        // SAFETY: v outlives the buffer and is not used while it lives.
        let mut b = unsafe { HostBuffer::from_raw_parts(v.as_mut_ptr(), v.len(), Ownership::Borrowed) };
        assert!(b.is_foreign());
        assert_eq!(b.page_kind(), PageKind::Foreign);
        assert_eq!(b.as_ptr(), v.as_ptr());
        b[1] = 20;
        drop(b);
        assert_eq!(v, [1, 20, 3, 4]);
    }

    #[test]
    fn owned_memory_calls_the_deleter_exactly_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut v = std::mem::ManuallyDrop::new(vec![5u16; 10]);
        let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
        let seen = calls.clone();
        let expected = ptr as usize;
        let deleter = Ownership::owned(move |p: *mut u16, n| {
            assert_eq!((p as usize, n), (expected, len));
            seen.fetch_add(1, Ordering::SeqCst);
            // SAFETY: p/n/cap are the parts of the Vec handed over above.
            drop(unsafe { Vec::from_raw_parts(p, n, cap) });
        });
        // SAFETY: the Vec's allocation is handed over to the buffer.
        let b = unsafe { HostBuffer::from_raw_parts(ptr, len, deleter) };
        assert_eq!(b.iter().map(|&x| x as u32).sum::<u32>(), 50);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        // Moving it to another thread and dropping there still calls it once.
        std::thread::spawn(move || drop(b)).join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn null_and_misaligned_pointers_are_errors() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        // SAFETY: the call fails before the pointer is used.
        let err = unsafe {
            HostBuffer::<f32>::try_from_raw_parts(
                std::ptr::null_mut(),
                3,
                Ownership::owned(move |_, _| {
                    seen.fetch_add(1, Ordering::SeqCst);
                }),
            )
        }
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "a failed wrap must not free the memory");

        let mut words = [0u32; 4];
        let misaligned = (words.as_mut_ptr() as *mut u8).wrapping_add(1).cast::<u32>();
        // SAFETY: the call fails before the pointer is used.
        let err = unsafe { HostBuffer::try_from_raw_parts(misaligned, 2, Ownership::Borrowed) }.unwrap_err();
        assert!(matches!(err, Error::InvalidAlignment { alignment: 1, element_align: 4, .. }), "{err:?}");

        let mut one = 0u64;
        // SAFETY: the call fails on the length before the pointer is used.
        let err = unsafe { HostBuffer::try_from_raw_parts(&mut one as *mut u64, usize::MAX, Ownership::Borrowed) }
            .unwrap_err();
        assert!(matches!(err, Error::LengthOverflow { .. }), "{err:?}");

        // The unchecked shape refuses the same inputs (they break its safety contract).
        let refused = std::panic::catch_unwind(|| {
            // SAFETY: the call fails on the null pointer before it is used.
            unsafe { HostBuffer::<f32>::from_raw_parts(std::ptr::null_mut(), 3, Ownership::Borrowed) }
        });
        assert!(refused.is_err());
    }

    #[test]
    fn empty_null_is_allowed_and_deleter_sees_null() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        // SAFETY: zero elements: nothing is ever read or written.
        let b = unsafe {
            HostBuffer::<f64>::try_from_raw_parts(
                std::ptr::null_mut(),
                0,
                Ownership::owned(move |p: *mut f64, n| {
                    assert!(p.is_null());
                    assert_eq!(n, 0);
                    seen.fetch_add(1, Ordering::SeqCst);
                }),
            )
        }
        .unwrap();
        assert!(b.is_empty());
        drop(b);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
