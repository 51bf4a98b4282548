//! Caps on what one untrusted layer or archive may make us write or hold:
//! its uncompressed size (sparse holes included), its entry count, and the
//! size of the extension headers (PAX, GNU long names) in front of one entry.
//!
//! The defaults bound a bomb without refusing real images; the caller can
//! change them (library field, or `CAIRN_MAX_EXTRACT_SIZE` /
//! `CAIRN_MAX_EXTRACT_ENTRIES` through [`ExtractLimits::from_env`]).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Default cap on the uncompressed bytes of one layer or archive: 32 GiB.
/// The largest layers of common public images (CUDA, ML toolkits) are a few
/// GiB uncompressed; 32 GiB leaves a wide margin above them while a
/// few-hundred-byte bomb declaring 200 GB is refused before a byte is written.
pub const DEFAULT_MAX_EXTRACT_SIZE: u64 = 32 << 30;
/// Default cap on the entries of one layer: 1 Mi. Big real layers (a full
/// TeX Live, node_modules-heavy apps) hold a few hundred thousand; every
/// entry costs an inode and some bookkeeping memory in the extractor.
pub const DEFAULT_MAX_EXTRACT_ENTRIES: u64 = 1 << 20;
/// Default cap on the extension headers of one entry (PAX `x`, GNU `L`/`K`,
/// GNU sparse maps): 1 MiB, the limit Go's archive/tar (and so containerd,
/// Docker, buildah) puts on PAX and long-name records. They are held in memory.
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 1 << 20;

/// The product's one depth policy: a tree Cairn extracts, commits, copies
/// or scans may hold at most this many nested directories (a path of at
/// most this many components below its root). Deeper input is refused with
/// [`LimitKind::Depth`] naming the path. Real trees stay far below it (the
/// deepest node_modules nest a few dozen levels); a hostile one past it
/// would only cost stack, descriptors and quadratic lookups.
pub const MAX_TREE_DEPTH: usize = 4096;

/// The environment variable that sets [`ExtractLimits::max_size`].
pub const ENV_MAX_SIZE: &str = "CAIRN_MAX_EXTRACT_SIZE";
/// The environment variable that sets [`ExtractLimits::max_entries`].
pub const ENV_MAX_ENTRIES: &str = "CAIRN_MAX_EXTRACT_ENTRIES";

/// Caps for one extraction; `None` lifts a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractLimits {
    /// Uncompressed bytes: both the decompressed stream and the sum of the
    /// sizes the entries declare (a sparse file counts with its real size,
    /// holes included), checked from each header before its bytes are written.
    pub max_size: Option<u64>,
    /// Tar entries (markers included).
    pub max_entries: Option<u64>,
    /// Bytes of extension headers in front of one entry.
    pub max_header_size: Option<u64>,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_size: Some(DEFAULT_MAX_EXTRACT_SIZE),
            max_entries: Some(DEFAULT_MAX_EXTRACT_ENTRIES),
            max_header_size: Some(DEFAULT_MAX_HEADER_SIZE),
        }
    }
}

impl ExtractLimits {
    /// No caps at all: only for trusted input (a layer this process wrote).
    pub fn unlimited() -> Self {
        ExtractLimits {
            max_size: None,
            max_entries: None,
            max_header_size: None,
        }
    }

    /// The defaults, with `CAIRN_MAX_EXTRACT_SIZE` (a size: `1GiB`, `500MB`,
    /// `10g`, bytes) and `CAIRN_MAX_EXTRACT_ENTRIES` (a count) applied when
    /// set. A value that does not parse is an error naming the variable.
    pub fn from_env() -> Result<Self, BadLimit> {
        let mut limits = ExtractLimits::default();
        if let Some(v) = env_value(ENV_MAX_SIZE) {
            limits.max_size = Some(parse_size(&v).map_err(|reason| BadLimit {
                variable: ENV_MAX_SIZE,
                value: v.clone(),
                reason,
            })?);
        }
        if let Some(v) = env_value(ENV_MAX_ENTRIES) {
            let n = v.trim().parse::<u64>().map_err(|_| BadLimit {
                variable: ENV_MAX_ENTRIES,
                value: v.clone(),
                reason: "expected a whole number of entries".into(),
            })?;
            limits.max_entries = Some(n);
        }
        Ok(limits)
    }
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// An environment variable that does not hold a valid limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {reason}")]
pub struct BadLimit {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

/// Which cap was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Size,
    Entries,
    HeaderSize,
    /// Nested directories below the tree's root ([`MAX_TREE_DEPTH`]).
    Depth,
}

/// A cap was hit: what, the cap, and the entry at fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitExceeded {
    pub kind: LimitKind,
    pub limit: u64,
    pub entry: Option<String>,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match &self.entry {
            Some(e) => format!(" (at entry {e:?})"),
            None => String::new(),
        };
        match self.kind {
            LimitKind::Size => write!(
                f,
                "more than the limit of {} uncompressed bytes{at} (raise it with {ENV_MAX_SIZE})",
                self.limit
            ),
            LimitKind::Entries => write!(
                f,
                "more than the limit of {} entries{at} (raise it with {ENV_MAX_ENTRIES})",
                self.limit
            ),
            LimitKind::Depth => write!(
                f,
                "more than the limit of {} nested directories{at}",
                self.limit
            ),
            LimitKind::HeaderSize => write!(
                f,
                "extension headers (PAX, GNU long names, sparse maps) over the limit of {} bytes for one entry{at}",
                self.limit
            ),
        }
    }
}

impl std::error::Error for LimitExceeded {}

/// Parse a size: a number (decimals allowed) and an optional unit. `KB/MB/GB/TB`
/// are powers of 1000, `KiB/MiB/GiB/TiB` powers of 1024; a bare `k/m/g/t` (or
/// `K/M/G/T`) is 1024-based as in Docker's `--keep-storage`; `B` or nothing is
/// bytes. The error is the reason, for the caller to wrap with the input.
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err("expected a number, e.g. 10GB or 500MiB".into());
    }
    let value: f64 = num
        .parse()
        .map_err(|_| "the number is not valid".to_string())?;
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
        _ => return Err("unknown unit; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB".into()),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err("too large".into());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1 parsec").is_err());
    }

    #[test]
    fn display_names_the_limit_and_the_variable() {
        let e = LimitExceeded {
            kind: LimitKind::Size,
            limit: 1 << 30,
            entry: Some("big".into()),
        };
        let s = e.to_string();
        assert!(s.contains("1073741824") && s.contains(ENV_MAX_SIZE) && s.contains("big"));
    }
}
