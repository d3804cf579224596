//! The 64-byte header at the start of every shared segment: its layout constants, encoding,
//! and the validation that runs before anything is mapped.

use crate::element::{Element, TypeTag};
use crate::error::{byte_len, Error, Result};

/// Size of the header at the start of every segment.
pub const HEADER_SIZE: usize = 64;
/// The first eight bytes of every segment this crate creates.
pub const MAGIC: [u8; 8] = *b"DCMEMSHM";
/// The header layout version this build writes and accepts.
pub const LAYOUT_VERSION: u32 = 1;

/// The validated header of a shared segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedHeader {
    /// Layout version ([`LAYOUT_VERSION`]).
    pub version: u32,
    /// Element type tag ([`TypeTag::id`]).
    pub type_id: u32,
    /// Element size in bytes.
    pub elem_size: u32,
    /// Element alignment in bytes.
    pub elem_align: u32,
    /// Number of elements.
    pub len: u64,
    /// Offset of the first element from the start of the segment.
    pub data_offset: u64,
    /// Process id of the creator.
    pub creator_pid: u32,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl SharedHeader {
    /// The header for `len` elements of `T` created by `creator_pid`.
    ///
    /// Errors: [`Error::LengthOverflow`]; [`Error::InvalidAlignment`] when `T` needs more
    /// alignment than a page (the segment mapping guarantees no more).
    pub fn for_type<T: Element>(len: usize, creator_pid: u32) -> Result<Self> {
        let bytes = byte_len::<T>(len)?;
        let align = std::mem::align_of::<T>();
        if align > 4096 {
            return Err(Error::InvalidAlignment {
                alignment: align,
                type_name: std::any::type_name::<T>(),
                element_align: align,
                reason: "shared buffers support element alignments up to 4096 bytes",
            });
        }
        let data_offset = HEADER_SIZE.max(align);
        let overflow = Error::LengthOverflow {
            len,
            element_size: std::mem::size_of::<T>(),
            type_name: std::any::type_name::<T>(),
        };
        bytes.checked_add(data_offset).filter(|&t| t <= isize::MAX as usize).ok_or(overflow)?;
        Ok(SharedHeader {
            version: LAYOUT_VERSION,
            type_id: T::TYPE_TAG.id,
            elem_size: std::mem::size_of::<T>() as u32,
            elem_align: align as u32,
            len: len as u64,
            data_offset: data_offset as u64,
            creator_pid,
        })
    }

    /// Total segment size: data offset plus the data (saturating at `u64::MAX` for
    /// headers that [`SharedHeader::parse`] would reject).
    pub fn segment_size(&self) -> u64 {
        self.len.saturating_mul(u64::from(self.elem_size)).saturating_add(self.data_offset)
    }

    /// The 64 header bytes, checksum included.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.type_id.to_le_bytes());
        b[20..24].copy_from_slice(&self.elem_size.to_le_bytes());
        b[24..28].copy_from_slice(&self.elem_align.to_le_bytes());
        // 28..32 flags, 0
        b[32..40].copy_from_slice(&self.len.to_le_bytes());
        b[40..48].copy_from_slice(&self.data_offset.to_le_bytes());
        b[48..52].copy_from_slice(&self.creator_pid.to_le_bytes());
        // 52..56 reserved, 0
        let sum = fnv1a(&b[..56]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses and validates the header of segment `name`, given the first bytes of the
    /// segment (at most [`HEADER_SIZE`] are read) and the segment's size. Does not check the
    /// element type (see [`SharedHeader::check_type`]). Never panics, whatever the bytes.
    ///
    /// Errors: [`Error::SharedCorrupt`] naming the field and the values.
    pub fn parse(name: &str, bytes: &[u8], segment_size: u64) -> Result<Self> {
        let corrupt = |field: &'static str, expected: String, found: String| Error::SharedCorrupt {
            name: name.to_string(),
            field,
            expected,
            found,
        };
        if bytes.len() < HEADER_SIZE || segment_size < HEADER_SIZE as u64 {
            return Err(corrupt(
                "segment size",
                format!("at least {HEADER_SIZE} bytes (the header)"),
                format!("{} bytes (truncated segment)", segment_size.min(bytes.len() as u64)),
            ));
        }
        let b = &bytes[..HEADER_SIZE];
        if b[..8] != MAGIC {
            let found = if b[..8].iter().all(|&x| x == 0) {
                "all zero (the creator has not finished writing the header, or crashed while creating it)".to_string()
            } else {
                format!("{:?}", String::from_utf8_lossy(&b[..8]))
            };
            return Err(corrupt("magic", format!("{:?}", "DCMEMSHM"), found));
        }
        let version = u32_at(b, 8);
        if version != LAYOUT_VERSION {
            return Err(corrupt("layout version", LAYOUT_VERSION.to_string(), version.to_string()));
        }
        let header_size = u32_at(b, 12);
        if header_size as usize != HEADER_SIZE {
            return Err(corrupt("header size", HEADER_SIZE.to_string(), header_size.to_string()));
        }
        let stored = u64_at(b, 56);
        let computed = fnv1a(&b[..56]);
        if stored != computed {
            return Err(corrupt("checksum", format!("{computed:#018x}"), format!("{stored:#018x}")));
        }
        let h = SharedHeader {
            version,
            type_id: u32_at(b, 16),
            elem_size: u32_at(b, 20),
            elem_align: u32_at(b, 24),
            len: u64_at(b, 32),
            data_offset: u64_at(b, 40),
            creator_pid: u32_at(b, 48),
        };
        if !h.elem_align.is_power_of_two() || h.elem_align > 4096 {
            return Err(corrupt("element alignment", "a power of two up to 4096".into(), h.elem_align.to_string()));
        }
        if h.data_offset < HEADER_SIZE as u64 || !h.data_offset.is_multiple_of(u64::from(h.elem_align)) {
            return Err(corrupt(
                "data offset",
                format!("at least {HEADER_SIZE} and a multiple of {}", h.elem_align),
                h.data_offset.to_string(),
            ));
        }
        let needed = h.len.checked_mul(u64::from(h.elem_size)).and_then(|d| d.checked_add(h.data_offset));
        match needed {
            Some(n) if n <= segment_size => Ok(h),
            _ => Err(corrupt(
                "length",
                format!(
                    "at most {} elements of {} bytes (segment is {segment_size} bytes)",
                    {
                        let room = segment_size.saturating_sub(h.data_offset);
                        room.checked_div(u64::from(h.elem_size)).unwrap_or(u64::MAX)
                    },
                    h.elem_size
                ),
                format!("{} elements", h.len),
            )),
        }
    }

    /// Checks that the segment holds `T`s: same type tag, size and alignment.
    ///
    /// Errors: [`Error::SharedTypeMismatch`] with both sides' tag and size.
    pub fn check_type<T: Element>(&self, name: &str) -> Result<()> {
        let tag: TypeTag = T::TYPE_TAG;
        let size = std::mem::size_of::<T>() as u32;
        let align = std::mem::align_of::<T>() as u32;
        if self.type_id != tag.id || self.elem_size != size || self.elem_align != align {
            return Err(Error::SharedTypeMismatch {
                name: name.to_string(),
                expected_type: tag.name,
                expected_id: tag.id,
                expected_size: size,
                found_id: self.type_id,
                found_size: self.elem_size,
            });
        }
        if self.data_offset != HEADER_SIZE.max(align as usize) as u64 {
            return Err(Error::SharedCorrupt {
                name: name.to_string(),
                field: "data offset",
                expected: HEADER_SIZE.max(align as usize).to_string(),
                found: self.data_offset.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = SharedHeader::for_type::<f64>(1000, 42).unwrap();
        assert_eq!(h.data_offset, 64);
        assert_eq!(h.segment_size(), 64 + 8000);
        let b = h.encode();
        assert_eq!(SharedHeader::parse("x", &b, h.segment_size()).unwrap(), h);
        h.check_type::<f64>("x").unwrap();
        let err = h.check_type::<u64>("x").unwrap_err();
        assert!(matches!(err, Error::SharedTypeMismatch { found_id: 10, expected_id: 7, .. }), "{err:?}");
    }

    #[test]
    fn corrupt_headers_name_the_field() {
        let h = SharedHeader::for_type::<u32>(10, 1).unwrap();
        let good = h.encode();
        let field = |bytes: &[u8], size: u64| match SharedHeader::parse("seg", bytes, size) {
            Err(Error::SharedCorrupt { field, name, .. }) => {
                assert_eq!(name, "seg");
                field
            }
            other => panic!("expected SharedCorrupt, got {other:?}"),
        };
        assert_eq!(field(&good[..10], 10), "segment size");
        assert_eq!(field(&good, 32), "segment size");
        let mut b = good;
        b[0] = b'X';
        assert_eq!(field(&b, 104), "magic");
        assert_eq!(field(&[0u8; 64], 104), "magic");
        let mut b = good;
        b[8] = 2;
        assert_eq!(field(&b, 104), "layout version");
        let mut b = good;
        b[33] = 1; // len changed without a new checksum
        assert_eq!(field(&b, 104), "checksum");
        // A consistent header whose length exceeds the segment.
        let big = SharedHeader { len: 1000, ..h };
        assert_eq!(field(&big.encode(), 104), "length");
        let huge = SharedHeader { len: u64::MAX, ..h };
        assert_eq!(field(&huge.encode(), u64::MAX), "length");
        let odd = SharedHeader { data_offset: 65, ..h };
        assert_eq!(field(&odd.encode(), 1000), "data offset");
        let bad_align = SharedHeader { elem_align: 3, ..h };
        assert_eq!(field(&bad_align.encode(), 1000), "element alignment");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: if cfg!(miri) { 8 } else { 512 },
            failure_persistence: None,
            ..Default::default()
        })]
        /// Arbitrary bytes (and arbitrary mutations of a valid header) never panic the parser,
        /// and whatever it accepts fits the segment.
        #[test]
        fn parse_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            flip in 0usize..64,
            value in proptest::prelude::any::<u8>(),
            size in proptest::prelude::any::<u64>(),
        ) {
            if let Ok(h) = SharedHeader::parse("p", &bytes, size) {
                proptest::prop_assert!(h.segment_size() <= size);
            }
            let mut b = SharedHeader::for_type::<u16>(7, 3).unwrap().encode();
            b[flip] = value;
            if let Ok(h) = SharedHeader::parse("p", &b, size) {
                proptest::prop_assert!(h.data_offset + h.len * u64::from(h.elem_size) <= size);
            }
        }
    }
}
