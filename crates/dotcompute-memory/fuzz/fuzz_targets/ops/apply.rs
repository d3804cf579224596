//! Applying one operation to a buffer and the model, and checking the outcome.

use super::*;

/// Runs `call` on the buffer in `slot` (if any) and moves its model on.
/// `settles`: the call settles pending work on the buffer before anything else can fail.
pub(crate) fn single(
    env: &Env,
    slots: &mut [Option<Slot>; SLOTS],
    slot: u8,
    settles: bool,
    expect: &dyn Fn(&Expect) -> Outcome,
    call: impl FnOnce(&mut UnifiedBuffer<u32>) -> Result<Option<Vec<u32>>>,
    ctx: &dyn Fn() -> String,
) {
    let Some(s) = slots[slot_of(slot)].as_mut() else { return };
    let result = call(&mut s.buf);
    s.cands = next_cands_checked(env, &s.cands, &result, expect, ctx);
    if settles {
        s.pending = false;
    }
    check(env, s, ctx);
}

/// An asynchronous call: awaited like a synchronous one, or dropped (then the buffer may end up
/// either way, decided when the transfer is settled).
pub(crate) fn asynchronous(
    env: &Env,
    slots: &mut [Option<Slot>; SLOTS],
    slot: u8,
    expect: &dyn Fn(&Expect) -> Outcome,
    call: impl FnOnce(&mut UnifiedBuffer<u32>) -> Option<Result<Option<Vec<u32>>>>,
    ctx: &dyn Fn() -> String,
) {
    let Some(s) = slots[slot_of(slot)].as_mut() else { return };
    match call(&mut s.buf) {
        Some(result) => {
            s.cands = next_cands_checked(env, &s.cands, &result, expect, ctx);
            s.pending = false;
            check(env, s, ctx);
        }
        None => {
            let mut all = s.cands.clone();
            all.extend(s.cands.iter().filter_map(|c| match expect(c) {
                Outcome::Ok(n, _) => Some(n),
                Outcome::Fail(_) => None,
            }));
            s.cands = dedup(all);
            s.pending = true;
        }
    }
}

