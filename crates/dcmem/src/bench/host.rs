//! Host-memory rows: aligned allocation, first touch with and without huge pages, the large
//! copy, fill and convert, and a named shared buffer against a pipe.
//!
//! They measure host memory only, which no backend choice changes, so they are shown once, on
//! the backend whose memory is host memory (unified: cpu). Every row times its baseline and ours in the same run, interleaved
//! ([`crate::measure::compare`]); each checks the data it produced afterwards.
//!
//! What each side does (both sides always get the same treatment of pages):
//!
//! - Aligned allocation: `HostAlloc::new().alignment(64).allocate::<u8>(n)` + drop against
//!   `std::alloc::alloc` (and, in a second row, `alloc_zeroed`) with `Layout(n, 64)` +
//!   `dealloc`; both sides write one byte in every 4 KiB page (volatile writes) before
//!   freeing, so lazily mapped memory is faulted in on both sides alike.
//! - First touch: allocate + write one byte per 4 KiB page + free, with
//!   `HostAlloc::huge_pages(true)` (THP via `madvise`) against `HostAlloc::numa_node(0)`
//!   (also an anonymous mapping of our own, base pages). The row says which pages each side
//!   really got and how much of ours the kernel backed with huge pages.
//! - Large copy: `ops::copy_bytes` against `copy_from_slice`, "hot" (the same source and
//!   destination each call) and "cold" (each call copies the next of several buffer pairs
//!   totalling 128 MiB of sources, so the data is not in cache).
//! - Fill / convert: `ops::fill` and `ops::convert` (i32 → f32) against what users write:
//!   `slice::fill`, and `iter().map(|&x| x as f32)` collected into a reused `Vec` (cleared,
//!   capacity kept, so neither side allocates). Both compile to vectorised loops, so these
//!   rows show what the hand-written kernels add over the compiler's output.
//! - Shared buffer (unix): `MemoryManager::open_shared` + a checksum over the bytes in place +
//!   drop (unmap), against a pipe transfer of the same bytes from a writer thread into a
//!   `Vec` + the same checksum. Same process, so no process start-up is timed on either side.

use super::ctx::Ctx;
use super::data::{pattern, wrong_data, PAGE};
use crate::report::Row;
use crate::{units, CliError, CliResult};
use dotcompute_memory::{ops, HostAlloc};
use std::alloc::Layout;
use std::hint::black_box;

/// Alignment of the aligned-allocation rows (a cache line, `HostAlloc`'s default).
const ALIGN: usize = 64;

/// Writes 1 into the first byte of every 4 KiB page of `len` bytes at `p` (volatile, so the
/// stores survive even though the memory is freed right after).
///
/// # Safety
///
/// `p` must be valid for writes of `len` bytes.
unsafe fn touch_raw(p: *mut u8, len: usize) {
    for i in (0..len).step_by(PAGE) {
        // SAFETY: i < len, so p + i lies inside the caller's writable range.
        unsafe { p.add(i).write_volatile(1) };
    }
}

fn touch(bytes: &mut [u8]) {
    // SAFETY: the slice is valid for writes of its length.
    unsafe { touch_raw(bytes.as_mut_ptr(), bytes.len()) }
}

