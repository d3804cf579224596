//! Human-readable times and sizes.

/// `4096` → `"4 KiB"`, `10_000_000` → `"10 MB"`, `1536` → `"1.5 KiB"`: exact binary or
/// decimal units where the size is a small multiple of one, else one decimal in binary units.
pub fn bytes(n: u64) -> String {
    const BIN: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    const DEC: [(u64, &str); 3] = [(1_000_000_000, "GB"), (1_000_000, "MB"), (1_000, "kB")];
    for (unit, name) in BIN {
        if n >= unit && n.is_multiple_of(unit) && n / unit < 1024 {
            return format!("{} {name}", n / unit);
        }
    }
    for (unit, name) in DEC {
        if n >= unit && n.is_multiple_of(unit) && n / unit < 1000 {
            return format!("{} {name}", n / unit);
        }
    }
    for (unit, name) in BIN {
        if n >= unit {
            return format!("{:.1} {name}", n as f64 / unit as f64);
        }
    }
    format!("{n} B")
}

/// Nanoseconds with a unit that keeps three significant digits: `"1.23 ns"`, `"45.6 µs"`.
pub fn nanos(ns: f64) -> String {
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {unit}")
}

/// A ratio as `"12.3×"`, with enough digits to tell 0.97 from 1.00.
pub fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// Bytes per second with a decimal unit: `"6.71 GB/s"`, `"512 kB/s"`.
pub fn rate(bytes_per_sec: f64) -> String {
    let (value, unit) = if bytes_per_sec >= 1e9 {
        (bytes_per_sec / 1e9, "GB/s")
    } else if bytes_per_sec >= 1e6 {
        (bytes_per_sec / 1e6, "MB/s")
    } else if bytes_per_sec >= 1e3 {
        (bytes_per_sec / 1e3, "kB/s")
    } else {
        (bytes_per_sec, "B/s")
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {unit}")
}

/// Parses a byte count for the command line, as the library reads one
/// ([`dotcompute_memory::units::parse_byte_count`]), into a `usize`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let bytes = dotcompute_memory::units::parse_byte_count(text)?;
    usize::try_from(bytes).map_err(|_| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(10_000_000), "10 MB");
        assert_eq!(bytes(256), "256 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(24_684_096 << 10), "23.5 GiB");
        assert_eq!(bytes(1 << 30), "1 GiB");
        assert_eq!(nanos(1.234), "1.23 ns");
        assert_eq!(nanos(45_600.0), "45.6 µs");
        assert_eq!(nanos(123_456_789.0), "123 ms");
        assert_eq!(ratio(0.971), "0.97×");
        assert_eq!(ratio(523.4), "523×");
        assert_eq!(rate(6.712e9), "6.71 GB/s");
        assert_eq!(rate(512_000.0), "512 kB/s");
        assert_eq!(rate(12.0), "12.0 B/s");
    }

    #[test]
    fn byte_counts_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("4m"), Ok(4 << 20));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("0").unwrap_err().contains("zero"));
        assert!(parse_bytes("0K").unwrap_err().contains("zero"));
        assert!(parse_bytes("").unwrap_err().contains("not a byte count"));
        assert!(parse_bytes("-5").unwrap_err().contains("not a byte count"));
        assert!(parse_bytes("1.5M").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("3X").unwrap_err().contains("unknown unit `x`"));
        assert!(parse_bytes("99999999999999999999").unwrap_err().contains("too large"));
        assert!(parse_bytes("99999999999G").unwrap_err().contains("too large"));
    }
}
