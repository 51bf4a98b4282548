//! Human sizes for `--keep-storage`: `10GB`, `500MiB`, `1.5g`, `0`.

use crate::error::{Result, StoreError};

/// Parse a size: a number (decimals allowed) and an optional unit. `KB/MB/GB/TB`
/// are powers of 1000, `KiB/MiB/GiB/TiB` powers of 1024; a bare `k/m/g/t` (or
/// `K/M/G/T`) is 1024-based as in Docker's `--keep-storage`; `B` or nothing is bytes.
pub fn parse_size(input: &str) -> Result<u64> {
    let bad = |reason: &str| StoreError::BadSize {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(bad("expected a number, e.g. 10GB or 500MiB"));
    }
    let value: f64 = num.parse().map_err(|_| bad("the number is not valid"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => {
            return Err(bad(
                "unknown unit; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB",
            ))
        }
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes as u64)
}

/// Bytes for people: `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("42 b").unwrap(), 42);
        for bad in ["", "GB", "10XB", "1e9", "-1", "1.2.3MB"] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.to_string().contains(&format!("{bad:?}")));
        }
        assert_eq!(format_size(1536), "1.5 KiB");
    }
}
