//! The data rows move and the checks they make of it: byte patterns, page touches, and the
//! error a failed self-check returns.

use crate::CliError;
use std::hint::black_box;

/// Bytes of one page: the alignment of raw backend allocations and the stride of page touches.
pub(super) const PAGE: usize = 4096;

/// Writes one byte in every 4 KiB page (a store, no load: one write fault per lazily mapped
/// page), so the memory is really faulted in.
pub(super) fn touch_pages(bytes: &mut [u8]) {
    for i in (0..bytes.len()).step_by(PAGE) {
        bytes[i] = 1;
    }
    black_box(bytes);
}

/// `n` bytes counting up from `seed`, wrapping at 251 (a prime, so rows of one size differ).
pub(super) fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i + seed as usize) % 251) as u8).collect()
}

/// The error of a row whose side `what` produced data other than it should have.
pub(super) fn wrong_data(what: &str) -> CliError {
    CliError::Other(format!("benchmark self-check failed: {what} produced wrong data"))
}
