//! Reading traces: both formats, with the liberties real logs take, and every kind of
//! malformed line, each an error naming its line and what was expected.

use dotcompute_memory::trace::{parse, read, TraceFormat};
use dotcompute_memory::{Error, TraceEvent, TraceOp};

fn event(t_ns: u64, thread: u64, op: TraceOp, id: u64, bytes: u64) -> TraceEvent {
    TraceEvent { t_ns, thread, op, id, bytes, device: None, site: None }
}

/// The line and the two texts of a `MalformedTrace` error.
fn malformed(text: &str) -> (u64, String, &'static str) {
    match parse(text) {
        Err(Error::MalformedTrace { line, found, expected }) => (line, found, expected),
        other => panic!("expected a malformed-trace error for {text:?}, got {other:?}"),
    }
}

#[test]
fn json_lines_are_read_with_optional_fields_and_blank_lines() {
    let text = "\n{\"t_ns\":5,\"thread\":1,\"op\":\"alloc\",\"id\":7,\"bytes\":64,\"device\":\"cuda:0\",\"site\":\"a.rs:3\"}\n\
                \r\n  {\"t_ns\":9,\"thread\":2,\"op\":\"free\",\"id\":7,\"bytes\":64,\"extra\":true}  \r\n";
    let parsed = parse(text).unwrap();
    assert_eq!(parsed.format, TraceFormat::JsonLines);
    let mut first = event(5, 1, TraceOp::Alloc, 7, 64);
    first.device = Some("cuda:0".into());
    first.site = Some("a.rs:3".into());
    assert_eq!(parsed.events, [first, event(9, 2, TraceOp::Free, 7, 64)]);
    assert_eq!(parse("").unwrap().events, []);
    assert_eq!(parse("\n  \n").unwrap().events, []);
}

#[test]
fn rmm_logs_are_read_in_any_column_order_with_extra_columns() {
    let text = "Thread,Time,Action,Pointer,Size,Stream\n\
                140573312345856,1634567890.123456,allocate,0x7f8a40000000,1024,0x7f8a38001020\n\
                140573312345999, 1634567890.5 , allocate , 0x7F8A40000400 , 2048 , 0x0\n\
                140573312345856,1634567891,deallocate,0x7f8a40000000,1024,0x7f8a38001020\n\
                140573312345999,1634567891.25,allocate failure,0x0,1099511627776,0x0\n\
                140573312345999,1634567892,free,140231755957248,2048,0x0\n";
    let parsed = parse(text).unwrap();
    assert_eq!(parsed.format, TraceFormat::RmmCsv);
    assert_eq!(parsed.failed_allocations, 1);
    let id = 0x7f8a40000000;
    assert_eq!(
        parsed.events,
        [
            event(0, 1, TraceOp::Alloc, id, 1024),
            event(376_544_000, 2, TraceOp::Alloc, id + 0x400, 2048),
            event(876_544_000, 1, TraceOp::Free, id, 1024),
            event(1_876_544_000, 2, TraceOp::Free, id + 0x400, 2048),
        ]
    );
    // Columns in another order, an extra one, a time of day, no Stream.
    let text =
        "  size , action,Thread,Pointer,Time,Note\n100,allocate,7,16,10:00:00.5,x\n100,deallocate,7,16,10:00:01,y\n";
    let parsed = parse(text).unwrap();
    assert_eq!(parsed.events, [event(0, 1, TraceOp::Alloc, 16, 100), event(500_000_000, 1, TraceOp::Free, 16, 100)]);
}

#[test]
fn a_malformed_json_line_names_its_line_and_the_fields() {
    let good = r#"{"t_ns":1,"thread":1,"op":"alloc","id":1,"bytes":8}"#;
    let cases = [
        (format!("{good}\n{{\"t_ns\":2,\"thread\":1,\"op\":\"alloc\",\"id\":2}}"), 2, "missing field `bytes`"),
        (
            format!("{good}\n\n{{\"t_ns\":2,\"thread\":1,\"op\":\"grow\",\"id\":2,\"bytes\":1}}"),
            3,
            "unknown variant `grow`",
        ),
        (format!("{good}\n{{\"t_ns\":-2,\"thread\":1,\"op\":\"free\",\"id\":2,\"bytes\":1}}"), 2, "invalid value"),
        (format!("{good}\nThread,Time,Action,Pointer,Size"), 2, "expected value"),
        (format!("{good}\n{{\"t_ns\":2,"), 2, "EOF"),
    ];
    for (text, line, what) in cases {
        let (at, found, expected) = malformed(&text);
        assert_eq!(at, line, "{text}: {found}");
        assert!(found.contains(what), "{text}: {found}");
        assert!(expected.contains("t_ns") && expected.contains("\"alloc\" or \"free\""), "{expected}");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.starts_with(&format!("line {line} of the trace: ")), "{message}");
    }
}

