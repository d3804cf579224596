//! Byte counts as people write them: parsed from options (`64K`, `512MiB`, `1GB`) and
//! formatted for messages (`1610612736 bytes (1.5 GiB)`).

/// Parses a whole number of bytes with an optional unit: `B`; `K`, `KiB`, `M`, `MiB`, `G`,
/// `GiB`, `T`, `TiB` binary; `kB`, `MB`, `GB`, `TB` decimal; case-insensitive (so `k`/`K` and
/// `kB`/`KB` mean the same), spaces allowed. Zero and overflow are errors; the message says
/// what was wrong and what is accepted.
pub fn parse_byte_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("`{text}` is not a byte count: expected a number such as 65536, 64K or 4MiB"));
    }
    let number: u64 = digits.parse().map_err(|_| format!("`{text}` is too large"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use B, K, KiB, kB, M, MiB, MB, G, GiB, GB, T, TiB or TB"
            ))
        }
    };
    match number.checked_mul(scale) {
        None => Err(format!("`{text}` is too large")),
        Some(0) => Err(format!("`{text}` is zero: it must be at least 1 byte")),
        Some(b) => Ok(b),
    }
}

/// Formats a byte count for a message: the exact count, and from 1 KiB up the value in the
/// largest binary unit with one decimal, e.g. `1610612736 bytes (1.5 GiB)`.
///
/// ```
/// use dotcompute_memory::units::format_bytes;
/// assert_eq!(format_bytes(512), "512 bytes");
/// assert_eq!(format_bytes(3 << 29), "1610612736 bytes (1.5 GiB)");
/// ```
pub fn format_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({})", format_bytes_short(bytes))
    }
}

/// Formats a byte count for a summary line: `512 B`, `1.5 GiB` (binary units, one decimal).
///
/// ```
/// use dotcompute_memory::units::format_bytes_short;
/// assert_eq!(format_bytes_short(512), "512 B");
/// assert_eq!(format_bytes_short(3 << 29), "1.5 GiB");
/// ```
pub fn format_bytes_short(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::{format_bytes, parse_byte_count};

    #[test]
    fn byte_counts_format_with_the_largest_unit_and_the_exact_count() {
        assert_eq!(format_bytes(0), "0 bytes");
        assert_eq!(format_bytes(1023), "1023 bytes");
        assert_eq!(format_bytes(1024), "1024 bytes (1.0 KiB)");
        assert_eq!(format_bytes(12 << 30), "12884901888 bytes (12.0 GiB)");
        assert!(format_bytes(u64::MAX).ends_with("bytes (16.0 EiB)"));
    }

    #[test]
    fn byte_counts_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_byte_count("1073741824"), Ok(1 << 30));
        assert_eq!(parse_byte_count(" 512MiB "), Ok(512 << 20));
        assert_eq!(parse_byte_count("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_byte_count("64k"), Ok(64 << 10));
        assert_eq!(parse_byte_count("3TiB"), Ok(3 << 40));
        assert_eq!(parse_byte_count("1MB"), Ok(1_000_000));
        assert_eq!(parse_byte_count("7B"), Ok(7));
        for bad in ["", "GiB", "1.5GiB", "-1", "12 parsecs", "99999999999999999999", "20000000T", "0"] {
            assert!(parse_byte_count(bad).is_err(), "{bad:?}");
        }
        assert!(parse_byte_count("0K").unwrap_err().contains("zero"));
        assert!(parse_byte_count("3X").unwrap_err().contains("unknown unit `x`"));
    }
}
