//! Per-buffer transfer counters: `BufferMetrics`, and the timing and recording of each transfer.

use super::{Extra, RawBuffer};
use crate::error::{Direction, Result};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// The cells behind a buffer's [`BufferMetrics`] transfer counters.
#[derive(Default)]
pub(super) struct TransferCells {
    h2d: Cell<u64>,
    d2h: Cell<u64>,
    d2d: Cell<u64>,
    bytes: Cell<u64>,
    time: Cell<Duration>,
    last_transfer: Cell<Option<Instant>>,
}

/// Per-buffer counters, as returned by `UnifiedBuffer::metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BufferMetrics {
    /// Transfers this buffer made (all directions).
    pub transfer_count: u64,
    /// Host-to-device transfers.
    pub host_to_device: u64,
    /// Device-to-host transfers.
    pub device_to_host: u64,
    /// Device-to-device copies into this buffer.
    pub device_to_device: u64,
    /// Bytes moved by those transfers.
    pub bytes_transferred: u64,
    /// Time spent in them (zero when statistics are disabled).
    pub transfer_time: Duration,
    /// Bytes per second over `transfer_time` (0 when nothing was timed).
    pub average_bandwidth: f64,
    /// Synchronisations that needed no copy because host and device share memory.
    pub skipped_syncs: u64,
    /// Accesses served without a transfer.
    pub cache_hits: u64,
    /// Accesses that needed a transfer first.
    pub cache_misses: u64,
    /// When the buffer's last transfer ended (`None` before the first, or with statistics
    /// disabled). Host accesses are not timestamped: they are the hot path, and a clock read
    /// would cost more than the access.
    pub last_transfer: Option<Instant>,
    /// The same value as `last_transfer`, under its former name.
    #[deprecated(note = "renamed to `last_transfer`: it records the last transfer, not the last access")]
    pub last_access: Option<Instant>,
}

impl BufferMetrics {
    /// `cache_hits / (cache_hits + cache_misses)`, or 0 with no accesses.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.cache_hits + self.cache_misses;
        if total == 0 {
            0.0
        } else {
            self.cache_hits as f64 / total as f64
        }
    }
}

impl RawBuffer {
    /// Runs one transfer, timing it and recording it in the buffer's and manager's counters.
    pub(super) fn transfer<R>(&self, direction: Direction, bytes: usize, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let (r, elapsed) = timed(self.mm.options.enable_statistics, f);
        if r.is_ok() {
            self.record(direction, bytes, elapsed);
        }
        r
    }

    pub(crate) fn record(&self, direction: Direction, bytes: usize, elapsed: Duration) {
        let m = &self.extra().transfers;
        let counter = match direction {
            Direction::HostToDevice => &m.h2d,
            Direction::DeviceToHost => &m.d2h,
            Direction::DeviceToDevice => &m.d2d,
        };
        counter.set(counter.get() + 1);
        m.bytes.set(m.bytes.get() + bytes as u64);
        m.time.set(m.time.get() + elapsed);
        if self.mm.options.enable_statistics {
            m.last_transfer.set(Some(Instant::now()));
        }
        self.mm.record_transfer(direction, bytes, elapsed);
    }

    #[inline]
    pub(crate) fn count_access(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.set(c.get() + 1);
    }

    pub(super) fn skipped_sync(&self) {
        let c = &self.extra().skipped_syncs;
        c.set(c.get() + 1);
    }

    pub(crate) fn metrics(&self) -> BufferMetrics {
        let none = Extra::default();
        let extra = self.extra.get().map_or(&none, |e| &**e);
        let m = &extra.transfers;
        let time = m.time.get();
        let bytes = m.bytes.get();
        BufferMetrics {
            transfer_count: m.h2d.get() + m.d2h.get() + m.d2d.get(),
            host_to_device: m.h2d.get(),
            device_to_host: m.d2h.get(),
            device_to_device: m.d2d.get(),
            bytes_transferred: bytes,
            transfer_time: time,
            average_bandwidth: if time.is_zero() { 0.0 } else { bytes as f64 / time.as_secs_f64() },
            skipped_syncs: extra.skipped_syncs.get(),
            cache_hits: self.hits.get(),
            cache_misses: self.misses.get(),
            last_transfer: m.last_transfer.get(),
            #[allow(deprecated)]
            last_access: m.last_transfer.get(),
        }
    }
}

/// Time a closure, returning its result and the elapsed time (zero when statistics are off).
pub(super) fn timed<R>(enabled: bool, f: impl FnOnce() -> R) -> (R, Duration) {
    if enabled {
        let t = Instant::now();
        let r = f();
        (r, t.elapsed())
    } else {
        (f(), Duration::ZERO)
    }
}
