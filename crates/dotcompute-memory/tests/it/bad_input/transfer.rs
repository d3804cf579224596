//! The transfer engine: building a batch (`TransferBatch` with wrong lengths, another manager's
//! buffers, capacity hints beyond memory), executing it (`TransferOptions` and `RetryPolicy` out
//! of range, buffers of another manager, a future polled after it completed), and
//! `stream_to_device` from readers of the wrong length or that fail.

use super::*;
use crate::support::data::words;

// ---- TransferBatch: building a batch ----

pub(super) mod transfer_batch {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("TransferBatch::upload: source one short", |_, b| {
            let mut batch = TransferBatch::new();
            fails!(batch.upload(&[1u32; 9], b), Error::LengthMismatch { operation: "upload", expected: 10, actual: 9 });
            assert!(batch.is_empty());
        }),
        case("TransferBatch::upload: source one long", |_, b| {
            let mut batch = TransferBatch::new();
            fails!(
                batch.upload(&[1u32; 11], b),
                Error::LengthMismatch { operation: "upload", expected: 10, actual: 11 }
            );
            assert!(batch.is_empty());
        }),
        case("TransferBatch::upload_pinned: pinned source one short", |_, b| {
            let pinned = PinnedBuffer::<u32>::new(9).expect("9 pinned u32");
            let mut batch = TransferBatch::new();
            fails!(
                batch.upload_pinned(&pinned, b),
                Error::LengthMismatch { operation: "upload_pinned", expected: 10, actual: 9 }
            );
            assert!(batch.is_empty());
        }),
        case("TransferBatch::download: output one short", |_, b| {
            let mut out = [7u32; 9];
            let mut batch = TransferBatch::new();
            fails!(
                batch.download(b, &mut out),
                Error::LengthMismatch { operation: "download", expected: 10, actual: 9 }
            );
            assert!(batch.is_empty());
            assert_eq!(out, [7; 9]);
        }),
        case("TransferBatch::download: output one long", |_, b| {
            let mut out = [7u32; 11];
            let mut batch = TransferBatch::new();
            fails!(
                batch.download(b, &mut out),
                Error::LengthMismatch { operation: "download", expected: 10, actual: 11 }
            );
            assert!(batch.is_empty());
            assert_eq!(out, [7; 11]);
        }),
        case("TransferBatch::copy: shorter source", |fx, b| {
            let mut batch = TransferBatch::new();
            fails!(batch.copy(&fx.short, b), Error::LengthMismatch { operation: "copy", expected: 10, actual: 7 });
            assert!(batch.is_empty());
        }),
        case("TransferBatch::copy: longer source", |fx, b| {
            let mut batch = TransferBatch::new();
            fails!(batch.copy(&fx.long, b), Error::LengthMismatch { operation: "copy", expected: 10, actual: 12 });
            assert!(batch.is_empty());
        }),
        case("execute: copy into a buffer of another manager than the engine's", |fx, b| {
            // A source on another device is a peer copy; the destination must be the engine's.
            let mut batch = TransferBatch::new();
            batch.copy(&fx.foreign, b).unwrap();
            fails!(
                fx.other.transfer_engine().execute(batch, TransferOptions::default()),
                Error::ManagerMismatch { operation: "TransferEngine::execute", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    /// `TransferBatch::with_capacity` treats its argument as a hint: no panic or abort for sizes
    /// that cannot be reserved, and the batch works.
    #[test]
    fn batch_capacity_hints_beyond_memory_are_ignored() {
        let mm = MemoryManager::sim(SimOptions::default());
        let data = words(64, 3);
        let mut a = mm.allocate::<u32>(64).unwrap();
        for hint in [usize::MAX, 1 << 50, 0] {
            let mut batch = TransferBatch::with_capacity(hint);
            assert!(batch.is_empty());
            batch.upload(&data, &mut a).unwrap();
            assert_eq!(batch.len(), 1);
            assert!(mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap().is_success());
        }
        assert_eq!(a.to_vec().unwrap(), data);
    }
}

// ---- TransferEngine::execute, execute_async (and the options stream_to_device shares) ----

pub(super) mod execute {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    /// Every path that validates `TransferOptions` refuses `options`, naming `option` and
    /// `value`, before anything moves: execute and execute_async of an upload into `b`, execute
    /// of a download from it, and stream_to_device into it (which does not read the reader).
    fn refused(fx: &Fixture, b: &mut UnifiedBuffer<u32>, options: TransferOptions, option: &str, value: &str) {
        let engine = fx.mm.transfer_engine();
        let data: Vec<u32> = (0..10).collect();
        let named =
            |e: &Error| matches!(e, Error::InvalidArgument { option: o, value: v, .. } if *o == option && v == value);
        {
            let mut batch = TransferBatch::new();
            batch.upload(&data, b).unwrap();
            let e = fails!(engine.execute(batch, options.clone()), Error::InvalidArgument { .. });
            assert!(named(&e), "execute: {e:?}");
        }
        {
            let mut batch = TransferBatch::new();
            batch.upload(&data, b).unwrap();
            let e =
                fails!(pollster::block_on(engine.execute_async(batch, options.clone())), Error::InvalidArgument { .. });
            assert!(named(&e), "execute_async: {e:?}");
        }
        {
            let mut out = [7u32; 10];
            let mut batch = TransferBatch::new();
            batch.download(b, &mut out).unwrap();
            let e = fails!(engine.execute(batch, options.clone()), Error::InvalidArgument { .. });
            assert!(named(&e), "execute (download): {e:?}");
            assert_eq!(out, [7; 10]);
        }
        let mut reader = stream_to_device::Reader::new(40, None);
        let e = fails!(engine.stream_to_device(&mut reader, b, options, &mut |_, _| {}), Error::InvalidArgument { .. });
        assert!(named(&e), "stream_to_device: {e:?}");
        assert_eq!(reader.reads, 0, "stream_to_device read the reader before refusing the options");
    }

    fn retry(retry: RetryPolicy) -> TransferOptions {
        TransferOptions::default().with_retry(retry)
    }

    const TWO_HOURS: Duration = Duration::from_secs(7200);

    pub const CASES: &[BufferCase] = &[
        case("TransferOptions: max_concurrency 0", |fx, b| {
            let o = TransferOptions::default().with_max_concurrency(0);
            refused(fx, b, o, "TransferOptions::max_concurrency", "0");
        }),
        case("TransferOptions: chunk_size 0", |fx, b| {
            let o = TransferOptions::default().with_chunk_size(0);
            refused(fx, b, o, "TransferOptions::chunk_size", "0");
        }),
        case("TransferOptions: staging_buffers 0", |fx, b| {
            let o = TransferOptions::default().with_staging_buffers(0);
            refused(fx, b, o, "TransferOptions::staging_buffers", "0");
        }),
        case("TransferOptions: staging_buffers 1 (below 2..=8)", |fx, b| {
            let o = TransferOptions::default().with_staging_buffers(1);
            refused(fx, b, o, "TransferOptions::staging_buffers", "1");
        }),
        case("TransferOptions: staging_buffers 9 (above 2..=8)", |fx, b| {
            let o = TransferOptions::default().with_staging_buffers(9);
            refused(fx, b, o, "TransferOptions::staging_buffers", "9");
        }),
        case("TransferOptions: staging_buffers usize::MAX", |fx, b| {
            let o = TransferOptions::default().with_staging_buffers(usize::MAX);
            refused(fx, b, o, "TransferOptions::staging_buffers", &usize::MAX.to_string());
        }),
        case("RetryPolicy: max_attempts 0", |fx, b| {
            let o = retry(RetryPolicy::default().with_max_attempts(0));
            refused(fx, b, o, "RetryPolicy::max_attempts", "0");
        }),
        case("RetryPolicy: initial_backoff above one hour", |fx, b| {
            let o = retry(RetryPolicy::default().with_initial_backoff(TWO_HOURS));
            refused(fx, b, o, "RetryPolicy::initial_backoff / max_backoff", "7200s / 100ms");
        }),
        case("RetryPolicy: max_backoff above one hour", |fx, b| {
            let o = retry(RetryPolicy::default().with_max_backoff(TWO_HOURS));
            refused(fx, b, o, "RetryPolicy::initial_backoff / max_backoff", "1ms / 7200s");
        }),
        case("RetryPolicy: multiplier below 1", |fx, b| {
            let o = retry(RetryPolicy::default().with_multiplier(0.5));
            refused(fx, b, o, "RetryPolicy::multiplier", "0.5");
        }),
        case("RetryPolicy: multiplier NaN", |fx, b| {
            let o = retry(RetryPolicy::default().with_multiplier(f64::NAN));
            refused(fx, b, o, "RetryPolicy::multiplier", "NaN");
        }),
        case("RetryPolicy: multiplier infinite", |fx, b| {
            let o = retry(RetryPolicy::default().with_multiplier(f64::INFINITY));
            refused(fx, b, o, "RetryPolicy::multiplier", "inf");
        }),
        case("execute: upload into a buffer of another manager", |fx, b| {
            let data = [1u32; 10];
            let mut batch = TransferBatch::new();
            batch.upload(&data, b).unwrap();
            fails!(
                fx.other.transfer_engine().execute(batch, TransferOptions::default()),
                Error::ManagerMismatch { operation: "TransferEngine::execute", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
        }),
        case("execute: download from a buffer of another manager", |fx, b| {
            let mut out = [7u32; 10];
            let mut batch = TransferBatch::new();
            batch.download(b, &mut out).unwrap();
            fails!(
                fx.other.transfer_engine().execute(batch, TransferOptions::default()),
                Error::ManagerMismatch { operation: "TransferEngine::execute", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
            assert_eq!(out, [7; 10]);
        }),
        case("execute: a batch whose later transfer belongs to another manager", |fx, b| {
            // The first transfer is the engine's own (a download of its manager's buffer, which
            // the fixture checks): the whole batch is refused before anything moves.
            let data = [1u32; 10];
            let mut out = [7u32; 10];
            let mut batch = TransferBatch::new();
            batch.download(&fx.foreign, &mut out).unwrap();
            batch.upload(&data, b).unwrap();
            fails!(
                fx.other.transfer_engine().execute(batch, TransferOptions::default()),
                Error::ManagerMismatch { operation: "TransferEngine::execute", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
            assert_eq!(out, [7; 10], "the engine's own download ran");
        }),
        case("execute_async: upload into a buffer of another manager", |fx, b| {
            let data = [1u32; 10];
            let mut batch = TransferBatch::new();
            batch.upload(&data, b).unwrap();
            fails!(
                pollster::block_on(fx.other.transfer_engine().execute_async(batch, TransferOptions::default())),
                Error::ManagerMismatch { operation: "TransferEngine::execute", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
        }),
        BufferCase {
            check: Check::InCase,
            ..case("execute_async: future polled again after it completed", |fx, b| {
                let data: Vec<u32> = (0..10).collect();
                {
                    let mut batch = TransferBatch::new();
                    batch.upload(&data, b).unwrap();
                    let mut fut =
                        std::pin::pin!(fx.mm.transfer_engine().execute_async(batch, TransferOptions::default()));
                    let mut cx = Context::from_waker(Waker::noop());
                    let report = loop {
                        match fut.as_mut().poll(&mut cx) {
                            Poll::Ready(r) => break r.unwrap(),
                            Poll::Pending => std::thread::yield_now(),
                        }
                    };
                    assert!(report.is_success(), "{report:?}");
                    let c = counters(&fx.mm);
                    fails!(
                        match fut.as_mut().poll(&mut cx) {
                            Poll::Ready(r) => r,
                            Poll::Pending => panic!("a finished future went back to pending"),
                        },
                        Error::InvalidArgument { option: "future", .. }
                    );
                    check_counters(&fx.mm, &c, Check::Everything, "the second poll");
                }
                assert_eq!(b.to_vec().unwrap(), data);
            })
        },
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
    fn bad_input_is_rejected_before_anything_moves() {
        let mm = MemoryManager::sim(SimOptions::default());
        let mut a = mm.allocate::<u32>(10).unwrap();
        {
            let mut batch = TransferBatch::new();
            assert!(matches!(
                batch.upload(&[1u32; 9], &mut a),
                Err(Error::LengthMismatch { expected: 10, actual: 9, .. })
            ));
        }
        let other = MemoryManager::sim(SimOptions::default());
        let foreign = other.allocate::<u32>(10).unwrap();
        {
            let mut batch = TransferBatch::new();
            batch.copy(&foreign, &mut a).unwrap();
            let err = other.transfer_engine().execute(batch, TransferOptions::default()).unwrap_err();
            assert!(matches!(err, Error::ManagerMismatch { .. }), "{err:?}");
        }
        let data = [1u32; 10];
        for opts in [
            TransferOptions::default().with_max_concurrency(0),
            TransferOptions::default().with_chunk_size(0),
            TransferOptions::default().with_staging_buffers(1),
            TransferOptions::default().with_retry(RetryPolicy::default().with_max_attempts(0)),
        ] {
            let mut batch = TransferBatch::new();
            batch.upload(&data, &mut a).unwrap();
            assert!(matches!(mm.transfer_engine().execute(batch, opts), Err(Error::InvalidArgument { .. })));
        }
        assert_eq!(a.state(), BufferState::HostOnly);
        let mut batch = TransferBatch::new();
        batch.upload(&data, &mut a).unwrap();
        assert!(matches!(
            other.transfer_engine().execute(batch, TransferOptions::default()),
            Err(Error::ManagerMismatch { .. })
        ));
        assert_eq!(a.state(), BufferState::HostOnly);
    }
}

// ---- TransferEngine::stream_to_device ----

pub(super) mod stream_to_device {
    use super::*;
    use std::io::Read;

    /// `len` bytes (0, 1, 2, ...), then the end, or `error` if given; counts read calls.
    pub struct Reader {
        data: Vec<u8>,
        at: usize,
        error: Option<&'static str>,
        pub reads: usize,
    }

    impl Reader {
        pub fn new(len: usize, error: Option<&'static str>) -> Self {
            Reader { data: (0..len).map(|i| i as u8).collect(), at: 0, error, reads: 0 }
        }
    }

    impl Read for Reader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            if self.at == self.data.len() {
                return match self.error {
                    Some(e) => Err(std::io::Error::other(e)),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Chunks of 8 bytes: the 40-byte buffer is streamed in five, so a short reader fails
    /// after some chunks went to the device.
    fn options() -> TransferOptions {
        TransferOptions::default().with_chunk_size(8)
    }

    /// Streams `reader` into `b`: the transfer is reported failed with the reader's error
    /// (InvalidArgument for option `stream reader`), and the buffer keeps what it had.
    fn reported_failed(fx: &Fixture, b: &mut UnifiedBuffer<u32>, mut reader: Reader, fragment: &str) {
        let report = fx
            .mm
            .transfer_engine()
            .stream_to_device(&mut reader, b, options(), &mut |_, _| {})
            .expect("a failed stream is reported, not returned");
        assert_eq!((report.failed, report.transfers.len(), report.total_bytes), (1, 1, 0), "{report:?}");
        let msg = report.transfers[0].error.as_ref().map(|e| e.message()).unwrap_or_default();
        assert!(msg.starts_with("invalid value for stream reader: ") && msg.contains(fragment), "{msg}");
    }

    pub const CASES: &[BufferCase] = &[
        BufferCase {
            check: Check::PoolsMayMove,
            ..case("stream_to_device: reader ends 4 bytes early", |fx, b| {
                let mut reader = Reader::new(36, None);
                fails!(
                    fx.mm.transfer_engine().stream_to_device(&mut reader, b, options(), &mut |_, _| {}),
                    Error::ReaderLengthMismatch {
                        operation: "stream_to_device",
                        expected: 40,
                        actual: 36,
                        at_least: false
                    }
                );
            })
        },
        BufferCase {
            check: Check::PoolsMayMove,
            ..case("stream_to_device: empty reader", |fx, b| {
                let mut reader = Reader::new(0, None);
                fails!(
                    fx.mm.transfer_engine().stream_to_device(&mut reader, b, options(), &mut |_, _| {}),
                    Error::ReaderLengthMismatch {
                        operation: "stream_to_device",
                        expected: 40,
                        actual: 0,
                        at_least: false
                    }
                );
            })
        },
        BufferCase {
            check: Check::PoolsMayMove,
            ..case("stream_to_device: reader fails midway", |fx, b| {
                reported_failed(fx, b, Reader::new(20, Some("disk on fire")), "disk on fire");
            })
        },
        case("stream_to_device: buffer of another manager", |fx, b| {
            let mut reader = Reader::new(40, None);
            fails!(
                fx.other.transfer_engine().stream_to_device(&mut reader, b, options(), &mut |_, _| {}),
                Error::ManagerMismatch { operation: "stream_to_device", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
            assert_eq!(reader.reads, 0, "the reader was read although the call was refused");
        }),
        // More bytes than the buffer holds: refused, nothing of it lands in the buffer.
        BufferCase {
            check: Check::PoolsMayMove,
            ..case("stream_to_device: reader yields more than the buffer", |fx, b| {
                let mut reader = Reader::new(44, None);
                fails!(
                    fx.mm.transfer_engine().stream_to_device(&mut reader, b, options(), &mut |_, _| {}),
                    Error::ReaderLengthMismatch { operation: "stream_to_device", expected: 40, actual, at_least: true }
                        if *actual > 40
                );
            })
        },
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    /// A reader that hands out `data` at most `step` bytes per call, then `tail` more bytes of 0xEE
    /// (`usize::MAX`: endlessly), optionally claiming one byte more than the buffer it was given.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        tail: usize,
        overclaim: bool,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = if !self.data.is_empty() {
                let n = self.step.min(self.data.len()).min(buf.len());
                buf[..n].copy_from_slice(&self.data[..n]);
                self.data = &self.data[n..];
                n
            } else {
                let n = self.step.min(self.tail).min(buf.len());
                buf[..n].fill(0xEE);
                self.tail = self.tail.saturating_sub(n);
                n
            };
            Ok(if self.overclaim && n > 0 { n + 1 } else { n })
        }
    }

    /// `stream_to_device` takes exactly the buffer's size from the reader: a reader with bytes to
    /// spare, or too few, is a `ReaderLengthMismatch` naming both sizes, and the buffer keeps its
    /// contents, state and epochs (nothing installed, no device memory left allocated). A reader of
    /// exactly the right length succeeds however it cuts its reads.
    #[test]
    fn streaming_a_reader_of_the_wrong_length_fails_and_changes_nothing() {
        const BYTES: usize = 1_000_000;
        for mm in [MemoryManager::sim(SimOptions::default()), MemoryManager::cpu()] {
            let backend = mm.backend().name();
            let old = words(BYTES / 4, 7);
            let new: Vec<u8> = (0..BYTES).map(|i| (i % 253) as u8).collect();
            let mut buf = mm.allocate_from(&old).unwrap();
            buf.ensure_on_device().unwrap();
            let opts = TransferOptions::default().with_chunk_size(300_000);
            let trickle = |data, step, tail, overclaim| Trickle { data, step, tail, overclaim };
            let cases: Vec<(&str, Trickle<'_>, u64, bool)> = vec![
                ("one byte more", trickle(&new, BYTES, 1, false), BYTES as u64 + 1, true),
                ("endless", trickle(&new, 4096, usize::MAX, false), BYTES as u64 + 1, true),
                ("more, in 7-byte reads", trickle(&new, 7, 100, false), BYTES as u64 + 1, true),
                ("claims more than it was given", trickle(&new, 5000, 0, true), BYTES as u64 + 1, true),
                ("one byte short", trickle(&new[..BYTES - 1], 65536, 0, false), BYTES as u64 - 1, false),
                ("short of the last chunk", trickle(&new[..600_000], 65536, 0, false), 600_000, false),
                ("empty", trickle(&[], 1, 0, false), 0, false),
            ];
            for (case, mut reader, read, longer) in cases {
                let before = (buf.to_vec().unwrap(), buf.state(), buf.epochs());
                // Device bytes handed to buffers (in use, less whole regions cached for reuse).
                let live = |mm: &MemoryManager| {
                    let s = mm.memory_snapshot();
                    s.in_use_bytes - s.front_cached_bytes
                };
                let live_before = live(&mm);
                let err = mm
                    .transfer_engine()
                    .stream_to_device(&mut reader, &mut buf, opts.clone(), &mut |_, _| {})
                    .unwrap_err();
                assert!(
                    matches!(err, Error::ReaderLengthMismatch { operation: "stream_to_device", expected, actual, at_least }
                        if expected == BYTES as u64 && actual == read && at_least == longer),
                    "{backend}, {case}: {err:?}"
                );
                let text = err.to_string();
                assert!(text.contains(&BYTES.to_string()) && text.contains(&read.to_string()), "{text}");
                assert_eq!(
                    (buf.to_vec().unwrap(), buf.state(), buf.epochs()),
                    before,
                    "{backend}, {case}: buffer changed"
                );
                assert_eq!(live(&mm), live_before, "{backend}, {case}: the target was not released");
            }
            // Exactly the size, in uneven reads: installed.
            let report = mm
                .transfer_engine()
                .stream_to_device(&mut trickle(&new, 7777, 0, false), &mut buf, opts.clone(), &mut |_, _| {})
                .unwrap();
            assert!(report.is_success(), "{backend}: {report:?}");
            assert_eq!(bytemuck::cast_slice::<u32, u8>(&buf.to_vec().unwrap()), &new[..], "{backend}");

            // An empty buffer takes an empty reader, and refuses one with bytes.
            let mut empty = mm.allocate::<u32>(0).unwrap();
            let before = (empty.state(), empty.epochs());
            let err = mm
                .transfer_engine()
                .stream_to_device(&mut trickle(&[], 1, 3, false), &mut empty, opts.clone(), &mut |_, _| {})
                .unwrap_err();
            assert!(
                matches!(err, Error::ReaderLengthMismatch { expected: 0, actual: 1, at_least: true, .. }),
                "{backend}: {err:?}"
            );
            assert_eq!((empty.state(), empty.epochs()), before, "{backend}");
            let report =
                mm.transfer_engine().stream_to_device(&mut std::io::empty(), &mut empty, opts, &mut |_, _| {}).unwrap();
            assert!(report.is_success(), "{backend}: {report:?}");
        }
    }
}
