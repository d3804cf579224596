//! Bad inputs, on every backend: specific errors, nothing changed.

use crate::support::{in_state, snapshot, Ctx, STATES};
use dotcompute_memory::*;

#[allow(clippy::reversed_empty_ranges)]
pub fn bad_lengths_and_ranges(ctx: &Ctx) {
    for state in STATES {
        let at = format!("{} in {state:?}", ctx.at());
        let data: Vec<u32> = (0..16).collect();
        let mut b = in_state(&ctx.mm, &data, state);
        let before = snapshot(&b);
        assert!(matches!(b.copy_from(&[0; 15]), Err(Error::LengthMismatch { expected: 16, actual: 15, .. })), "{at}");
        assert!(matches!(b.copy_from(&[0; 17]), Err(Error::LengthMismatch { expected: 16, actual: 17, .. })), "{at}");
        assert!(matches!(b.copy_to(&mut [0; 3]), Err(Error::LengthMismatch { expected: 16, actual: 3, .. })), "{at}");
        let r = pollster::block_on(b.copy_from_async(&[1; 20]));
        assert!(matches!(r, Err(Error::LengthMismatch { expected: 16, actual: 20, .. })), "{at}");
        assert!(matches!(b.slice(3..17), Err(Error::OutOfRange { start: 3, end: 17, len: 16 })), "{at}");
        assert!(matches!(b.slice_mut(9..4), Err(Error::ReversedRange { start: 9, end: 4 })), "{at}");
        assert!(matches!(b.slice(17..), Err(Error::OutOfRange { start: 17, .. })), "{at}");
        let view = b.slice(4..8).unwrap();
        assert!(matches!(view.slice(2..5), Err(Error::OutOfRange { start: 2, end: 5, len: 4 })), "{at}");
        assert!(matches!(b.slice_mut(4..8).unwrap().fill(1).map(|_| ()), Ok(())), "{at}");
        // The fill above was a real write; undo it to compare the rest.
        b.slice_mut(4..8).unwrap().copy_from(&before.contents[4..8]).unwrap();
        assert_eq!(b.to_vec().unwrap(), before.contents, "{at}");
        let mut b2 = in_state(&ctx.mm, &data[..15], state);
        let before2 = snapshot(&b2);
        let short = ctx.mm.allocate_from(&[0u32; 8]).unwrap();
        let r = b2.copy_from_buffer(&short);
        assert!(matches!(r, Err(Error::LengthMismatch { expected: 15, actual: 8, .. })), "{at}: {r:?}");
        let (b2, err) = b2.try_cast::<u64>().unwrap_err();
        assert!(matches!(err, Error::CastMismatch { len: 15, from_size: 4, to_size: 8, .. }), "{at}: {err:?}");
        assert_eq!(snapshot(&b2), before2, "{at}");
    }
}

pub fn zero_length_buffers(ctx: &Ctx) {
    let mut a = ctx.mm.allocate::<f64>(0).unwrap();
    let b = ctx.mm.allocate::<f64>(0).unwrap();
    assert!(a.is_empty() && a.as_slice().unwrap().is_empty(), "{}", ctx.at());
    a.copy_from(&[]).unwrap();
    a.ensure_on_device().unwrap();
    a.mark_device_dirty().unwrap();
    a.copy_from_buffer(&b).unwrap();
    a.synchronize().unwrap();
    pollster::block_on(a.copy_from_async(&[])).unwrap();
    a.release_device_part().unwrap();
    assert!(a.to_vec().unwrap().is_empty());
    assert!(matches!(a.slice(0..1), Err(Error::OutOfRange { start: 0, end: 1, len: 0 })));
    let s = ctx.mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (2, 0), "{}", ctx.at());
}
