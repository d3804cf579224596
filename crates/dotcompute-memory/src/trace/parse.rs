//! Reading traces: our JSON Lines ([`super::Trace::to_json_lines`]) and the CSV log of RMM's
//! `logging_resource_adaptor` (header `Thread,Time,Action,Pointer,Size,Stream`), told apart by
//! their first line.

use super::{TraceEvent, TraceOp};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::BufRead;

/// The two formats [`read`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TraceFormat {
    /// One JSON object per line, as a recording manager writes them.
    JsonLines,
    /// RMM's logging CSV.
    RmmCsv,
}

impl std::fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TraceFormat::JsonLines => "JSON Lines",
            TraceFormat::RmmCsv => "RMM CSV",
        })
    }
}

/// A trace read by [`read`] or [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTrace {
    /// The format of the first line.
    pub format: TraceFormat,
    /// The events, in the order of the file.
    pub events: Vec<TraceEvent>,
    /// Lines of RMM's log that record an allocation that failed (`allocate failure`), which
    /// allocated nothing and are left out of `events`.
    pub failed_allocations: u64,
}

const FIRST_LINE: &str = "a JSON object (a JSON Lines trace, as Diagnostics::trace writes) or the header of RMM's \
                          logging CSV (Thread,Time,Action,Pointer,Size,Stream)";
const JSON_LINE: &str = "one JSON object per line with t_ns, thread, id and bytes (unsigned integers) and op \
                         (\"alloc\" or \"free\"), optionally device and site (strings)";
const CSV_HEADER: &str = "RMM's CSV header naming the columns Thread, Time, Action, Pointer and Size (Stream and \
                          others are ignored)";
const CSV_FIELDS: &str = "one value per column of the header, separated by commas";
const CSV_TIME: &str = "a time: seconds as a number (1634567890.123456 or 1634567890) or a time of day \
                        (10:18:37.482427)";
const CSV_ACTION: &str = "an Action of allocate, deallocate or free (allocate failure lines are skipped)";
const CSV_POINTER: &str = "a Pointer in hexadecimal (0x7f8a40000000) or decimal";
const CSV_SIZE: &str = "a Size in bytes (a non-negative integer)";
/// The largest size a trace may give: the most one allocation can have on this machine.
const LARGEST_SIZE: u64 = isize::MAX as u64;

/// Reads a trace from text; see [`read`].
pub fn parse(text: &str) -> Result<ParsedTrace> {
    read(text.as_bytes())
}

/// Reads a trace: JSON Lines when its first non-blank line is a JSON object, RMM's CSV when it
/// is RMM's header. A UTF-8 byte order mark before the first line and blank lines are
/// skipped; lines may end in `\r\n`; fields may have whitespace around them; CSV
/// columns may come in any order, with others (`Stream`) ignored.
///
/// RMM's threads become numbers 1, 2, ... in the order they first appear; its times become
/// nanoseconds since the first event.
///
/// # Errors
///
/// [`Error::MalformedTrace`] naming the first line that is not what the format needs and
/// what was expected there; [`Error::Os`] when reading fails.
pub fn read(mut reader: impl BufRead) -> Result<ParsedTrace> {
    let mut parser: Option<Parser> = None;
    let mut raw = Vec::new();
    let mut number = 0u64;
    loop {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| Error::from_io("read", format!("the trace after line {number}"), &e))?;
        if n == 0 {
            break;
        }
        number += 1;
        let line = std::str::from_utf8(&raw).map_err(|e| Error::MalformedTrace {
            line: number,
            found: format!("bytes that are not UTF-8 (at byte {})", e.valid_up_to()),
            expected: "UTF-8 text",
        })?;
        // A byte order mark, as editors on Windows put before the first line, is not text.
        let line = if number == 1 { line.strip_prefix('\u{feff}').unwrap_or(line) } else { line };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match &mut parser {
            Some(p) => p.line(number, line)?,
            None => parser = Some(Parser::first(number, line)?),
        }
    }
    Ok(match parser {
        Some(p) => p.finish(),
        None => ParsedTrace { format: TraceFormat::JsonLines, events: Vec::new(), failed_allocations: 0 },
    })
}

