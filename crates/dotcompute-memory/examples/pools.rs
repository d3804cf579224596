//! Reusing objects and arrays instead of allocating them: an `ObjectPool` of scratch vectors
//! (reset on return, capped at `max_size`) and an `ArrayPool` that rents arrays by size class.
//!
//! Run: `cargo run -p dotcompute-memory --example pools`.

use dotcompute_memory::{ArrayPool, ArrayPoolOptions, ObjectPool, Result};

fn main() -> Result<()> {
    // Scratch vectors: created on demand, cleared when they come back, at most 8 kept.
    let scratch =
        ObjectPool::builder(|| Vec::<u8>::with_capacity(64 << 10)).reset(|v| v.clear()).max_size(8).build()?;
    for round in 0..1000u32 {
        let mut v = scratch.get(); // a guard: the vector goes back to the pool when it drops
        v.extend_from_slice(&round.to_le_bytes());
        assert_eq!(v.len(), 4, "reset cleared the previous round's bytes");
    }
    let stats = scratch.statistics();
    println!("object pool: {stats:?}");

    // Arrays by size class: a request of 1000 is served from the 1024 class.
    let arrays = ArrayPool::<f32>::new(ArrayPoolOptions::default());
    for _ in 0..1000 {
        let mut a = arrays.rent(1000)?;
        a[0] = 1.0;
        assert_eq!(a.len(), 1000);
    }
    println!("array pool: {:?}", arrays.statistics());

    // Bad input is an error, not a panic.
    let err = arrays.rent(usize::MAX).unwrap_err();
    println!("renting usize::MAX elements: {err}");
    Ok(())
}