/// `HostAlloc` (64-byte aligned) against `std::alloc::alloc` and `alloc_zeroed` with the same
/// layout; every side writes one byte per page before freeing.
pub(super) fn aligned_alloc(ctx: &Ctx, n: usize) -> CliResult<Vec<Row>> {
    let layout = Layout::from_size_align(n, ALIGN)
        .map_err(|e| CliError::Other(format!("no layout for {n} bytes aligned to {ALIGN}: {e}")))?;
    let alloc = HostAlloc::new().alignment(ALIGN);
    let mut ours = || -> CliResult {
        let mut b = alloc.allocate::<u8>(n)?;
        touch(&mut b);
        black_box(b.as_ptr());
        drop(b);
        Ok(())
    };
    let raw = |zeroed: bool| -> CliResult {
        // SAFETY: the layout has a non-zero size (every size in the host rows' sizes is > 0).
        let p = unsafe {
            if zeroed {
                std::alloc::alloc_zeroed(layout)
            } else {
                std::alloc::alloc(layout)
            }
        };
        if p.is_null() {
            return Err(CliError::Other(format!("std::alloc returned null for {n} bytes")));
        }
        // SAFETY: p is valid for writes of n bytes (just allocated with size n); writing to
        // uninitialised memory through a raw pointer is allowed.
        unsafe { touch_raw(p, n) };
        black_box(p);
        // SAFETY: p came from alloc/alloc_zeroed with this very layout and is freed once.
        unsafe { std::alloc::dealloc(p, layout) };
        Ok(())
    };
    let plain = ctx.compare(&mut || raw(false), &mut ours)?;
    let zeroed = ctx.compare(&mut || raw(true), &mut ours)?;
    // What ours returns: zeroed memory with the asked alignment.
    let probe = alloc.allocate::<u8>(n)?;
    if !(probe.as_ptr() as usize).is_multiple_of(ALIGN) || probe.iter().any(|&b| b != 0) {
        return Err(wrong_data("HostAlloc::allocate"));
    }
    let ours_text = format!(
        "HostAlloc::new().alignment({ALIGN}).allocate::<u8>(n) ({:?} pages: always zeroed) + write 1 byte \
         per 4 KiB page + drop",
        probe.page_kind()
    );
    Ok(vec![
        Row::new(
            "Aligned allocation (HostAlloc vs std::alloc::alloc)",
            n,
            format!("std::alloc::alloc(Layout(n, {ALIGN})) (uninitialised) + write 1 byte per 4 KiB page + dealloc"),
            ours_text.clone(),
            plain,
        ),
        Row::new(
            "Aligned allocation (HostAlloc vs std::alloc::alloc_zeroed)",
            n,
            format!("std::alloc::alloc_zeroed(Layout(n, {ALIGN})) + write 1 byte per 4 KiB page + dealloc"),
            ours_text,
            zeroed,
        ),
    ])
}

/// Allocate + first touch + free of `n` bytes: transparent huge pages against base pages.
pub(super) fn first_touch(ctx: &Ctx, n: usize) -> CliResult<Row> {
    let base = HostAlloc::new().alignment(PAGE).numa_node(0);
    let huge = HostAlloc::new().alignment(PAGE).huge_pages(true);
    let cycle = |a: &HostAlloc| -> CliResult {
        let mut b = a.allocate::<u8>(n)?;
        touch(&mut b);
        black_box(b.as_ptr());
        drop(b);
        Ok(())
    };
    let pair = ctx.compare(&mut || cycle(&base), &mut || cycle(&huge))?;
    // What each side really got: page kind and size, and (after touching) how much of the
    // buffer the kernel backs with huge pages.
    let got = |a: &HostAlloc| -> CliResult<(String, String)> {
        let mut b = a.allocate::<u8>(n)?;
        touch(&mut b);
        if b[0] != 1 || b[n - 1] != 0 {
            return Err(wrong_data("HostAlloc first touch"));
        }
        let resident = match b.resident_huge_page_bytes() {
            Some(bytes) => format!("{} of it backed by huge pages after the touch", units::bytes(bytes)),
            None => "huge-page residency unknown (no /proc/self/smaps)".into(),
        };
        Ok((format!("{:?} pages of {}", b.page_kind(), units::bytes(b.page_size() as u64)), resident))
    };
    let ((base_pages, _), (huge_pages, huge_resident)) = (got(&base)?, got(&huge)?);
    Ok(Row::new(
        "First touch (huge pages vs base pages)",
        n,
        format!("HostAlloc numa_node(0) (own mapping) + 1 byte per 4 KiB page + drop: got {base_pages}"),
        format!(
            "HostAlloc::new().alignment(4096).huge_pages(true) (madvise(MADV_HUGEPAGE)) + write 1 byte per \
             4 KiB page + drop: got {huge_pages}, {huge_resident}"
        ),
        pair,
    ))
}

/// The same source and destinations every call (in cache where they fit).
pub(super) fn large_copy_hot(ctx: &Ctx, n: usize) -> CliResult<Row> {
    let src = pattern(n, 11);
    // Destinations written once already, so no page faults are timed.
    let mut d1 = vec![1u8; n];
    let mut d2 = vec![1u8; n];
    let mut used = ops::StoreKind::Cached;
    let pair = ctx.compare(
        &mut || {
            d1.copy_from_slice(black_box(&src));
            black_box(d1.as_ptr());
            Ok(())
        },
        &mut || {
            used = ops::copy_bytes_with(&mut d2, black_box(&src), ops::CopyKind::Auto)?;
            black_box(d2.as_ptr());
            Ok(())
        },
    )?;
    if d1 != src || d2 != src {
        return Err(wrong_data("large copy"));
    }
    Ok(Row::new(
        "Large copy (ops::copy_bytes vs copy_from_slice)",
        n,
        "copy_from_slice between two Vec<u8> (glibc memcpy), the same buffers every call".into(),
        format!("ops::copy_bytes, the same buffers every call (used {used:?} stores)"),
        pair,
    ))
}

