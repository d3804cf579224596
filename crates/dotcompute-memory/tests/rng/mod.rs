//! xorshift64: a small seeded generator, the same on every platform, for tests that need
//! reproducible random choices.

/// The generator's state; any odd value is a good seed.
pub struct Rng(pub u64);

#[allow(dead_code)]
impl Rng {
    /// A generator from any seed (mixed, then made odd).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
