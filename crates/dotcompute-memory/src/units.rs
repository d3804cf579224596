//! Byte counts as people write them (`64K`, `512MiB`, `1GB`), for options read from the
//! environment or a command line.

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

#[cfg(test)]
mod tests {
    use super::parse_byte_count;

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