/// Each call copies the next of several buffer pairs (the mode's `cold_budget` bytes of
/// sources in all; in the full and quick runs 128 MiB, so the data a call touches has left the
/// caches).
pub(super) fn large_copy_cold(ctx: &Ctx, n: usize) -> CliResult<Row> {
    let budget = ctx.sizes().cold_budget;
    let count = (budget / n).clamp(2, 4096);
    let src: Vec<Vec<u8>> = (0..count).map(|k| pattern(n, k as u8)).collect();
    // Destinations written once already (vec![0; n] would be untouched zero pages whose
    // faults the first calls would time).
    let mut da: Vec<Vec<u8>> = (0..count).map(|_| vec![1u8; n]).collect();
    let mut db: Vec<Vec<u8>> = (0..count).map(|_| vec![1u8; n]).collect();
    let (mut i, mut j) = (0usize, 0usize);
    let mut used = ops::StoreKind::Cached;
    let pair = ctx.compare(
        &mut || {
            i = (i + 1) % count;
            da[i].copy_from_slice(black_box(&src[i]));
            black_box(da[i].as_ptr());
            Ok(())
        },
        &mut || {
            j = (j + 1) % count;
            used = ops::copy_bytes_with(&mut db[j], black_box(&src[j]), ops::CopyKind::Auto)?;
            black_box(db[j].as_ptr());
            Ok(())
        },
    )?;
    // Not every pair need have been copied (few calls at large sizes): each destination is
    // either untouched (all 1) or a copy of its source.
    for k in 0..count {
        let ok = |d: &Vec<u8>| *d == src[k] || d.iter().all(|&b| b == 1);
        if !ok(&da[k]) || !ok(&db[k]) {
            return Err(wrong_data("large copy, cold"));
        }
    }
    Ok(Row::new(
        "Large copy, cold (ops::copy_bytes vs copy_from_slice)",
        n,
        format!(
            "copy_from_slice, each call into the next of {count} Vec<u8> pairs ({} of sources per side)",
            units::bytes((count * n) as u64)
        ),
        format!("ops::copy_bytes into the next of {count} pairs (used {used:?} stores)"),
        pair,
    ))
}

/// `ops::fill` and `ops::convert` (i32 → f32) against `slice::fill` and an `iter().map()`
/// collected into a reused `Vec`, over `n` elements.
pub(super) fn fill_convert(ctx: &Ctx, n: usize) -> CliResult<Vec<Row>> {
    let mut d1 = vec![0f32; n];
    let mut d2 = vec![0f32; n];
    let fill = ctx.compare(
        &mut || {
            black_box(&mut d1).fill(black_box(1.5f32));
            Ok(())
        },
        &mut || {
            ops::fill(black_box(&mut d2), black_box(1.5f32));
            Ok(())
        },
    )?;
    if d1 != d2 || d2.iter().any(|&x| x != 1.5) {
        return Err(wrong_data("ops::fill"));
    }
    let src: Vec<i32> = (0..n as i32).map(|i| i.wrapping_mul(7) - 3).collect();
    let mut collected: Vec<f32> = Vec::with_capacity(n);
    let convert = ctx.compare(
        &mut || {
            let v = black_box(&mut collected);
            v.clear();
            v.extend(black_box(&src).iter().map(|&x| x as f32));
            Ok(())
        },
        &mut || Ok(ops::convert(black_box(&mut d2), black_box(&src))?),
    )?;
    if collected != d2 || d2[n - 1] != src[n - 1] as f32 {
        return Err(wrong_data("ops::convert"));
    }
    Ok(vec![
        Row::new("SIMD fill (ops::fill vs slice::fill)", n * 4, "d.fill(v) (f32)".into(), "ops::fill (f32)", fill),
        Row::new(
            "SIMD convert (ops::convert vs iter().map().collect())",
            n * 4,
            "s.iter().map(|&x| x as f32) collected into a reused Vec: v.clear(); v.extend(..) (collect's code \
             path without the allocation) (i32 -> f32)"
                .into(),
            "ops::convert (i32 -> f32) into an existing slice",
            convert,
        ),
    ])
}

#[cfg(unix)]
pub(super) use shared::shared_vs_pipe;

#[cfg(unix)]
mod shared {
    use super::super::ctx::Ctx;
    use super::super::data::{pattern, wrong_data};
    use crate::report::Row;
    use crate::{CliError, CliResult};
    use dotcompute_memory::{MemoryManager, SharedBuffer};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::sync::mpsc;

