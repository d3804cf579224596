//! The environment: `from_env` with `DCMEM_BACKEND` and `DCMEM_DEVICE_MEMORY_LIMIT` malformed,
//! unknown, not UTF-8 or naming a backend missing from the build, `with_backend_name`, and the
//! backends' own selectors. Tests that set a variable in this process hold the environment lock;
//! the others set theirs in a child process.

use super::*;
use crate::support::child::{in_child_with_env, test_name};

// ---- from_env and with_backend_name ----

pub(super) mod from_env {
    use super::*;
    use env::set;
    use std::ffi::OsStr;

    const BACKEND: &str = "DCMEM_BACKEND";
    const LIMIT: &str = "DCMEM_DEVICE_MEMORY_LIMIT";

    /// `from_env()` with `DCMEM_BACKEND` set to `value` (None: unset), under the environment lock.
    fn from_env_with(value: Option<&str>) -> Result<MemoryManager> {
        let _guard = env::lock();
        let old = std::env::var_os(BACKEND);
        set(BACKEND, value.map(OsStr::new));
        let r = MemoryManager::from_env();
        set(BACKEND, old.as_deref());
        r
    }

    /// `from_env()` with both variables as given (None: unset), under the environment lock; asserts
    /// the call left them as it found them, and restores what they were before.
    fn from_env_vars(backend: Option<&OsStr>, limit: Option<&OsStr>) -> Result<MemoryManager> {
        let _guard = env::lock();
        let saved = [BACKEND, LIMIT].map(std::env::var_os);
        set(BACKEND, backend);
        set(LIMIT, limit);
        let r = MemoryManager::from_env();
        let after = [BACKEND, LIMIT].map(std::env::var_os);
        set(BACKEND, saved[0].as_deref());
        set(LIMIT, saved[1].as_deref());
        assert_eq!(
            after,
            [backend.map(OsStr::to_os_string), limit.map(OsStr::to_os_string)],
            "from_env changed the environment"
        );
        r
    }

    fn unknown_backend(name: &str) {
        let e = fails!(from_env_vars(Some(name.as_ref()), None), Error::UnknownBackend { name: n, .. } if n == name);
        let Error::UnknownBackend { valid, .. } = e else { unreachable!() };
        for n in BACKEND_NAMES {
            assert!(valid.contains(n), "{valid} lacks {n}");
        }
    }

    fn bad_limit(value: &str) {
        fails!(
            from_env_vars(None, Some(value.as_ref())),
            Error::InvalidArgument { option: "DCMEM_DEVICE_MEMORY_LIMIT", value: v, .. } if v == value
        );
    }

