//! Human-readable times and sizes.

/// `4096` → `"4 KiB"`, `10_000_000` → `"10 MB"`, `1536` → `"1.5 KiB"`: exact binary or
/// decimal units where the size is a small multiple of one, else one decimal in binary units.
pub fn bytes(n: u64) -> String {
    const BIN: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    const DEC: [(u64, &str); 3] = [(1_000_000_000, "GB"), (1_000_000, "MB"), (1_000, "kB")];
    for (unit, name) in BIN {
        if n >= unit && n % unit == 0 && n / unit < 1024 {
            return format!("{} {name}", n / unit);
        }
    }
    for (unit, name) in DEC {
        if n >= unit && n % unit == 0 && n / unit < 1000 {
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
    }
}