    /// Wrapping sum of the bytes as little-endian u64 words (plus the tail bytes): reads every
    /// byte, vectorises, and is what both sides compute.
    fn checksum(bytes: &[u8]) -> u64 {
        let mut words = bytes.chunks_exact(8);
        let mut sum = 0u64;
        for w in &mut words {
            sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
        }
        words.remainder().iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)))
    }

    fn io(what: &str) -> impl Fn(std::io::Error) -> CliError + '_ {
        move |e| CliError::Other(format!("pipe baseline: {what} failed: {e}"))
    }

    /// `open_shared` + checksum in place + drop, against a pipe transfer of the same bytes
    /// from a writer thread into a `Vec` + the same checksum.
    pub(in crate::bench) fn shared_vs_pipe(ctx: &Ctx, n: usize) -> CliResult<Row> {
        let mm = MemoryManager::cpu();
        let name = format!("dcmem-bench-{}-{n}", std::process::id());
        // A segment left by a crashed earlier run goes first (only if its creator is dead).
        let _ = SharedBuffer::<()>::remove_stale(&name);
        let data = pattern(n, 5);
        let expected = checksum(&data);
        let mut segment = mm.allocate_shared::<u8>(&name, n)?;
        segment.copy_from_slice(&data);
        // The measured opens are in this process, which holds one handle per segment: close the
        // creator's and keep the name (removed below).
        segment.persist();

        let (rx, tx) = rustix::pipe::pipe().map_err(|e| io("pipe()")(e.into()))?;
        #[cfg(target_os = "linux")]
        let pipe_note = {
            // The largest pipe buffer an unprivileged process may ask for by default (1 MiB):
            // fewer wake-ups, the strongest baseline. Keep the default when refused.
            let _ = rustix::pipe::fcntl_setpipe_size(&tx, 1 << 20);
            match rustix::pipe::fcntl_getpipe_size(&tx) {
                Ok(size) => format!("pipe buffer {}", crate::units::bytes(size as u64)),
                Err(_) => "pipe buffer size unknown".to_string(),
            }
        };
        #[cfg(not(target_os = "linux"))]
        let pipe_note = "default pipe buffer".to_string();
        let reader = File::from(rx);
        let mut writer = File::from(tx);
        let (go, requests) = mpsc::channel::<()>();
        let result = std::thread::scope(|scope| -> CliResult<Row> {
            let data = &data;
            let mut reader = reader;
            let feeder = scope.spawn(move || -> std::io::Result<()> {
                while requests.recv().is_ok() {
                    writer.write_all(data)?;
                }
                Ok(())
            });
            let mut received = vec![0u8; n];
            let mut piped = || -> CliResult {
                go.send(()).map_err(|_| CliError::Other("pipe baseline: the writer thread stopped".into()))?;
                reader.read_exact(&mut received).map_err(io("read"))?;
                if checksum(&received) != expected {
                    return Err(wrong_data("pipe transfer"));
                }
                Ok(())
            };
            let mut opened = || -> CliResult {
                let h = mm.open_shared::<u8>(&name)?;
                if checksum(&h) != expected {
                    return Err(wrong_data("open_shared"));
                }
                drop(h);
                Ok(())
            };
            let pair = ctx.compare(&mut piped, &mut opened);
            // Stop the writer: no more requests, and no reader for a write it may be blocked
            // in after a failed read (it then gets EPIPE; Rust programs ignore SIGPIPE).
            drop(go);
            drop(reader);
            let fed = feeder.join().map_err(|_| CliError::Other("pipe baseline: the writer thread panicked".into()))?;
            let pair = pair?;
            fed.map_err(io("write"))?;
            if received != *data {
                return Err(wrong_data("pipe transfer"));
            }
            Ok(Row::new(
                "Shared buffer open + read (vs pipe)",
                n,
                format!(
                    "pipe transfer from a writer thread into a Vec<u8> (read_exact, {pipe_note}) + checksum of every byte"
                ),
                "MemoryManager::open_shared::<u8>(name) (shm_open + mmap + header check) + checksum of every byte in \
                 place + drop (munmap)",
                pair,
            ))
        });
        let removed = SharedBuffer::<()>::remove(&name);
        let row = result?;
        removed?;
        Ok(row)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn checksum_reads_every_byte() {
            assert_eq!(super::checksum(&[]), 0);
            assert_eq!(super::checksum(&[1, 0, 0, 0, 0, 0, 0, 0, 5]), 6);
            assert_ne!(super::checksum(&[0; 9]), super::checksum(&[0, 0, 0, 0, 0, 0, 0, 0, 1]));
        }
    }
}