pub(crate) fn apply(
    mm: &MemoryManager,
    env: &Env,
    slots: &mut [Option<Slot>; SLOTS],
    op: Op,
    ctx: &dyn Fn() -> String,
) {
    let len_of = |slots: &[Option<Slot>; SLOTS], i: u8| slots[slot_of(i)].as_ref().map(|s| s.buf.len());
    match op {
        Op::Allocate { slot, len, kind } => {
            let len = len as usize % (MAX_LEN + 1);
            slots[slot_of(slot)] = None;
            let r = match kind {
                AllocKind::Plain => mm.allocate::<u32>(len),
                AllocKind::Zeroed => mm.allocate_zeroed::<u32>(len),
                AllocKind::From(seed) => mm.allocate_from(&pattern(seed, len)),
                AllocKind::Device => mm.allocate_device::<u32>(len),
            };
            let buf = match r {
                Ok(b) => b,
                Err(e) => {
                    assert!(matches!(classify(env, &e, ctx), ErrClass::Environment), "{}: {e:?}", ctx());
                    return;
                }
            };
            assert_eq!(buf.len(), len, "{}", ctx());
            let seen = observe(env, &buf, true, ctx);
            let state = match kind {
                AllocKind::Device if len > 0 => DeviceOnly,
                _ => HostOnly,
            };
            assert_eq!(seen.state, state, "{}: state of a new buffer", ctx());
            match kind {
                AllocKind::Zeroed => assert_eq!(seen.data, vec![0; len], "{}", ctx()),
                AllocKind::From(seed) => assert_eq!(seen.data, pattern(seed, len), "{}", ctx()),
                AllocKind::Plain | AllocKind::Device => {} // unspecified contents
            }
            slots[slot_of(slot)] = Some(Slot { buf, cands: vec![seen], pending: false });
        }
        Op::Drop { slot } => slots[slot_of(slot)] = None,
        Op::CopyFrom { slot, seed, wrong_len } => {
            let Some(len) = len_of(slots, slot) else { return };
            let data = pattern(seed, len + wrong_len as usize);
            let expect = |c: &Expect| {
                if wrong_len {
                    Outcome::Fail(Want::LengthMismatch)
                } else {
                    Outcome::Ok(c.with(host_write(c.state), data.clone()), None)
                }
            };
            single(env, slots, slot, !wrong_len, &expect, |b| b.copy_from(&data).map(|()| None), ctx);
        }
        Op::CopyTo { slot, wrong_len } => {
            let Some(len) = len_of(slots, slot) else { return };
            let expect = |c: &Expect| {
                if wrong_len {
                    Outcome::Fail(Want::LengthMismatch)
                } else {
                    Outcome::Ok(c.clone(), Some(c.data.clone()))
                }
            };
            let call = |b: &mut UnifiedBuffer<u32>| {
                let mut out = vec![u32::MAX; len + wrong_len as usize];
                b.copy_to(&mut out).map(|()| Some(out))
            };
            single(env, slots, slot, !wrong_len, &expect, call, ctx);
        }
        Op::AsSlice { slot } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(pull(c.state)), Some(c.data.clone()));
            single(env, slots, slot, true, &expect, |b| b.as_slice().map(|s| Some(s.to_vec())), ctx);
        }
        Op::WriteMutSlice { slot, at, value } => {
            let Some(len) = len_of(slots, slot) else { return };
            let expect = |c: &Expect| {
                let mut data = c.data.clone();
                if len > 0 {
                    data[at as usize % len] = value;
                }
                Outcome::Ok(c.with(host_write(c.state), data), None)
            };
            let call = |b: &mut UnifiedBuffer<u32>| {
                b.as_mut_slice().map(|s| {
                    if len > 0 {
                        s[at as usize % len] = value;
                    }
                    None
                })
            };
            single(env, slots, slot, true, &expect, call, ctx);
        }
        Op::Fill { slot, value } => {
            let expect = |c: &Expect| Outcome::Ok(c.with(host_write(c.state), vec![value; c.data.len()]), None);
            single(env, slots, slot, true, &expect, |b| b.fill(value).map(|()| None), ctx);
        }
        Op::Upload { slot, seed } => {
            let Some(len) = len_of(slots, slot) else { return };
            let data = pattern(seed, len);
            let expect = |c: &Expect| {
                if len == 0 {
                    Outcome::Ok(c.clone(), None)
                } else {
                    Outcome::Ok(c.with(device_write(c.state), data.clone()), None)
                }
            };
            single(env, slots, slot, true, &expect, |b| b.upload(&data).map(|()| None), ctx);
        }
        Op::Synchronize { slot } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(Synchronized), None);
            single(env, slots, slot, true, &expect, |b| b.synchronize().map(|()| None), ctx);
        }
        Op::EnsureOnDevice { slot } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(push(c.state)), None);
            single(env, slots, slot, true, &expect, |b| b.ensure_on_device().map(|()| None), ctx);
        }
        Op::EnsureOnHost { slot } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(pull(c.state)), None);
            single(env, slots, slot, true, &expect, |b| b.ensure_on_host().map(|()| None), ctx);
        }
        Op::MarkDeviceDirty { slot } => {
            let expect = |c: &Expect| match c.state {
                HostDirty => Outcome::Fail(Want::Conflict),
                // device_written bumps the device epoch even when the state stays the same.
                s => Outcome::Ok(c.with(device_write(s), c.data.clone()), None),
            };
            single(env, slots, slot, true, &expect, |b| b.mark_device_dirty().map(|()| None), ctx);
        }
        Op::Compact { slot } => {
            // The device epoch is set to the host's even when the state stays HostOnly.
            let expect = |c: &Expect| Outcome::Ok(c.with(HostOnly, c.data.clone()), None);
            single(env, slots, slot, true, &expect, |b| b.release_device_part().map(|()| None), ctx);
        }
        Op::SliceCopyTo { slot, span, inner } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let (is, ie) = inner.resolve(e - s);
            let expect = |c: &Expect| Outcome::Ok(c.clone(), Some(c.data[s + is..s + ie].to_vec()));
            let call = |b: &mut UnifiedBuffer<u32>| {
                let view = b.slice(s..e)?.slice(is..ie)?;
                assert_eq!((view.offset(), view.len()), (s + is, ie - is));
                view.to_vec().map(Some)
            };
            single(env, slots, slot, true, &expect, call, ctx);
        }
        Op::SliceAsSlice { slot, span } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let expect = |c: &Expect| Outcome::Ok(c.to_state(pull(c.state)), Some(c.data[s..e].to_vec()));
            single(env, slots, slot, true, &expect, |b| b.slice(s..e)?.as_slice().map(|v| Some(v.to_vec())), ctx);
        }
        Op::SliceMutCopyFrom { slot, span, seed } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let data = pattern(seed, e - s);
            let expect = |c: &Expect| {
                if s == e && len > 0 {
                    return Outcome::Ok(c.clone(), None);
                }
                let mut d = c.data.clone();
                d[s..e].copy_from_slice(&data);
                Outcome::Ok(c.with(host_write(c.state), d), None)
            };
            single(env, slots, slot, true, &expect, |b| b.slice_mut(s..e)?.copy_from(&data).map(|()| None), ctx);
        }
        Op::SliceMutFill { slot, span, value } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let expect = |c: &Expect| {
                if s == e && len > 0 {
                    return Outcome::Ok(c.clone(), None);
                }
                let mut d = c.data.clone();
                d[s..e].fill(value);
                Outcome::Ok(c.with(host_write(c.state), d), None)
            };
            single(env, slots, slot, true, &expect, |b| b.slice_mut(s..e)?.fill(value).map(|()| None), ctx);
        }
        Op::SliceMutWrite { slot, span, seed } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let data = pattern(seed, e - s);
            let expect = |c: &Expect| {
                let mut d = c.data.clone();
                d[s..e].copy_from_slice(&data);
                Outcome::Ok(c.with(host_write(c.state), d), None)
            };
            let call = |b: &mut UnifiedBuffer<u32>| {
                let mut view = b.slice_mut(s..e)?;
                view.as_mut_slice()?.copy_from_slice(&data);
                Ok(None)
            };
            single(env, slots, slot, true, &expect, call, ctx);
        }
        Op::CopyFromBuffer { dst, src, shape } => copy_from_buffer(env, slots, dst, src, shape, ctx),
        Op::TryClone { src, dst } => {
            let (si, di) = (slot_of(src), slot_of(dst));
            if si == di || slots[si].is_none() {
                return;
            }
            slots[di] = None;
            let s = slots[si].as_mut().expect("checked");
            match s.buf.try_clone() {
                Ok(buf) => {
                    // A fresh buffer written on the device side: the source's contents, DeviceDirty.
                    let cands = dedup(s.cands.iter().map(|c| c.with(DeviceDirty, c.data.clone())).collect());
                    let mut new = Slot { buf, cands, pending: false };
                    check(env, &mut new, ctx);
                    slots[di] = Some(new);
                }
                Err(e) => {
                    assert!(matches!(classify(env, &e, ctx), ErrClass::Environment), "{}: {e:?}", ctx());
                }
            }
            // The source is only read (a pending transfer of it may have been settled).
            if let Some(s) = slots[si].as_mut() {
                check(env, s, ctx);
            }
        }
        Op::CopyFromAsync { slot, seed, drive: how } => {
            let Some(len) = len_of(slots, slot) else { return };
            let data = pattern(seed, len);
            let expect = |c: &Expect| Outcome::Ok(c.with(Synchronized, data.clone()), None);
            let call = |b: &mut UnifiedBuffer<u32>| drive(b.copy_from_async(&data), how).map(|r| r.map(|()| None));
            asynchronous(env, slots, slot, &expect, call, ctx);
        }
        Op::CopyToAsync { slot, drive: how } => {
            let Some(len) = len_of(slots, slot) else { return };
            let expect = |c: &Expect| Outcome::Ok(c.to_state(pull(c.state)), Some(c.data.clone()));
            let call = |b: &mut UnifiedBuffer<u32>| {
                let mut out = vec![u32::MAX; len];
                let r = drive(b.copy_to_async(&mut out), how);
                r.map(|r| r.map(|()| Some(out)))
            };
            asynchronous(env, slots, slot, &expect, call, ctx);
        }
        Op::SynchronizeAsync { slot, drive: how } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(Synchronized), None);
            let call = |b: &mut UnifiedBuffer<u32>| drive(b.synchronize_async(), how).map(|r| r.map(|()| None));
            asynchronous(env, slots, slot, &expect, call, ctx);
        }
        Op::TrimExcess => {
            mm.trim_excess().expect("trim_excess");
        }
        Op::RunMaintenance => {
            mm.run_maintenance();
        }
    }
}