/// What a message says of [`LARGEST_SIZE`].
fn largest_size() -> String {
    format!("the largest size accepted, {LARGEST_SIZE} bytes (the most one allocation can have on this machine)")
}

/// `line`, shortened for a message.
fn shown(line: &str) -> String {
    let mut s: String = line.chars().take(80).collect();
    if s.len() < line.len() {
        s.push_str("...");
    }
    format!("`{s}`")
}

enum Parser {
    Json(Vec<TraceEvent>),
    Csv(Csv),
}

impl Parser {
    fn first(number: u64, line: &str) -> Result<Parser> {
        if line.starts_with('{') {
            let mut p = Parser::Json(Vec::new());
            p.line(number, line)?;
            return Ok(p);
        }
        Csv::header(number, line).map(Parser::Csv)
    }

    fn line(&mut self, number: u64, line: &str) -> Result<()> {
        match self {
            Parser::Json(events) => {
                let event = serde_json::from_str::<TraceEvent>(line).map_err(|e| {
                    // serde_json counts lines within the one line it was given.
                    let message = e.to_string().replace(" at line 1 column ", " at column ");
                    Error::MalformedTrace {
                        line: number,
                        found: format!("{message} in {}", shown(line)),
                        expected: JSON_LINE,
                    }
                })?;
                if event.bytes > LARGEST_SIZE {
                    return Err(Error::MalformedTrace {
                        line: number,
                        found: format!("bytes {} in {}, above {}", event.bytes, shown(line), largest_size()),
                        expected: JSON_LINE,
                    });
                }
                events.push(event);
                Ok(())
            }
            Parser::Csv(csv) => csv.row(number, line),
        }
    }

    fn finish(self) -> ParsedTrace {
        match self {
            Parser::Json(events) => ParsedTrace { format: TraceFormat::JsonLines, events, failed_allocations: 0 },
            Parser::Csv(csv) => {
                let first = csv.times.iter().copied().min().unwrap_or(0);
                let mut events = csv.events;
                for (e, t) in events.iter_mut().zip(csv.times) {
                    e.t_ns = u64::try_from(t - first).unwrap_or(u64::MAX);
                }
                ParsedTrace { format: TraceFormat::RmmCsv, events, failed_allocations: csv.failed }
            }
        }
    }
}

/// RMM's CSV: where each column is, the threads seen, and the events so far (their times kept
/// in nanoseconds of the log's clock until the earliest is known).
struct Csv {
    thread: usize,
    time: usize,
    action: usize,
    pointer: usize,
    size: usize,
    threads: HashMap<String, u64>,
    events: Vec<TraceEvent>,
    times: Vec<u128>,
    failed: u64,
}

impl Csv {
    fn header(number: u64, line: &str) -> Result<Csv> {
        // Found by walking the line, so a long line costs no memory per column.
        let column = |name: &str| line.split(',').position(|c| c.trim().eq_ignore_ascii_case(name));
        let wanted = ["Thread", "Time", "Action", "Pointer", "Size"];
        let found: Vec<Option<usize>> = wanted.iter().map(|w| column(w)).collect();
        let missing: Vec<&str> = wanted.iter().zip(&found).filter(|(_, c)| c.is_none()).map(|(w, _)| *w).collect();
        match found[..] {
            [Some(thread), Some(time), Some(action), Some(pointer), Some(size)] => Ok(Csv {
                thread,
                time,
                action,
                pointer,
                size,
                threads: HashMap::new(),
                events: Vec::new(),
                times: Vec::new(),
                failed: 0,
            }),
            _ if missing.len() < wanted.len() => Err(Error::MalformedTrace {
                line: number,
                found: format!("a CSV header without the column(s) {} in {}", missing.join(", "), shown(line)),
                expected: CSV_HEADER,
            }),
            _ => Err(Error::MalformedTrace { line: number, found: shown(line), expected: FIRST_LINE }),
        }
    }

