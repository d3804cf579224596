//! `AddressReservation`: a range of address space with no memory behind it, whose pages are
//! committed (made readable and writable, memory given on first touch) and decommitted (memory
//! returned, pages inaccessible again) piece by piece. What the cpu backend's expandable
//! segments grow in. Unix only; under Miri, which cannot make these calls, it reports
//! `Unsupported`.

use crate::error::{Error, Result};
use std::ptr::NonNull;

/// A reserved address range. Dropping it unmaps the whole range.
#[derive(Debug)]
pub struct AddressReservation {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the reservation owns its mapping like a Box owns its memory; the pages are touched only
// through pointers handed out under the owner's rules.
unsafe impl Send for AddressReservation {}
// SAFETY: `&AddressReservation` gives the address and (de)commits pages, which the kernel
// serialises; it never reads or writes the memory itself.
unsafe impl Sync for AddressReservation {}

impl AddressReservation {
    /// Reserves `len` bytes of address space (rounded up to whole pages), none of it accessible.
    pub fn new(len: usize) -> Result<Self> {
        imp::reserve(len)
    }

    /// First byte of the range.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Bytes reserved.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty reservation (never made: `new` rounds up to a page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        let page = super::os::page_size();
        match offset.checked_add(len) {
            Some(end) if end <= self.len && offset.is_multiple_of(page) && len.is_multiple_of(page) => Ok(()),
            _ => Err(Error::InvalidArgument {
                option: "reservation range",
                value: format!("{offset}..{} of {} bytes", offset.saturating_add(len), self.len),
                reason: "must lie inside the reservation and start and end on page boundaries",
            }),
        }
    }

    /// Makes `offset..offset + len` (whole pages) readable and writable; its memory is given on
    /// first touch and reads as zero.
    pub fn commit(&self, offset: usize, len: usize) -> Result<()> {
        self.check(offset, len)?;
        imp::protect(self, offset, len, true)
    }

    /// Returns the memory of `offset..offset + len` (whole pages) and makes it inaccessible; a
    /// later commit gives zeroed pages.
    pub fn decommit(&self, offset: usize, len: usize) -> Result<()> {
        self.check(offset, len)?;
        imp::decommit(self, offset, len)
    }
}

#[cfg(all(unix, not(miri)))]
mod imp {
    use super::AddressReservation;
    use crate::error::{Error, Result};
    use crate::host::os;
    use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
    use std::ptr::NonNull;

    pub(super) fn reserve(len: usize) -> Result<AddressReservation> {
        let page = os::page_size();
        let len = len.checked_next_multiple_of(page).filter(|&l| l > 0).ok_or(Error::InvalidArgument {
            option: "reservation length",
            value: len.to_string(),
            reason: "must be at least 1 byte and at most usize::MAX rounded down to a page",
        })?;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing aliases
        // nothing; PROT_NONE with NORESERVE takes no memory and no swap.
        let raw = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| os::os_error("mmap(PROT_NONE)", format!("{len} bytes of address space"), e))?;
        let base = NonNull::new(raw.cast::<u8>()).ok_or(Error::allocator_out_of_memory("host", len as u64, 0))?;
        Ok(AddressReservation { base, len })
    }

    pub(super) fn protect(r: &AddressReservation, offset: usize, len: usize, access: bool) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let flags = if access { MprotectFlags::READ | MprotectFlags::WRITE } else { MprotectFlags::empty() };
        // SAFETY: the range lies inside the reservation (checked by the caller), which this
        // process owns; changing its protection touches no Rust-visible memory.
        unsafe { rustix::mm::mprotect(r.base.as_ptr().add(offset).cast(), len, flags) }.map_err(|e| {
            if e == rustix::io::Errno::NOMEM {
                Error::allocator_out_of_memory("host", len as u64, 0)
            } else {
                os::os_error("mprotect", format!("{len} bytes at offset {offset} of a reservation"), e)
            }
        })
    }

    pub(super) fn decommit(r: &AddressReservation, offset: usize, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        // Replacing the pages with a fresh PROT_NONE mapping returns their memory at once (as
        // MADV_DONTNEED would) and makes them inaccessible, on every Unix.
        // SAFETY: MAP_FIXED over a range inside our own reservation, to which the caller holds
        // no live reference (it decommits only memory no buffer uses).
        unsafe {
            rustix::mm::mmap_anonymous(
                r.base.as_ptr().add(offset).cast(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED,
            )
        }
        .map(|_| ())
        .map_err(|e| os::os_error("mmap(MAP_FIXED, PROT_NONE)", format!("{len} bytes at offset {offset}"), e))
    }

    impl Drop for AddressReservation {
        fn drop(&mut self) {
            // SAFETY: the reservation owns the whole mapping, and nothing refers to it any more.
            let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
        }
    }
}

#[cfg(not(all(unix, not(miri))))]
mod imp {
    use super::AddressReservation;
    use crate::error::{Error, Result};

    const WHY: &str = "reserving address space needs mmap (Unix, and not under Miri)";

    pub(super) fn reserve(_len: usize) -> Result<AddressReservation> {
        Err(Error::Unsupported { operation: "AddressReservation::new", reason: WHY })
    }

    pub(super) fn protect(_: &AddressReservation, _: usize, _: usize, _: bool) -> Result<()> {
        Err(Error::Unsupported { operation: "AddressReservation::commit", reason: WHY })
    }

    pub(super) fn decommit(_: &AddressReservation, _: usize, _: usize) -> Result<()> {
        Err(Error::Unsupported { operation: "AddressReservation::decommit", reason: WHY })
    }
}

#[cfg(all(test, unix, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn committed_pages_read_zero_and_keep_writes_until_decommitted() {
        let page = crate::host::os::page_size();
        let r = AddressReservation::new(64 * page).unwrap();
        assert_eq!(r.len(), 64 * page);
        r.commit(8 * page, 4 * page).unwrap();
        // SAFETY: pages 8..12 are committed and owned by this test.
        let bytes = unsafe { std::slice::from_raw_parts_mut(r.base().as_ptr().add(8 * page), 4 * page) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes.fill(7);
        assert!(bytes.iter().all(|&b| b == 7));
        r.decommit(8 * page, 4 * page).unwrap();
        r.commit(8 * page, 4 * page).unwrap();
        // SAFETY: committed again; the earlier slice is not used any more.
        let again = unsafe { std::slice::from_raw_parts(r.base().as_ptr().add(8 * page), 4 * page) };
        assert!(again.iter().all(|&b| b == 0), "decommitted memory comes back zeroed");
        let err = r.commit(63 * page, 2 * page).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { option: "reservation range", .. }), "{err:?}");
        assert!(matches!(r.commit(1, page), Err(Error::InvalidArgument { .. })));
    }
}
