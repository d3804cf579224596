//! Allocation traces: what a recording manager records and exports, reading traces in both
//! formats (and every kind of malformed line), replaying them, and the traces kept in
//! `benches/traces/`.

mod files;
mod parse;
mod recording;
mod replay;

use crate::support::managers::quiet;
use dotcompute_memory::*;

/// A manager on a new cpu backend recording a trace of up to `capacity` events.
fn traced(capacity: usize) -> MemoryManager {
    let options = quiet().with_trace(Some(TraceOptions::default().with_capacity(capacity)));
    MemoryManager::with_backend(CpuBackend::new(), options).unwrap()
}

/// The peak of the sum of the sizes of the live buffers in `events` (in order), pairing each
/// free with the latest live allocation of its id; frees of other ids are skipped.
fn peak_live(events: &[TraceEvent]) -> u64 {
    let mut live = std::collections::HashMap::new();
    let (mut now, mut peak) = (0u64, 0u64);
    for e in events {
        match e.op {
            TraceOp::Alloc => {
                live.insert(e.id, e.bytes);
                now += e.bytes;
                peak = peak.max(now);
            }
            TraceOp::Free => now -= live.remove(&e.id).unwrap_or(0),
        }
    }
    peak
}
