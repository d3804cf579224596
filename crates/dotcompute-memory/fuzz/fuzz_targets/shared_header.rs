//! Fuzzes the shared-memory header parser: any bytes and any claimed segment size must give
//! either a header that fits the segment or a SharedCorrupt error, never a panic.
//!
//! Run: `cd crates/dotcompute-memory/fuzz && cargo +nightly fuzz run shared_header -- -max_total_time=60`
#![no_main]

use dotcompute_memory::{Error, SharedHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], u64)| {
    let (bytes, size) = input;
    match SharedHeader::parse("fuzz", bytes, size) {
        Ok(h) => {
            assert!(h.segment_size() <= size);
            assert!(h.data_offset >= 64 && h.elem_align.is_power_of_two());
            // Re-encoding a valid header gives back the same header.
            assert_eq!(SharedHeader::parse("fuzz", &h.encode(), size).unwrap(), h);
            let _ = h.check_type::<f32>("fuzz");
        }
        Err(Error::SharedCorrupt { .. }) => {}
        Err(other) => panic!("unexpected error kind {other:?}"),
    }
});
