//! The pieces the other files share: the `MTLBuffer` handle that may cross threads, a host
//! address handed to a completion handler, word alignment of blit ranges, and the errors.

use crate::error::Error;
use objc2::rc::Retained;
use objc2::runtime::ProtocolObject;
use objc2_metal::MTLBuffer;

/// The backend's name in errors and descriptions.
pub(super) const BACKEND: &str = "metal";

/// Blit offsets and sizes on macOS must be multiples of this (the `copyFromBuffer:` and
/// `fillBuffer:` documentation); every allocation's length is rounded up to it.
pub(super) const WORD: usize = 4;

/// `n` rounded up to a multiple of [`WORD`], `None` on overflow.
pub(super) fn round_up_to_word(n: usize) -> Option<usize> {
    n.checked_add(WORD - 1).map(|v| v & !(WORD - 1))
}

/// True when a blit may use `offset..offset + len` as it is.
pub(super) fn word_aligned(offset: usize, len: usize) -> bool {
    offset.is_multiple_of(WORD) && len.is_multiple_of(WORD)
}

/// One reference to an `MTLBuffer`.
#[derive(Clone)]
pub(super) struct Buffer(pub(super) Retained<ProtocolObject<dyn MTLBuffer>>);

// SAFETY: Metal resources are thread-safe objects (only command buffers and encoders are tied
// to one thread at a time while being encoded): the buffer may be retained, released, queried
// and passed to an encoder from any thread. The bytes behind `contents` are not guarded by the
// object; every access to them is ordered by the backend's own rules (see `contents`).
unsafe impl Send for Buffer {}
// SAFETY: as above; shared use only calls thread-safe methods.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// The CPU address of a shared-storage buffer's first byte, valid while the buffer lives.
    /// Never called on a private-storage buffer, which has no CPU address (`contents` returns
    /// null there).
    pub(super) fn contents(&self) -> *mut u8 {
        self.0.contents().as_ptr().cast()
    }

    /// The buffer's length in bytes.
    pub(super) fn length(&self) -> usize {
        self.0.length()
    }
}

/// A host address written by a completion handler, which runs on a Metal thread.
pub(super) struct HostPtr(*mut u8);

// SAFETY: the address is only written through by the one handler it is moved into, under the
// contract of `Backend::read_async` (the memory stays valid and unused by anyone else until
// the read's event has completed, which happens after the handler wrote it).
unsafe impl Send for HostPtr {}

impl HostPtr {
    pub(super) fn new(ptr: *mut u8) -> Self {
        HostPtr(ptr)
    }

    pub(super) fn get(&self) -> *mut u8 {
        self.0
    }
}

/// The error for a Metal call that returned nil where it documents no error.
pub(super) fn nil(operation: &'static str) -> Error {
    Error::Backend {
        backend: BACKEND,
        operation,
        code: 0,
        message: "Metal returned nil (resources exhausted or the device lost)".into(),
        transient: true,
    }
}

pub(super) fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: BACKEND.to_string(), reason: reason.into() }
}
