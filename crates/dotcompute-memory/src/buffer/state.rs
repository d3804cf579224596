//! The coherence model.
//!
//! A buffer has a host part and a device part; either may be absent. Each part has a
//! modification epoch: writing a part sets its epoch one past the larger of the two, and
//! synchronising copies the newer part over the older and sets the older epoch equal. The state
//! is derived from the epochs and from which parts exist, never stored:
//!
//! | parts        | epochs              | state          |
//! |--------------|---------------------|----------------|
//! | host only    | –                   | `HostOnly`     |
//! | device only  | –                   | `DeviceOnly`   |
//! | both         | host == device      | `Synchronized` |
//! | both         | host >  device      | `HostDirty`    |
//! | both         | device > host       | `DeviceDirty`  |
//!
//! Each method that changes a buffer's state says in its documentation which state it leaves.
//!
//! Declaring a device write while the host part has unsynchronised writes is a conflict
//! ([`Error::ConcurrentModification`](crate::Error::ConcurrentModification)): one side's data
//! would be lost, so the call fails and nothing changes.

/// Where a buffer's current data lives.
///
/// A buffer has a host part and a device part; either may be absent. Each part has a
/// modification epoch: writing a part sets its epoch one past the larger of the two, and
/// synchronising copies the newer part over the older and makes the epochs equal. The state
/// is derived from the epochs and from which parts exist:
///
/// | parts        | epochs              | state          |
/// |--------------|---------------------|----------------|
/// | host only    | –                   | `HostOnly`     |
/// | device only  | –                   | `DeviceOnly`   |
/// | both         | host == device      | `Synchronized` |
/// | both         | host >  device      | `HostDirty`    |
/// | both         | device > host       | `DeviceDirty`  |
///
/// Each method that changes the state says on its own documentation which state it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BufferState {
    /// Only the host part exists.
    HostOnly,
    /// Only the device part exists.
    DeviceOnly,
    /// Both parts exist and hold the same data.
    Synchronized,
    /// The host part was written since the last synchronisation (`copy_from`, `fill`,
    /// `as_mut_slice`); the device part is stale.
    HostDirty,
    /// The device part was written since the last synchronisation (a kernel through a device
    /// view, `copy_from_buffer`, `upload`); the host part is stale.
    DeviceDirty,
}

/// Modification epochs of the two parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Epochs {
    pub host: u64,
    pub device: u64,
}

impl Epochs {
    pub fn state(self, has_host: bool, has_device: bool) -> BufferState {
        match (has_host, has_device) {
            (true, false) | (false, false) => BufferState::HostOnly,
            (false, true) => BufferState::DeviceOnly,
            (true, true) => match self.host.cmp(&self.device) {
                std::cmp::Ordering::Equal => BufferState::Synchronized,
                std::cmp::Ordering::Greater => BufferState::HostDirty,
                std::cmp::Ordering::Less => BufferState::DeviceDirty,
            },
        }
    }

    /// The host part holds the newest data.
    pub fn host_current(self, has_host: bool, has_device: bool) -> bool {
        has_host && (!has_device || self.host >= self.device)
    }

    /// The device part holds the newest data.
    pub fn device_current(self, has_host: bool, has_device: bool) -> bool {
        has_device && (!has_host || self.device >= self.host)
    }

    pub fn host_written(self) -> Self {
        Epochs { host: self.host.max(self.device) + 1, device: self.device }
    }

    pub fn device_written(self) -> Self {
        Epochs { host: self.host, device: self.host.max(self.device) + 1 }
    }

    /// Host copy refreshed from the device.
    pub fn host_caught_up(self) -> Self {
        Epochs { host: self.device, device: self.device }
    }

    /// Device copy refreshed from the host.
    pub fn device_caught_up(self) -> Self {
        Epochs { host: self.host, device: self.host }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BufferState::*;

    #[test]
    fn state_table() {
        let e = Epochs::default();
        assert_eq!(e.state(true, false), HostOnly);
        assert_eq!(e.state(false, true), DeviceOnly);
        assert_eq!(e.state(true, true), Synchronized);
        assert_eq!(e.host_written().state(true, true), HostDirty);
        assert_eq!(e.device_written().state(true, true), DeviceDirty);
        assert_eq!(e.device_written().host_caught_up().state(true, true), Synchronized);
        assert_eq!(e.host_written().device_caught_up().state(true, true), Synchronized);
        // Writes after a sync win over older writes on the other side.
        let e = e.host_written().device_caught_up().device_written();
        assert_eq!(e.state(true, true), DeviceDirty);
        assert!(e.device_current(true, true) && !e.host_current(true, true));
        assert!(e.host_current(true, false) && e.device_current(false, true));
    }
}