#[test]
fn a_malformed_csv_line_names_its_line_and_the_column() {
    let header = "Thread,Time,Action,Pointer,Size,Stream";
    let cases = [
        ("1,0.5,allocate,0x10", 2, "4 field(s)", "one value per column"),
        ("1,0.5,grow,0x10,8,0x0", 2, "Action `grow`", "allocate, deallocate or free"),
        ("1,soon,allocate,0x10,8,0x0", 2, "Time `soon`", "a time"),
        ("1,-1,allocate,0x10,8,0x0", 2, "Time `-1`", "a time"),
        (
            "1,100000000000000000000000000000000000:0:0,allocate,0x10,8,0x0",
            2,
            "Time `100000000000000000000000000000000000:0:0`",
            "a time",
        ),
        ("1,0.5,allocate,0xZZ,8,0x0", 2, "Pointer `0xZZ`", "hexadecimal"),
        ("1,0.5,allocate,0x10,-8,0x0", 2, "Size `-8`", "a Size in bytes"),
        ("1,0.5,allocate,0x10,8.5,0x0", 2, "Size `8.5`", "a Size in bytes"),
    ];
    for (row, line, what, expected_part) in cases {
        let text = format!("{header}\n{row}\n");
        let (at, found, expected) = malformed(&text);
        assert_eq!(at, line, "{row}: {found}");
        assert!(found.contains(what) && found.contains(row), "{row}: {found}");
        assert!(expected.contains(expected_part), "{row}: {expected}");
    }
    // The error is on the first bad line, after good ones.
    let text = format!("{header}\n1,0.5,allocate,0x10,8,0x0\n\n1,0.6,deallocate,0x10,eight,0x0\n");
    assert_eq!(malformed(&text).0, 4);
}

#[test]
fn a_size_above_isize_max_is_a_malformed_line_saying_the_largest() {
    let largest = isize::MAX as u64;
    let too_big = largest + 1;
    let header = "Thread,Time,Action,Pointer,Size,Stream";
    for action in ["allocate", "deallocate"] {
        let text = format!("{header}\n1,0.1,allocate,0x10,8,0x0\n1,0.2,{action},0x20,{too_big},0x0\n");
        let (line, found, expected) = malformed(&text);
        assert_eq!(line, 3, "{found}");
        assert!(found.contains(&format!("Size `{too_big}`")) && found.contains(&largest.to_string()), "{found}");
        assert!(expected.contains("a Size in bytes"), "{expected}");
    }
    let good = r#"{"t_ns":1,"thread":1,"op":"alloc","id":1,"bytes":8}"#;
    let text = format!("{good}\n{{\"t_ns\":2,\"thread\":1,\"op\":\"alloc\",\"id\":2,\"bytes\":{}}}\n", u64::MAX);
    let (line, found, expected) = malformed(&text);
    assert_eq!(line, 2, "{found}");
    assert!(found.contains(&format!("bytes {}", u64::MAX)) && found.contains(&largest.to_string()), "{found}");
    assert!(expected.contains("bytes"), "{expected}");
    // The largest is accepted, in both formats.
    let text = format!("{header}\n1,0.1,allocate,0x10,{largest},0x0\n");
    assert_eq!(parse(&text).unwrap().events[0].bytes, largest);
    let text = format!("{{\"t_ns\":2,\"thread\":1,\"op\":\"alloc\",\"id\":2,\"bytes\":{largest}}}\n");
    assert_eq!(parse(&text).unwrap().events[0].bytes, largest);
}

#[test]
fn a_first_line_of_neither_format_says_what_was_expected() {
    let (line, found, expected) = malformed("hello world\n");
    assert_eq!((line, found.as_str()), (1, "`hello world`"));
    assert!(expected.contains("JSON object") && expected.contains("Thread,Time,Action,Pointer,Size,Stream"));
    let (line, found, expected) = malformed("\n\nThread,Time,Action,Size\n");
    assert_eq!(line, 3);
    assert!(found.contains("without the column(s) Pointer"), "{found}");
    assert!(expected.contains("Thread, Time, Action, Pointer and Size"), "{expected}");
    let (line, found, _) = malformed(&format!("{}\n", "x".repeat(500)));
    assert_eq!(line, 1);
    assert!(found.len() < 100 && found.ends_with("...`"), "{found}");
}

#[test]
fn bytes_that_are_not_utf8_are_a_malformed_line() {
    let mut text = b"Thread,Time,Action,Pointer,Size\n1,0.1,allocate,0x1,8\n".to_vec();
    text.extend_from_slice(b"1,0.2,\xff\xfe,0x1,8\n");
    match read(&text[..]) {
        Err(Error::MalformedTrace { line: 3, found, expected: "UTF-8 text" }) => assert!(found.contains("not UTF-8")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_byte_order_mark_before_the_first_line_is_skipped() {
    let bom = "\u{feff}";
    let csv = "Thread,Time,Action,Pointer,Size,Stream\r\n1,0.1,allocate,0x10,8,0x0\r\n1,0.2,free,0x10,8,0x0\r\n";
    let json = "{\"t_ns\":1,\"thread\":1,\"op\":\"alloc\",\"id\":16,\"bytes\":8}\r\n";
    for (text, format, events) in [(csv, TraceFormat::RmmCsv, 2), (json, TraceFormat::JsonLines, 1)] {
        let with_bom = parse(&format!("{bom}{text}")).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!((with_bom.format, with_bom.events.len()), (format, events), "{text:?}");
        assert_eq!(with_bom, parse(text).unwrap(), "{text:?}");
    }
    // Only before the first line: anywhere else it is a character of the line.
    let (line, found, _) = malformed(&format!("{json}{bom}{json}"));
    assert_eq!(line, 2, "{found}");
}

#[test]
fn a_reader_that_fails_is_an_os_error() {
    struct Failing;
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(5))
        }
    }
    match read(std::io::BufReader::new(Failing)) {
        Err(e @ Error::Os { operation: "read", errno: 5, .. }) => {
            let Error::Os { target, message, .. } = &e else { unreachable!() };
            assert!(target.contains("the trace"), "{e}");
            // The number is said once, by the error's own `(errno 5)`.
            assert!(!message.contains("os error") && !message.is_empty(), "{message:?}");
            assert!(e.to_string().ends_with("(errno 5)"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
