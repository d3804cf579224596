//! What a caller submits ([`TransferBatch`]) and what comes back: one [`TransferOutcome`] per
//! transfer in a [`TransferReport`], a failure carried as a [`TransferError`].

use crate::buffer::raw::RawBuffer;
use crate::buffer::UnifiedBuffer;
use crate::element::Element;
use crate::error::{check_len, Direction, Error, Result};
use crate::transfer::schedule::Priority;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// One transfer as added to a batch: its direction and the memory on both sides.
pub(super) enum Spec<'a> {
    Upload(&'a [u8], &'a mut RawBuffer),
    /// An upload from page-locked memory: the device reads it directly, no staging copy.
    UploadPinned(&'a [u8], &'a mut RawBuffer),
    Download(&'a RawBuffer, &'a mut [u8]),
    Copy(&'a RawBuffer, &'a mut RawBuffer),
}

impl Spec<'_> {
    pub(super) fn manager_ids(&self) -> (u64, Option<u64>) {
        match self {
            Spec::Upload(_, d) | Spec::UploadPinned(_, d) => (d.manager().id, None),
            Spec::Download(s, _) => (s.manager().id, None),
            Spec::Copy(_, d) => (d.manager().id, None),
        }
    }
}

/// A list of transfers to run together. Lengths are checked as transfers are added.
///
/// Several buffers in one batch, run by one
/// [`TransferEngine::execute`](super::TransferEngine::execute) call (small uploads are packed
/// into one submission):
///
/// ```
/// use dotcompute_memory::*;
/// # fn main() -> Result<()> {
/// let mm = MemoryManager::cpu();
/// let inputs: Vec<Vec<u32>> = (0..3).map(|k| vec![k; 256]).collect();
/// let mut buffers = (0..3).map(|_| mm.allocate::<u32>(256)).collect::<Result<Vec<_>>>()?;
///
/// let mut batch = TransferBatch::with_capacity(inputs.len());
/// for (src, dst) in inputs.iter().zip(buffers.iter_mut()) {
///     batch.upload(src, dst)?;
/// }
/// batch.with_priority(Priority::High);        // the last upload added starts first
/// let report = mm.transfer_engine().execute(batch, TransferOptions::default())?;
///
/// assert!(report.is_success());
/// assert_eq!(report.transfers.len(), 3);      // one outcome per transfer, by index
/// assert_eq!(report.total_bytes, 3 * 256 * 4);
/// assert_eq!(buffers[2].to_vec()?, inputs[2]);
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct TransferBatch<'a> {
    pub(super) items: Vec<(Spec<'a>, Option<Priority>)>,
}

impl std::fmt::Debug for TransferBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferBatch").field("transfers", &self.items.len()).finish()
    }
}

impl<'a> TransferBatch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        TransferBatch { items: Vec::new() }
    }

    /// An empty batch with room for `transfers` transfers (saves regrowing a large list). The
    /// room is a hint: when it cannot be reserved (`usize::MAX`, or more than memory holds) the
    /// batch starts empty and grows as transfers are added.
    pub fn with_capacity(transfers: usize) -> Self {
        let mut items = Vec::new();
        // A failed reservation leaves `items` empty and usable.
        let _ = items.try_reserve_exact(transfers);
        TransferBatch { items }
    }

    /// Number of transfers.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Host-to-device: `src` becomes `dst`'s device contents (`dst` ends `DeviceDirty`, or
    /// `DeviceOnly` if it has no host part... until read back).
    pub fn upload<T: Element>(&mut self, src: &'a [T], dst: &'a mut UnifiedBuffer<T>) -> Result<&mut Self> {
        check_len("upload", dst.len(), src.len())?;
        self.items.push((Spec::Upload(bytemuck::cast_slice(src), &mut dst.raw), None));
        Ok(self)
    }

    /// Host-to-device from page-locked memory: the device reads `src` directly, skipping the
    /// staging copy (in [`TransferEngine::execute`]; asynchronous execution stages it like any
    /// other source, because a leaked future must not leave the device reading user memory).
    ///
    /// [`TransferEngine::execute`]: super::TransferEngine::execute
    pub fn upload_pinned<T: Element>(
        &mut self,
        src: &'a crate::host::pinned::PinnedBuffer<T>,
        dst: &'a mut UnifiedBuffer<T>,
    ) -> Result<&mut Self> {
        let src: &'a [T] = src;
        check_len("upload_pinned", dst.len(), src.len())?;
        self.items.push((Spec::UploadPinned(bytemuck::cast_slice(src), &mut dst.raw), None));
        Ok(self)
    }

    /// Device-to-host: `src`'s current contents into `dst` (`src` is not changed).
    pub fn download<T: Element>(&mut self, src: &'a UnifiedBuffer<T>, dst: &'a mut [T]) -> Result<&mut Self> {
        check_len("download", src.len(), dst.len())?;
        self.items.push((Spec::Download(&src.raw, bytemuck::cast_slice_mut(dst)), None));
        Ok(self)
    }

    /// Device-to-device: `src`'s contents into `dst` (same length). `src` may belong to another
    /// manager, on another device: a peer copy, as
    /// [`UnifiedBuffer::copy_from_buffer`] makes it (direct or staged through host memory), whose
    /// report line names both devices ([`TransferOutcome::peer`]). `dst` must belong to the
    /// engine's manager.
    pub fn copy<T: Element>(&mut self, src: &'a UnifiedBuffer<T>, dst: &'a mut UnifiedBuffer<T>) -> Result<&mut Self> {
        check_len("copy", dst.len(), src.len())?;
        self.items.push((Spec::Copy(&src.raw, &mut dst.raw), None));
        Ok(self)
    }

    /// Sets the priority of the transfer added last.
    pub fn with_priority(&mut self, priority: Priority) -> &mut Self {
        if let Some(last) = self.items.last_mut() {
            last.1 = Some(priority);
        }
        self
    }
}

