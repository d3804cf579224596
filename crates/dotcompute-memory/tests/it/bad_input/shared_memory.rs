//! Memory with a name outside the process: shared segments (`allocate_shared`, `open_shared`:
//! bad names, missing, existing, of another type, corrupt or truncated) and file mappings
//! (`MappedBuffer`, `MappedBufferMut`: missing files, sizes that do not divide, sizes the file
//! system refuses).

use super::*;

// ---- allocate_shared and open_shared ----

#[cfg(unix)]
pub(super) mod shared {
    use super::*;
    use dotcompute_memory::host::MAX_NAME_LEN;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A name no other test (or parallel run of this binary) uses.
    fn unique(tag: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!("dcmem-bad-{}-{tag}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    fn shm_path(name: &str) -> std::path::PathBuf {
        std::path::Path::new("/dev/shm").join(name)
    }

    /// Runs `f` against a manager and asserts it moved none of its counters.
    fn unchanged(f: impl FnOnce(&MemoryManager)) {
        let mm = cpu();
        let c = counters(&mm);
        f(&mm);
        check_counters(&mm, &c, Check::Everything, "shared");
    }

    /// `name` is refused by both calls, and no segment of that name appears.
    fn bad_name(name: &str, reason: &str) {
        unchanged(|mm| {
            for r in [mm.allocate_shared::<u8>(name, 4).map(drop), mm.open_shared::<u8>(name).map(drop)] {
                fails!(r, Error::SharedName { name: n, reason: why } if n == name && why.contains(reason));
            }
        });
        if !name.is_empty() && !name.contains(['/', '\0']) && name != "." && name != ".." {
            assert!(!shm_path(name).exists());
        }
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "open_shared: no such name",
            run: || {
                let name = unique("missing");
                unchanged(|mm| {
                    fails!(mm.open_shared::<u32>(&name), Error::SharedNotFound { name: n } if *n == name);
                });
            },
        },
        Case {
            name: "open_shared: another element type of the same size",
            run: || {
                let name = unique("type");
                let mut buf = cpu().allocate_shared::<f32>(&name, 4).unwrap();
                buf[1] = 2.5;
                unchanged(|mm| {
                    fails!(
                        mm.open_shared::<u32>(&name),
                        Error::SharedTypeMismatch {
                            expected_type: "u32",
                            expected_id: 5,
                            expected_size: 4,
                            found_id: 9,
                            found_size: 4,
                            ..
                        }
                    );
                });
                assert_eq!(&buf[..], &[0.0, 2.5, 0.0, 0.0]);
            },
        },
        Case {
            name: "open_shared: an element type of another size",
            run: || {
                let name = unique("size");
                let _buf = cpu().allocate_shared::<f32>(&name, 4).unwrap();
                unchanged(|mm| {
                    fails!(
                        mm.open_shared::<f64>(&name),
                        Error::SharedTypeMismatch { expected_type: "f64", expected_size: 8, found_size: 4, .. }
                    );
                });
            },
        },
        Case {
            name: "allocate_shared: the name exists",
            run: || {
                let name = unique("exists");
                let mut buf = cpu().allocate_shared::<u32>(&name, 4).unwrap();
                buf[0] = 7;
                unchanged(|mm| {
                    fails!(
                        mm.allocate_shared::<u32>(&name, 8),
                        Error::SharedExists { name: n, creator_pid } if *n == name && *creator_pid == Some(std::process::id())
                    );
                });
                assert_eq!(&buf[..], &[7, 0, 0, 0]);
                // Reopened after this process's handle is closed (one handle per segment).
                buf.persist();
                let again = cpu().open_shared::<u32>(&name).unwrap();
                assert_eq!(&again[..], &[7, 0, 0, 0], "the segment was resized or changed");
                SharedBuffer::remove(&name).unwrap();
            },
        },
        Case { name: "shared name: empty", run: || bad_name("", "empty") },
        Case { name: "shared name: contains '/'", run: || bad_name("a/b", "'/'") },
        Case { name: "shared name: leading '/'", run: || bad_name("/lead", "'/'") },
        Case { name: "shared name: too long", run: || bad_name(&"n".repeat(MAX_NAME_LEN + 1), "bytes long") },
        Case { name: "shared name: NUL byte", run: || bad_name("a\0b", "NUL") },
        Case { name: "shared name: '.'", run: || bad_name(".", "are not names") },
        Case { name: "shared name: '..'", run: || bad_name("..", "are not names") },
        Case {
            name: "allocate_shared: len * size_of::<T>() overflows",
            run: || {
                let name = unique("overflow");
                unchanged(|mm| {
                    fails!(
                        mm.allocate_shared::<u64>(&name, usize::MAX / 2),
                        Error::LengthOverflow { element_size: 8, .. }
                    );
                });
                assert!(!shm_path(&name).exists(), "a refused allocate_shared left a segment");
            },
        },
        Case {
            name: "open_shared: segment shorter than a header",
            run: || {
                let name = unique("truncated");
                let bytes = &SharedHeader::for_type::<u32>(100, 1).unwrap().encode()[..20];
                std::fs::write(shm_path(&name), bytes).unwrap();
                unchanged(|mm| {
                    fails!(mm.open_shared::<u32>(&name), Error::SharedCorrupt { field: "segment size", name: n, .. } if *n == name);
                });
                let left = std::fs::read(shm_path(&name));
                std::fs::remove_file(shm_path(&name)).unwrap();
                assert_eq!(left.unwrap(), bytes, "open_shared changed the segment");
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

    #[test]
    fn wrong_type_or_size_is_a_type_mismatch() {
        let mm = MemoryManager::cpu();
        let name = unique("type");
        let _buf = mm.allocate_shared::<f32>(&name, 4).unwrap();
        match mm.open_shared::<u32>(&name).unwrap_err() {
            Error::SharedTypeMismatch { expected_type, expected_id, found_id, found_size, .. } => {
                assert_eq!((expected_type, expected_id), ("u32", u32::TYPE_TAG.id));
                assert_eq!((found_id, found_size), (f32::TYPE_TAG.id, 4));
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = mm.open_shared::<f64>(&name).unwrap_err();
        assert!(matches!(err, Error::SharedTypeMismatch { expected_size: 8, found_size: 4, .. }), "{err:?}");
        assert!(err.to_string().contains(&name));
        // The type is checked first; as `f32` the segment is simply open already.
        assert!(matches!(mm.open_shared::<f32>(&name), Err(Error::SharedAlreadyOpen { .. })));
    }

    #[test]
    fn bad_names() {
        let mm = MemoryManager::cpu();
        for name in ["", "a/b", "/lead", &"n".repeat(MAX_NAME_LEN + 1)] {
            assert!(matches!(mm.allocate_shared::<u8>(name, 1), Err(Error::SharedName { .. })), "{name:?}");
            assert!(matches!(mm.open_shared::<u8>(name), Err(Error::SharedName { .. })), "{name:?}");
        }
        let missing = unique("missing");
        match mm.open_shared::<u8>(&missing).unwrap_err() {
            Error::SharedNotFound { name } => assert_eq!(name, missing),
            other => panic!("unexpected {other:?}"),
        }
        let err = mm.allocate_shared::<u64>(&unique("overflow"), usize::MAX / 2).unwrap_err();
        assert!(matches!(err, Error::LengthOverflow { .. }), "{err:?}");
    }

    /// Writes `bytes` as segment `name` directly in /dev/shm (what a foreign or broken writer
    /// would leave), and expects `open_shared` to fail on `field`.
    fn expect_corrupt(bytes: &[u8], field: &str) {
        let mm = MemoryManager::cpu();
        let name = unique("corrupt");
        std::fs::write(shm_path(&name), bytes).unwrap();
        let result = mm.open_shared::<u32>(&name);
        std::fs::remove_file(shm_path(&name)).unwrap();
        match result {
            Err(Error::SharedCorrupt { field: f, name: n, .. }) => {
                assert_eq!(f, field);
                assert_eq!(n, name);
            }
            other => panic!("expected a corrupt {field}, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_and_truncated_segments_are_refused_before_any_access() {
        let header = SharedHeader::for_type::<u32>(100, 1).unwrap();
        let mut good = header.encode().to_vec();
        good.resize(header.segment_size() as usize, 0);

        let mut bad_magic = good.clone();
        bad_magic[..8].copy_from_slice(b"NOTOURS!");
        expect_corrupt(&bad_magic, "magic");

        let mut bad_version = SharedHeader { version: 9, ..header }.encode().to_vec();
        bad_version.resize(good.len(), 0);
        expect_corrupt(&bad_version, "layout version");

        let mut too_long = SharedHeader { len: 10_000, ..header }.encode().to_vec();
        too_long.resize(good.len(), 0);
        expect_corrupt(&too_long, "length");

        expect_corrupt(&good[..good.len() - 1], "length"); // truncated data
        expect_corrupt(&good[..20], "segment size"); // truncated header
        expect_corrupt(&[], "segment size");

        let mut flipped = good.clone();
        flipped[20] ^= 0xFF; // element size, checksum not updated
        expect_corrupt(&flipped, "checksum");

        // And the intact bytes open fine.
        let mm = MemoryManager::cpu();
        let name = unique("intact");
        std::fs::write(shm_path(&name), &good).unwrap();
        let opened = mm.open_shared::<u32>(&name).map(|b| b.len());
        std::fs::remove_file(shm_path(&name)).unwrap();
        assert_eq!(opened.unwrap(), 100);
    }
}

// ---- MappedBuffer and MappedBufferMut ----

#[cfg(unix)]
pub(super) mod mapped {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A path in the temporary directory that no other test uses; holds `contents` if given.
    fn file(tag: &str, contents: Option<&[u8]>) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dcmem-bad-{}-{tag}-{n}", std::process::id()));
        if let Some(c) = contents {
            std::fs::write(&path, c).unwrap();
        }
        path
    }

    /// Asserts `path` still holds `contents` (its size first: a refused call may have left a
    /// huge sparse file), and removes it.
    fn still_holds(path: &PathBuf, contents: &[u8]) {
        let size = std::fs::metadata(path).map(|m| m.len());
        let now = match size {
            Ok(n) if n == contents.len() as u64 => std::fs::read(path).ok(),
            _ => None,
        };
        let _ = std::fs::remove_file(path);
        assert_eq!(now.as_deref(), Some(contents), "a refused call changed the file (size now {size:?})");
    }

    const SEVEN: &[u8] = &[1, 2, 3, 4, 5, 6, 7];

    pub const CASES: &[Case] = &[
        Case {
            name: "MappedBuffer::open: no such file",
            run: || {
                let path = file("missing", None);
                // SAFETY: the call fails before anything is mapped.
                let r = unsafe { MappedBuffer::<u8>::open(&path) };
                fails!(r, Error::Os { operation: "open", errno: 2, .. });
                assert!(!path.exists());
            },
        },
        Case {
            name: "MappedBuffer::open: file size not a multiple of the element",
            run: || {
                let path = file("seven", Some(SEVEN));
                // SAFETY: nobody else touches the file; the call fails before mapping it.
                let r = unsafe { MappedBuffer::<u32>::open(&path) };
                fails!(r, Error::CastMismatch { len: 7, from_size: 1, to_size: 4, .. });
                still_holds(&path, SEVEN);
            },
        },
        Case {
            name: "MappedBufferMut::open: file size not a multiple of the element",
            run: || {
                let path = file("seven-mut", Some(SEVEN));
                // SAFETY: as above.
                let r = unsafe { MappedBufferMut::<u64>::open(&path) };
                fails!(r, Error::CastMismatch { len: 7, to_size: 8, .. });
                still_holds(&path, SEVEN);
            },
        },
        Case {
            name: "MappedBufferMut::create: len * size_of::<T>() overflows",
            run: || {
                let path = file("overflow", Some(SEVEN));
                // SAFETY: as above.
                let r = unsafe { MappedBufferMut::<u64>::create(&path, usize::MAX / 4) };
                fails!(r, Error::LengthOverflow { element_size: 8, .. });
                still_holds(&path, SEVEN);
            },
        },
        Case {
            name: "MappedBufferMut::create: directory does not exist",
            run: || {
                let path = file("dir", None).join("file");
                // SAFETY: the call fails before anything is mapped.
                let r = unsafe { MappedBufferMut::<u8>::create(&path, 16) };
                fails!(r, Error::Os { operation: "open", errno: 2, .. });
            },
        },
        Case {
            name: "MappedBufferMut::create: a size the file system refuses",
            run: || {
                let path = file("too-big", Some(SEVEN));
                // SAFETY: nobody else touches the file.
                let r = unsafe { MappedBufferMut::<u8>::create(&path, 1 << 62) };
                // ftruncate refuses it on most file systems; one that allows sparse files this
                // large (tmpfs) refuses the mapping instead.
                fails!(r, Error::Os { operation: "ftruncate" | "mmap", .. });
                still_holds(&path, SEVEN);
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

    #[test]
    fn sizes_that_do_not_divide_and_missing_files_are_errors() {
        let path = file("odd", None);
        std::fs::write(&path, [0u8; 10]).unwrap();
        // SAFETY: the file is private to this test.
        let err = unsafe { MappedBuffer::<u64>::open(&path) }.unwrap_err();
        assert!(matches!(err, Error::CastMismatch { len: 10, to_size: 8, .. }), "{err:?}");
        // SAFETY: as above.
        let ok = unsafe { MappedBuffer::<u16>::open(&path) }.unwrap();
        assert_eq!(ok.len(), 5);
        std::fs::remove_file(&path).unwrap();

        let missing = file("missing", None);
        // SAFETY: the call fails before mapping.
        let err = unsafe { MappedBuffer::<u8>::open(&missing) }.unwrap_err();
        match err {
            Error::Os { operation: "open", target, errno, .. } => {
                assert!(target.contains("dcmem-bad"));
                assert_eq!(errno, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
