//! The reference model: what each buffer should hold and the state each operation leads to.

use super::*;

/// One buffer as the model expects it. `epochs` is known when the expectation is a buffer
/// observed unchanged since; an operation that changes the buffer leaves it unknown.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expect {
    pub(crate) data: Vec<u32>,
    pub(crate) state: BufferState,
    pub(crate) epochs: Option<(u64, u64)>,
}

impl Expect {
    pub(crate) fn with(&self, state: BufferState, data: Vec<u32>) -> Expect {
        Expect { data, state, epochs: None }
    }

    /// `seen` (an observed buffer, epochs known) is what this expectation describes.
    pub(crate) fn allows(&self, seen: &Expect) -> bool {
        self.data == seen.data && self.state == seen.state && self.epochs.is_none_or(|e| Some(e) == seen.epochs)
    }

    /// The same buffer, changed only in state (contents kept).
    pub(crate) fn to_state(&self, state: BufferState) -> Expect {
        if state == self.state {
            self.clone()
        } else {
            self.with(state, self.data.clone())
        }
    }
}

/// Errors the model itself predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Want {
    LengthMismatch,
    Conflict,
}

pub(crate) enum Outcome {
    /// Success: the buffer afterwards, and the data the call returns (if it returns any).
    Ok(Expect, Option<Vec<u32>>),
    Fail(Want),
}

/// Makes the host part current (D2H when the device part is newer).
pub(crate) fn pull(s: BufferState) -> BufferState {
    match s {
        DeviceDirty | DeviceOnly => Synchronized,
        other => other,
    }
}

/// Makes the device part current (H2D when the host part is newer).
pub(crate) fn push(s: BufferState) -> BufferState {
    match s {
        HostOnly | HostDirty => Synchronized,
        other => other,
    }
}

/// A host write (after a pull, for a partial one): the host part is newest.
pub(crate) fn host_write(s: BufferState) -> BufferState {
    match s {
        HostOnly => HostOnly,
        _ => HostDirty,
    }
}

/// A device write (the device part made first if missing): the device part is newest.
pub(crate) fn device_write(s: BufferState) -> BufferState {
    match s {
        DeviceOnly => DeviceOnly,
        _ => DeviceDirty,
    }
}
