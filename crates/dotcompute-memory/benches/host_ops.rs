//! Host ops against their baselines, measured in the same run, interleaved (A, B, A, B, …) so
//! that load from other processes hits both sides alike; each row reports the median time of
//! each side and `ratio = baseline / ours` (higher is better).
//!
//! - `copy`: `ops::copy_bytes` (store kind picked by size) vs `copy_from_slice`,
//!   4 KiB .. 256 MiB, including 1.5 MiB (cached stores) and `ops::NT_THRESHOLD` (streaming);
//! - `fill`: `ops::fill` vs `slice::fill`; `convert`: `ops::convert` i32→f32 vs
//!   `iter().map(|&x| x as f32)` collected into a reused `Vec` (`clear` + `extend`, the code
//!   path of `collect` without its allocation) (1 MiB);
//! - `alloc`: `HostAlloc::new().alignment(64).allocate::<u8>(n)` + drop vs `std::alloc::alloc`
//!   (and `alloc_zeroed`) with `Layout(n, 64)` + `dealloc`, 4 KiB .. 64 MiB; both sides write
//!   one byte in every 4 KiB page (volatile) before freeing, so both pay the same faults;
//! - `touch`: allocate + first touch + free of 64 MiB with `HostAlloc::huge_pages(true)`
//!   (transparent huge pages via madvise) vs `HostAlloc::numa_node(0)` (an anonymous mapping
//!   of base pages); prints the pages each side really got;
//! - `shared` (unix): `MemoryManager::open_shared` + a checksum of the 16 MiB in place + drop
//!   vs a pipe transfer of the same bytes from a writer thread into a `Vec` + the same
//!   checksum.
//!
//! Run: `cargo bench -p dotcompute-memory --bench host_ops` (`-- --quick` for fewer reps; a
//! word such as `copy` or `alloc` runs only the rows whose group contains it). The copy, fill
//! and convert rows use the same, already-touched buffers on both sides, so no page faults
//! are timed there.

use dotcompute_memory::{ops, HostAlloc};
use std::alloc::Layout;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Times `iters` calls of each closure per repetition, alternating, and prints one row.
fn row(op: &str, size: usize, reps: usize, mut base: impl FnMut(), mut ours: impl FnMut()) {
    // Calibrate iterations to ~5 ms per sample.
    let t = Instant::now();
    base();
    let once = t.elapsed().max(Duration::from_nanos(20));
    let iters = ((20e-3 / once.as_secs_f64()) as usize).clamp(1, 10_000_000);
    for _ in 0..iters.min(50) {
        base();
        ours();
    }
    let (mut tb, mut to, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        };
        // Alternate which side goes first, so neither profits from running second.
        let (b, o) = if rep % 2 == 0 {
            let b = time(&mut base);
            (b, time(&mut ours))
        } else {
            let o = time(&mut ours);
            (time(&mut base), o)
        };
        tb.push(b);
        to.push(o);
        ratios.push(b / o);
    }
    let (b, o, r) = (median(&mut tb), median(&mut to), median(&mut ratios));
    let gbs = |s: f64| size as f64 / s / 1e9;
    println!(
        "{op:<34} {size:>10} B  baseline {:>12.1} ns ({:>6.2} GB/s)  ours {:>12.1} ns ({:>6.2} GB/s)  ratio {:>5.2} (min {:.2}, max {:.2})",
        b * 1e9,
        gbs(b),
        o * 1e9,
        gbs(o),
        r,
        ratios.iter().cloned().fold(f64::INFINITY, f64::min),
        ratios.iter().cloned().fold(0.0, f64::max),
    );
}