/// One transfer's result in a [`TransferReport`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransferOutcome {
    /// Position in the batch, in the order transfers were added.
    pub index: usize,
    /// Direction of the data movement.
    pub direction: Direction,
    /// Bytes moved (or that were to be moved, for a failure).
    pub bytes: u64,
    /// Most attempts any of its chunks needed.
    pub attempts: u32,
    /// Chunks it was cut into.
    pub chunks: u32,
    /// Packed with other small uploads into one staging fill.
    pub batched: bool,
    /// Position in which it was started (0 = first): priority order, then submission order.
    pub start_order: usize,
    /// Staged through the backend's page-locked memory (false: pageable staging or none).
    pub pinned_staging: bool,
    /// Its host bytes went through staging blocks (false: the device read or wrote the
    /// caller's memory directly, or no host memory was involved, or unified memory).
    pub staged: bool,
    /// The staged-or-direct decision came from this manager's measurements
    /// ([`StagingPolicy::Adaptive`]); false: a rule, the policy, or a first trial.
    ///
    /// [`StagingPolicy::Adaptive`]: crate::transfer::StagingPolicy::Adaptive
    pub staging_measured: bool,
    /// From its start to its completion.
    pub duration: Duration,
    /// Why it failed, if it did. A failed upload or copy leaves its destination buffer
    /// unchanged; a failed download may have written part of its destination slice.
    pub error: Option<TransferError>,
    /// For a copy from a buffer on another device: the two devices and the route.
    #[serde(default)]
    pub peer: Option<PeerCopy>,
}

/// A copy between two devices: their labels
/// ([`Backend::device_label`](crate::backend::Backend::device_label)) and whether the
/// destination read the source directly or the bytes were staged through host memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PeerCopy {
    /// The device the data came from.
    pub source: String,
    /// The device the data went to.
    pub destination: String,
    /// Direct (peer access, one device group); false: staged through host memory.
    pub direct: bool,
}

/// The successful peer copies of one batch between one pair of devices, by route.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerBandwidth {
    /// The devices and the route.
    pub pair: PeerCopy,
    /// Copies made.
    pub copies: usize,
    /// Bytes moved.
    pub bytes: u64,
    /// Sum of the copies' durations, in seconds.
    pub seconds: f64,
    /// `bytes / seconds`, in bytes per second.
    pub bandwidth: f64,
}

/// Why a transfer failed: the [`Error`] it failed with, and that error's message.
///
/// Match on [`TransferError::error`] for the kind (e.g. [`Error::is_transient`]). Report lines
/// are cloned and serialised, so the error is shared and serialises as its message; a line
/// deserialised from that form keeps the message only. Two are equal when their messages are.
#[derive(Debug, Clone)]
pub struct TransferError {
    error: Option<Arc<Error>>,
    message: String,
}

impl TransferError {
    /// The error the transfer failed with; `None` only for a report line deserialised from its
    /// message.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_deref()
    }

    /// The error's message (its `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<Arc<Error>> for TransferError {
    fn from(error: Arc<Error>) -> Self {
        TransferError { message: error.to_string(), error: Some(error) }
    }
}

impl From<Error> for TransferError {
    fn from(error: Error) -> Self {
        Arc::new(error).into()
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransferError {
    /// The cause of the error this one carries (its message is this one's).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.as_deref().and_then(std::error::Error::source)
    }
}

impl PartialEq for TransferError {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl serde::Serialize for TransferError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.message)
    }
}

impl<'de> serde::Deserialize<'de> for TransferError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let message = String::deserialize(deserializer)?;
        Ok(TransferError { error: None, message })
    }
}

/// What a batch did ([`TransferEngine::execute`](super::TransferEngine::execute)).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransferReport {
    /// Every transfer's outcome, by index.
    pub transfers: Vec<TransferOutcome>,
    /// Bytes moved by successful transfers.
    pub total_bytes: u64,
    /// `total_bytes` over `duration`, in bytes per second.
    pub average_bandwidth: f64,
    /// Number of failed transfers.
    pub failed: usize,
    /// Retries made (all transfers).
    pub retries: u32,
    /// Wall time of the whole batch.
    pub duration: Duration,
    /// Host-to-device bytes per second of wall time.
    pub host_to_device_bandwidth: f64,
    /// Device-to-host bytes per second of wall time.
    pub device_to_host_bandwidth: f64,
    /// Device-to-device bytes per second of wall time.
    pub device_to_device_bandwidth: f64,
    /// The small-transfer threshold used, in bytes.
    pub batch_threshold: usize,
    /// Whether that threshold came from measurements (false: the default or the option).
    pub batch_threshold_measured: bool,
    /// Transfers that went through batching.
    pub batched: usize,
    /// Transfers whose host bytes went through staging blocks.
    pub staged: usize,
    /// Queues used.
    pub queues_used: usize,
    /// Peer copies' bandwidth per pair of devices and route, in order of first appearance.
    #[serde(default)]
    pub peer_bandwidth: Vec<PeerBandwidth>,
}

impl TransferReport {
    /// True when no transfer failed.
    pub fn is_success(&self) -> bool {
        self.failed == 0
    }

    /// The failed transfers.
    pub fn failures(&self) -> impl Iterator<Item = &TransferOutcome> {
        self.transfers.iter().filter(|t| t.error.is_some())
    }
}