    fn row(&mut self, number: u64, line: &str) -> Result<()> {
        let needed = [self.thread, self.time, self.action, self.pointer, self.size].into_iter().max().unwrap_or(0) + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).take(needed).collect();
        if fields.len() < needed {
            return Err(Error::MalformedTrace {
                line: number,
                found: format!("{} field(s) where the header has at least {needed}: {}", fields.len(), shown(line)),
                expected: CSV_FIELDS,
            });
        }
        let bad = |what: &str, value: &str, expected| Error::MalformedTrace {
            line: number,
            found: format!("{what} `{value}` in {}", shown(line)),
            expected,
        };
        let op = match fields[self.action].to_ascii_lowercase().as_str() {
            "allocate" => TraceOp::Alloc,
            "deallocate" | "free" => TraceOp::Free,
            "allocate failure" | "allocate_failure" => {
                self.failed += 1;
                return Ok(());
            }
            _ => return Err(bad("Action", fields[self.action], CSV_ACTION)),
        };
        let time = parse_time(fields[self.time]).ok_or_else(|| bad("Time", fields[self.time], CSV_TIME))?;
        let pointer = fields[self.pointer];
        let id = match pointer.strip_prefix("0x").or_else(|| pointer.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => pointer.parse().ok(),
        }
        .ok_or_else(|| bad("Pointer", pointer, CSV_POINTER))?;
        let bytes = fields[self.size].parse::<u64>().map_err(|_| bad("Size", fields[self.size], CSV_SIZE))?;
        if bytes > LARGEST_SIZE {
            return Err(Error::MalformedTrace {
                line: number,
                found: format!("Size `{bytes}` in {}, above {}", shown(line), largest_size()),
                expected: CSV_SIZE,
            });
        }
        let next = self.threads.len() as u64 + 1;
        let thread = *self.threads.entry(fields[self.thread].to_string()).or_insert(next);
        self.events.push(TraceEvent { t_ns: 0, thread, op, id, bytes, device: None, site: None });
        self.times.push(time);
        Ok(())
    }
}

/// Nanoseconds from `1634567890.123456` or `1634567890` (seconds) or a time of day
/// `10:18:37.482427`, read exactly (epoch seconds in an `f64` would be off by up to 240 ns).
fn parse_time(text: &str) -> Option<u128> {
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let whole = |d: &str| if digits(d) { d.parse::<u128>().ok() } else { None };
    let seconds = |s: &str| -> Option<u128> {
        let (int, fraction) = s.split_once('.').unwrap_or((s, ""));
        if !(fraction.is_empty() || digits(fraction)) {
            return None;
        }
        // Nanoseconds: the first nine digits of the fraction.
        let nanos: String = fraction.chars().chain(std::iter::repeat('0')).take(9).collect();
        whole(int)?.checked_mul(1_000_000_000)?.checked_add(nanos.parse().ok()?)
    };
    match text.split(':').collect::<Vec<_>>()[..] {
        [s] => seconds(s),
        [h, m, s] => {
            let minutes = whole(h)?.checked_mul(60)?.checked_add(whole(m)?)?;
            seconds(s)?.checked_add(minutes.checked_mul(60_000_000_000)?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_each_form_are_nanoseconds() {
        assert_eq!(parse_time("1.5"), Some(1_500_000_000));
        assert_eq!(parse_time("12"), Some(12_000_000_000));
        assert_eq!(parse_time("1634567890.123456"), Some(1_634_567_890_123_456_000));
        assert_eq!(parse_time("0.1234567891"), Some(123_456_789));
        assert_eq!(parse_time("01:02:03.5"), Some(3_723_500_000_000));
        for bad in [
            "",
            "x",
            "-1",
            "1:2",
            "nan",
            "inf",
            ".5",
            "1.2.3",
            "1e9",
            "+1",
            "100000000000000000000000000000000000:0:0",
            "+1:2:3",
            "1:+2:3",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