/// Copy sizes: the issue's, plus both sides of the streaming threshold (1 MiB is below it).
const SIZES: &[usize] = &[4 << 10, 64 << 10, 1 << 20, 3 << 19, ops::NT_THRESHOLD, 10_000_000, 64 << 20, 256 << 20];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // cargo test --benches probes with --list
    }
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test") {
        // `cargo test --benches` (no --bench flag) or `cargo bench -- --test`: check the rows
        // once at small sizes.
        let src: Vec<u8> = (0..100_000).map(|i| i as u8).collect();
        let mut dst = vec![0u8; src.len()];
        ops::copy_bytes(&mut dst, &src).unwrap();
        assert!(dst == src);
        let b = HostAlloc::new().alignment(64).allocate::<u8>(8192).unwrap();
        assert!((b.as_ptr() as usize).is_multiple_of(64) && b.iter().all(|&x| x == 0));
        #[cfg(unix)]
        shared::check();
        println!("host_ops bench: smoke test passed (run `cargo bench` to measure)");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let reps = if quick { 7 } else { 31 };
    let filter: Option<&String> = args.iter().skip(1).find(|a| !a.starts_with("--"));
    let run = |name: &str| filter.is_none_or(|f| name.contains(f.as_str()));

    if run("copy") {
        println!("# noise floor: copy_from_slice against itself (an A/A row; its ratio should be 1)");
        for &size in &[4usize << 10, 64 << 10] {
            let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut d1 = vec![1u8; size];
            let mut d2 = vec![1u8; size];
            row(
                "copy hot A/A",
                size,
                reps,
                || d1.copy_from_slice(black_box(&src)),
                || d2.copy_from_slice(black_box(&src)),
            );
        }
        println!("# copy, hot: the same src/dst each time (in cache when they fit)");
        println!("#   baseline = copy_from_slice, ours = ops::copy_bytes (CopyKind::Auto)");
        for &size in SIZES {
            let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut d1 = vec![1u8; size];
            let mut d2 = vec![1u8; size];
            let reps = if size >= 64 << 20 { reps.min(11) } else { reps };
            row(
                "copy hot",
                size,
                reps,
                || d1.copy_from_slice(black_box(&src)),
                || ops::copy_bytes(&mut d2, black_box(&src)).unwrap(),
            );
            assert!(d1 == src && d2 == src);
        }
        println!("# copy, cold: each call copies the next of several buffers (128 MiB of sources, 128 MiB of");
        println!("#   destinations per side), so neither side finds its data in cache (fresh data, staging)");
        for &size in SIZES {
            let pairs = ((128usize << 20) / size).clamp(2, 4096);
            let src: Vec<Vec<u8>> = (0..pairs).map(|p| (0..size).map(|i| (i + p) as u8).collect()).collect();
            let mut da: Vec<Vec<u8>> = (0..pairs).map(|_| vec![1u8; size]).collect();
            let mut db: Vec<Vec<u8>> = (0..pairs).map(|_| vec![1u8; size]).collect();
            let (mut i, mut j) = (0usize, 0usize);
            let reps = if size >= 64 << 20 { reps.min(11) } else { reps };
            row(
                "copy cold",
                size,
                reps,
                || {
                    i = (i + 1) % pairs;
                    da[i].copy_from_slice(black_box(&src[i]));
                },
                || {
                    j = (j + 1) % pairs;
                    ops::copy_bytes(&mut db[j], black_box(&src[j])).unwrap();
                },
            );
            assert!(da == src && db == src);
        }
    }
    if run("fill") || run("convert") {
        let n = 1 << 18;
        let mut d1 = vec![0f32; n];
        let mut d2 = vec![0f32; n];
        println!("# fill / convert: baseline = slice::fill / iter().map() collected into a reused Vec,");
        println!("#   ours = ops::fill / ops::convert");
        row(
            "fill f32 (ops::fill vs slice::fill)",
            n * 4,
            reps,
            || black_box(&mut d1).fill(black_box(1.5f32)),
            || ops::fill(black_box(&mut d2), black_box(1.5f32)),
        );
        assert!(d1 == d2);
        let src: Vec<i32> = (0..n as i32).collect();
        let mut collected: Vec<f32> = Vec::with_capacity(n);
        row(
            "convert i32->f32 (ops vs map+collect)",
            n * 4,
            reps,
            || {
                let v = black_box(&mut collected);
                v.clear();
                v.extend(black_box(&src).iter().map(|&x| x as f32));
            },
            || ops::convert(black_box(&mut d2), black_box(&src)).unwrap(),
        );
        assert!(collected == d2);
    }
    if run("alloc") {
        println!("# aligned allocation: baseline = std::alloc::alloc / alloc_zeroed (Layout(n, 64)) + dealloc,");
        println!("#   ours = HostAlloc::new().alignment(64).allocate::<u8>(n) + drop (always zeroed);");
        println!("#   both sides write 1 byte per 4 KiB page before freeing");
        for &n in &[4usize << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20] {
            let layout = Layout::from_size_align(n, 64).unwrap();
            let alloc = HostAlloc::new().alignment(64);
            let raw = |zeroed: bool| {
                // SAFETY: n > 0, so the layout has a non-zero size.
                let p = unsafe {
                    if zeroed {
                        std::alloc::alloc_zeroed(layout)
                    } else {
                        std::alloc::alloc(layout)
                    }
                };
                assert!(!p.is_null());
                // SAFETY: p is valid for writes of n bytes.
                unsafe { touch_raw(p, n) };
                // SAFETY: p came from alloc/alloc_zeroed with this layout, freed once.
                unsafe { std::alloc::dealloc(black_box(p), layout) };
            };
            let ours = || {
                let mut b = alloc.allocate::<u8>(n).unwrap();
                // SAFETY: the buffer is valid for writes of its length.
                unsafe { touch_raw(b.as_mut_ptr(), n) };
                black_box(b.as_ptr());
            };
            let reps = if n >= 16 << 20 { reps.min(11) } else { reps };
            row("alloc (vs std::alloc::alloc)", n, reps, || raw(false), ours);
            row("alloc (vs std::alloc::alloc_zeroed)", n, reps, || raw(true), ours);
        }
    }
    if run("touch") {
        let n = 64usize << 20;
        let base = HostAlloc::new().alignment(4096).numa_node(0);
        let huge = HostAlloc::new().alignment(4096).huge_pages(true);
        for (side, a) in [("baseline", &base), ("ours", &huge)] {
            let mut b = a.allocate::<u8>(n).unwrap();
            // SAFETY: the buffer is valid for writes of its length.
            unsafe { touch_raw(b.as_mut_ptr(), n) };
            println!(
                "# first touch {side}: {:?} pages of {} bytes, {} bytes backed by huge pages after the touch ({})",
                b.page_kind(),
                b.page_size(),
                b.resident_huge_page_bytes().map_or("unknown".into(), |x| x.to_string()),
                b.page_info().reason
            );
        }
        let cycle = |a: &HostAlloc| {
            let mut b = a.allocate::<u8>(n).unwrap();
            // SAFETY: the buffer is valid for writes of its length.
            unsafe { touch_raw(b.as_mut_ptr(), n) };
            black_box(b.as_ptr());
        };
        println!("# first touch: baseline = numa_node(0) mapping (base pages), ours = huge_pages(true);");
        println!("#   each = allocate + write 1 byte per 4 KiB page + free");
        row("first touch (THP vs base pages)", n, reps.min(11), || cycle(&base), || cycle(&huge));
    }
    #[cfg(unix)]
    if run("shared") {
        shared::bench(16 << 20, reps);
    }
}