    pub const CASES: &[Case] = &[
        Case { name: "from_env: DCMEM_BACKEND unknown", run: || unknown_backend("vulkan") },
        Case { name: "from_env: DCMEM_BACKEND a known name with a suffix", run: || unknown_backend("opencl3") },
        Case { name: "from_env: DCMEM_BACKEND a known name with spaces inside", run: || unknown_backend("s i m") },
        Case {
            name: "with_backend_name: unknown name",
            run: || {
                fails!(open("nope"), Error::UnknownBackend { name, valid } if name == "nope" && valid.contains("sim"));
            },
        },
        Case {
            name: "with_backend_name: empty name",
            run: || {
                fails!(open(""), Error::UnknownBackend { name, .. } if name.is_empty());
            },
        },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT with a word for the unit", run: || bad_limit("6 megabytes") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT zero", run: || bad_limit("0") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT negative", run: || bad_limit("-1") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT a fraction", run: || bad_limit("1.5GiB") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT above u64", run: || bad_limit("99999999999999999999") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT above u64 once scaled", run: || bad_limit("20000000T") },
        #[cfg(unix)]
        Case {
            name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT not UTF-8",
            run: || {
                use std::os::unix::ffi::OsStringExt;
                let raw = std::ffi::OsString::from_vec(vec![b'6', 0xFF, b'M']);
                fails!(
                    from_env_vars(None, Some(&raw)),
                    Error::InvalidArgument { option: "DCMEM_DEVICE_MEMORY_LIMIT", value, .. }
                        if value.contains("not valid UTF-8") && value.contains("\\xFF")
                );
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

    #[test]
    fn from_env_reads_the_device_memory_limit_and_names_a_bad_one() {
        let _guard = env::lock();
        let old = std::env::var_os(LIMIT);
        let with = |v: &str| {
            std::env::set_var(LIMIT, v);
            MemoryManager::from_env()
        };
        let ok = with("6MiB").map(|mm| mm.options().device_memory_limit);
        let bad = with("6 megabytes").err();
        let empty = with(" ").map(|mm| mm.options().device_memory_limit);
        set(LIMIT, old.as_deref());
        assert_eq!(ok.unwrap(), Some(6 << 20));
        assert_eq!(empty.unwrap(), None, "empty means unset");
        let err = bad.expect("a malformed limit is an error");
        assert!(
            matches!(&err, Error::InvalidArgument { option: "DCMEM_DEVICE_MEMORY_LIMIT", value, .. } if value == "6 megabytes"),
            "{err:?}"
        );
        assert!(err.to_string().contains("512MiB"), "says what is accepted: {err}");
    }

    #[test]
    fn from_env_unknown_backend_lists_the_valid_names() {
        for bad in ["vulkan", "cpux", "s i m", "opencl3"] {
            let err = from_env_with(Some(bad)).unwrap_err();
            match &err {
                Error::UnknownBackend { name, valid } => {
                    assert_eq!(name, bad);
                    for n in BACKEND_NAMES {
                        assert!(valid.contains(n), "{valid} lacks {n}");
                    }
                }
                other => panic!("{bad}: expected UnknownBackend, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(bad) && msg.contains("cpu") && msg.contains("sim"), "{msg}");
        }
        // The same through the explicit constructor.
        let err = open("nope").unwrap_err();
        assert!(matches!(err, Error::UnknownBackend { ref name, .. } if name == "nope"), "{err:?}");
        // Unset, empty, and differently spelt known names work.
        assert_eq!(from_env_with(None).unwrap().backend().name(), "cpu");
        assert_eq!(from_env_with(Some("")).unwrap().backend().name(), "cpu");
        assert_eq!(from_env_with(Some(" SIM ")).unwrap().backend().name(), "sim");
    }

    #[test]
    fn from_env_backends_missing_from_the_build_are_unavailable_with_a_reason() {
        let compiled = |name: &str| {
            let table = [
                ("opencl", cfg!(feature = "opencl")),
                ("cuda", cfg!(feature = "cuda")),
                ("metal", cfg!(all(feature = "metal", target_os = "macos"))),
            ];
            table.iter().find(|(n, _)| *n == name).is_none_or(|(_, built)| *built)
        };
        for name in ["opencl", "cuda", "metal"] {
            match from_env_with(Some(name)) {
                Ok(mm) => {
                    assert!(compiled(name), "{name} opened in a build without it");
                    assert_eq!(mm.backend().name(), name);
                }
                Err(Error::BackendUnavailable { backend, reason }) => {
                    assert_eq!(backend, name);
                    assert!(!reason.trim().is_empty(), "{name}: empty reason");
                    if !compiled(name) && (name != "metal" || cfg!(target_os = "macos")) {
                        assert!(reason.contains(&format!("features = [\"{name}\"]")), "{name}: {reason}");
                    }
                    if name == "metal" && !cfg!(target_os = "macos") {
                        assert!(reason.contains("Apple"), "{reason}");
                    }
                }
                Err(other) => panic!("{name}: expected BackendUnavailable or success, got {other:?}"),
            }
        }
    }

    /// `from_env`: every malformed `DCMEM_DEVICE_MEMORY_LIMIT` is an error naming it, never a panic
    /// and never silently "no limit" (a value that is not UTF-8 included); the largest value is
    /// accepted. Sets the variables in this process, under the environment lock.
    #[test]
    fn from_env_rejects_every_malformed_limit_and_accepts_the_largest() {
        const VAR: &str = "DCMEM_DEVICE_MEMORY_LIMIT";
        let _guard = env::lock();
        let saved = (std::env::var_os("DCMEM_BACKEND"), std::env::var_os(VAR));
        std::env::set_var("DCMEM_BACKEND", "cpu");
        let limit_of = |value: &std::ffi::OsStr| {
            std::env::set_var(VAR, value);
            MemoryManager::from_env().map(|mm| mm.options().device_memory_limit)
        };
        assert_eq!(limit_of("18446744073709551615".as_ref()).unwrap(), Some(u64::MAX));
        assert_eq!(limit_of("16 TiB".as_ref()).unwrap(), Some(16 << 40));
        for bad in ["16EiB", "18446744073709551616", "１２", "1e9", "0x10", "+5", "5 MiB extra"] {
            let err = limit_of(bad.as_ref()).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { option: VAR, .. }), "{bad:?}: {err}");
        }
        // Zero parses but is no usable limit: rejected by the options' validation.
        assert!(matches!(limit_of("0".as_ref()), Err(Error::InvalidArgument { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let err = limit_of(std::ffi::OsStr::from_bytes(b"64\xffMiB")).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { option: VAR, .. }), "a non-UTF-8 limit was ignored: {err}");
        }
        for (name, value) in [("DCMEM_BACKEND", saved.0), (VAR, saved.1)] {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
    }

    /// `from_env`: a `DCMEM_BACKEND` that is not UTF-8 is an error naming the variable and showing
    /// the bytes, never "unset" (which would select cpu). Run in a child process that alone sees
    /// the variable.
    #[cfg(unix)]
    #[test]
    fn from_env_rejects_a_backend_name_that_is_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let vars: [(&str, &std::ffi::OsStr); 2] = [
            ("DCMEM_BACKEND", std::ffi::OsStr::from_bytes(b"cp\xffu")),
            ("DCMEM_DEVICE_MEMORY_LIMIT", "64MiB".as_ref()),
        ];
        in_child_with_env(test_name!(from_env_rejects_a_backend_name_that_is_not_utf8), &vars, || {
            let err = MemoryManager::from_env().map(|mm| mm.backend().name()).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument { option: "DCMEM_BACKEND", value, .. } if value.contains(r"cp\xFFu")),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("DCMEM_BACKEND") && text.contains("UTF-8") && text.contains("cpu"), "{text}");
        });
    }

    /// The backends' own selectors (`DCMEM_OPENCL_DEVICE`, `DCMEM_CUDA_DEVICE`) that are not UTF-8
    /// are errors naming the variable too, never "no selector".
    #[cfg(unix)]
    #[test]
    fn backend_selectors_that_are_not_utf8_are_named_errors() {
        use std::os::unix::ffi::OsStrExt;
        let bad = std::ffi::OsStr::from_bytes(b"0\xff");
        let vars: [(&str, &std::ffi::OsStr); 3] =
            [("DCMEM_OPENCL_DEVICE", bad), ("DCMEM_CUDA_DEVICE", bad), ("DCMEM_REQUIRE_SIM", bad)];
        in_child_with_env(test_name!(backend_selectors_that_are_not_utf8_are_named_errors), &vars, || {
            #[cfg(feature = "opencl")]
            {
                let err = dotcompute_memory::backend::opencl::OpenClOptions::from_env().unwrap_err();
                assert!(matches!(&err, Error::InvalidArgument { option: "DCMEM_OPENCL_DEVICE", .. }), "{err:?}");
            }
            #[cfg(feature = "cuda")]
            {
                let err = dotcompute_memory::backend::cuda::CudaBackend::from_env().map(drop).unwrap_err();
                assert!(matches!(&err, Error::InvalidArgument { option: "DCMEM_CUDA_DEVICE", .. }), "{err:?}");
            }
            let err = dotcompute_memory::backend::required("sim").unwrap_err();
            assert!(matches!(&err, Error::InvalidArgument { option: "DCMEM_REQUIRE_SIM", .. }), "{err:?}");
        });
    }

    /// `from_env`: with both variables well-formed in a child process, the backend and the limit
    /// are what they say (the error paths above are not taken for valid values).
    #[test]
    fn from_env_reads_both_variables_when_they_are_well_formed() {
        let vars: [(&str, &std::ffi::OsStr); 2] =
            [("DCMEM_BACKEND", " sim ".as_ref()), ("DCMEM_DEVICE_MEMORY_LIMIT", "64MiB".as_ref())];
        in_child_with_env(test_name!(from_env_reads_both_variables_when_they_are_well_formed), &vars, || {
            let mm = MemoryManager::from_env().unwrap();
            assert_eq!((mm.backend().name(), mm.options().device_memory_limit), ("sim", Some(64 << 20)));
        });
    }
}
