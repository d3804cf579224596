//! Test data: deterministic patterns in which neighbouring elements and different seeds differ,
//! so a copy to the wrong place or from the wrong source shows as wrong contents.

/// `len` bytes from `seed`.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8).collect()
}

/// `len` words from `seed`.
pub fn words(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32).map(|i| seed.wrapping_mul(2_654_435_761).wrapping_add(i)).collect()
}