/// Writes 1 into the first byte of every 4 KiB page of `len` bytes at `p` (volatile, so the
/// stores are not dropped although the memory is freed right after).
///
/// # Safety
///
/// `p` must be valid for writes of `len` bytes.
unsafe fn touch_raw(p: *mut u8, len: usize) {
    for i in (0..len).step_by(4096) {
        // SAFETY: i < len: inside the caller's range.
        unsafe { p.add(i).write_volatile(1) };
    }
}

#[cfg(unix)]
mod shared {
    use dotcompute_memory::{MemoryManager, SharedBuffer};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::sync::mpsc;

    /// Wrapping sum of the bytes as little-endian u64 words plus the tail bytes.
    fn checksum(bytes: &[u8]) -> u64 {
        let mut words = bytes.chunks_exact(8);
        let mut sum = 0u64;
        for w in &mut words {
            sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        }
        words.remainder().iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)))
    }

    /// A pipe as two files (read end, write end), with a 1 MiB buffer where Linux allows.
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two fds into the 2-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe: {}", std::io::Error::last_os_error());
        #[cfg(target_os = "linux")]
        // SAFETY: F_SETPIPE_SZ on a pipe fd we own; failure leaves the default size.
        unsafe {
            libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 1 << 20);
        }
        // SAFETY: both fds are fresh, open and owned by nothing else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    /// The bench's `cargo test --benches` check: both paths deliver the bytes.
    pub(super) fn check() {
        let mm = MemoryManager::cpu();
        let name = format!("dcmem-host-ops-check-{}", std::process::id());
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut seg = mm.allocate_shared::<u8>(&name, data.len()).unwrap();
        seg.copy_from_slice(&data);
        seg.persist(); // this process opens it below, which needs the creator's handle closed
        assert_eq!(checksum(&mm.open_shared::<u8>(&name).unwrap()), checksum(&data));
        SharedBuffer::remove(&name).unwrap();
        let (mut r, mut w) = pipe();
        let writer = std::thread::spawn({
            let data = data.clone();
            move || w.write_all(&data).unwrap()
        });
        let mut got = vec![0u8; data.len()];
        r.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == data);
    }

    pub(super) fn bench(n: usize, reps: usize) {
        let mm = MemoryManager::cpu();
        let name = format!("dcmem-host-ops-{}", std::process::id());
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let expected = checksum(&data);
        let mut seg = mm.allocate_shared::<u8>(&name, n).unwrap();
        seg.copy_from_slice(&data);
        seg.persist(); // this process opens it below, which needs the creator's handle closed
        let (mut reader, mut writer) = pipe();
        let (go, requests) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let data = &data;
            scope.spawn(move || {
                while requests.recv().is_ok() {
                    writer.write_all(data).unwrap();
                }
            });
            let mut received = vec![0u8; n];
            println!("# shared buffer: baseline = pipe transfer (writer thread -> read_exact into a Vec, 1 MiB pipe");
            println!("#   buffer) + checksum; ours = open_shared + checksum in place + drop (munmap)");
            super::row(
                "shared open+read (vs pipe)",
                n,
                reps,
                || {
                    go.send(()).unwrap();
                    reader.read_exact(&mut received).unwrap();
                    assert_eq!(checksum(&received), expected);
                },
                || {
                    let h = mm.open_shared::<u8>(&name).unwrap();
                    assert_eq!(checksum(&h), expected);
                },
            );
            drop(go);
        });
        SharedBuffer::remove(&name).unwrap();
    }
}
