//! Human sizes for `--keep-storage`: `10GB`, `500MiB`, `1.5g`, `0`.

use crate::error::{Result, StoreError};

/// Parse a size (`10GB`, `500MiB`, `1.5g`, bytes): the rules of
/// [`cairn_layer::limits::parse_size`], shared with `CAIRN_MAX_EXTRACT_SIZE`.
pub fn parse_size(input: &str) -> Result<u64> {
    cairn_layer::limits::parse_size(input).map_err(|reason| StoreError::BadSize {
        input: input.to_string(),
        reason,
    })
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
