//! Host ops against their baselines, measured in the same run, interleaved (A, B, A, B, …) so
//! that load from other processes hits both sides alike; each row reports the median time of
//! each side and `ratio = baseline / ours` (higher is better).
//!
//! - `copy`: `ops::copy_bytes` (store kind picked by size) vs `copy_from_slice`,
//!   4 KiB .. 256 MiB;
//! - `fill`: `ops::fill` vs an indexed loop; `convert`: `ops::convert` i32→f32 vs an
//!   indexed loop (1 MiB).
//!
//! Run: `cargo bench -p dotcompute-memory --bench host_ops` (`-- --quick` for fewer reps).
//! Both sides use the same, already-touched buffers, so no page faults are timed.

#![allow(clippy::needless_range_loop)] // the indexed loops are the baselines

use dotcompute_memory::ops;
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

const SIZES: &[usize] = &[4 << 10, 64 << 10, 1 << 20, 10_000_000, 64 << 20, 256 << 20];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // cargo test --benches probes with --list
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` (no --bench flag): check the rows once at small sizes.
        let src: Vec<u8> = (0..100_000).map(|i| i as u8).collect();
        let mut dst = vec![0u8; src.len()];
        ops::copy_bytes(&mut dst, &src).unwrap();
        assert!(dst == src);
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
        println!("# fill / convert: baseline = indexed loop, ours = ops::fill / ops::convert");
        row(
            "fill f32 (ops::fill vs index loop)",
            n * 4,
            reps,
            || {
                let v = black_box(1.5f32);
                let d = black_box(&mut d1);
                for i in 0..d.len() {
                    d[i] = v;
                }
            },
            || ops::fill(black_box(&mut d2), black_box(1.5f32)),
        );
        let src: Vec<i32> = (0..n as i32).collect();
        row(
            "convert i32->f32 (ops vs index loop)",
            n * 4,
            reps,
            || {
                let s = black_box(&src);
                let d = black_box(&mut d1);
                for i in 0..d.len() {
                    d[i] = s[i] as f32;
                }
            },
            || ops::convert(black_box(&mut d2), black_box(&src)).unwrap(),
        );
        assert!(d1 == d2);
    }
}