/// `copy_from_buffer` between two different slots, in one of three shapes. The destination's
/// expectations are every (destination, source) pair of candidates.
pub(crate) fn copy_from_buffer(
    env: &Env,
    slots: &mut [Option<Slot>; SLOTS],
    dst: u8,
    src: u8,
    shape: CopyShape,
    ctx: &dyn Fn() -> String,
) {
    let (di, si) = (slot_of(dst), slot_of(src));
    if di == si {
        return;
    }
    if slots[di].is_none() || slots[si].is_none() {
        return;
    }
    let (mut d, mut s) = (slots[di].take().expect("checked"), slots[si].take().expect("checked"));
    let (dl, sl) = (d.buf.len(), s.buf.len());
    // (destination range, source start, whether the lengths mismatch)
    let (drange, ss, mismatch) = match shape {
        CopyShape::Whole => ((0, dl), 0, dl != sl),
        CopyShape::Window { src_start } => {
            if dl > sl {
                ((0, dl), 0, true)
            } else {
                ((0, dl), src_start as usize % (sl - dl + 1), false)
            }
        }
        CopyShape::Ranged { span, src_start } => {
            let (a, b) = span.resolve(dl);
            let k = (b - a).min(sl);
            ((a, a + k), src_start as usize % (sl - k + 1), false)
        }
    };
    let k = drange.1 - drange.0;
    // An empty range of a non-empty destination returns before touching either buffer.
    let noop = k == 0 && dl > 0;
    let result = {
        let sb = &s.buf;
        let r = match shape {
            CopyShape::Whole => d.buf.copy_from_buffer(sb),
            CopyShape::Window { .. } => {
                let window = if mismatch { sb.slice(..) } else { sb.slice(ss..ss + dl) };
                window.and_then(|w| d.buf.copy_from_buffer(&w))
            }
            CopyShape::Ranged { .. } => sb.slice(ss..ss + k).and_then(|w| {
                let mut view = d.buf.slice_mut(drange.0..drange.1)?;
                view.copy_from_buffer(&w)
            }),
        };
        r.map(|()| None)
    };
    let mut next = Vec::new();
    for sc in &s.cands {
        let expect = |c: &Expect| {
            if mismatch {
                return Outcome::Fail(Want::LengthMismatch);
            }
            if noop {
                return Outcome::Ok(c.clone(), None);
            }
            let mut data = c.data.clone();
            data[drange.0..drange.1].copy_from_slice(&sc.data[ss..ss + k]);
            Outcome::Ok(c.with(device_write(c.state), data), None)
        };
        // Candidates of one source expectation may not fit the result while another's do.
        next.extend(next_cands(env, &d.cands, &result, &expect, ctx));
    }
    assert!(
        !next.is_empty(),
        "{}: returned {result:?}, which no expectation allows; destination {:?}, source {:?}",
        ctx(),
        d.cands,
        s.cands
    );
    d.cands = dedup(next);
    if !mismatch && !noop {
        d.pending = false;
    }
    check(env, &mut d, ctx);
    check(env, &mut s, ctx);
    slots[di] = Some(d);
    slots[si] = Some(s);
}
