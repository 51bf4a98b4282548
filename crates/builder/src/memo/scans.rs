//! Whole-scan records: the fingerprint of a sources scan (every entry's
//! path and metadata, in scan order; see `context::fingerprint`) mapped to
//! the sources digest it gave. When a later scan of the same sources has
//! the same fingerprint, no entry changed, and its digest is the recorded
//! one: no per-file memo look-up, no memo load at all.
//!
//! Kept in `ROOT/context-scans`, a small text file (a cache: a missing,
//! unreadable or corrupt file, or a bad line, is ignored and only costs
//! the per-file path). One line per record, newest first:
//! `<fingerprint hex> <digest hex> <canonical context root>`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// First line of the file.
const HEADER: &str = "cairn context scans 1";

/// Records kept at most (each is one COPY's or mount's sources).
pub(crate) const MAX_RECORDS: usize = 256;

/// A record: fingerprint, digest (64 lowercase hex digits), context root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanRecord {
    pub print: [u8; 32],
    pub digest: String,
    pub root: String,
}

/// The records of one build: read at its start, written back at its end
/// when it added one.
#[derive(Debug, Default)]
pub(crate) struct ScanRecords {
    records: Mutex<(Vec<ScanRecord>, bool)>,
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One line as written by [`ScanRecords::save`], or `None`.
fn parse_line(line: &str) -> Option<ScanRecord> {
    let mut parts = line.splitn(3, ' ');
    let (print, digest, root) = (parts.next()?, parts.next()?, parts.next()?);
    if !is_hex64(print) || !is_hex64(digest) || root.is_empty() {
        return None;
    }
    let bytes = hex::decode(print).ok()?;
    Some(ScanRecord {
        print: bytes.try_into().ok()?,
        digest: digest.to_string(),
        root: root.to_string(),
    })
}

/// Every well-formed record of `text` (a whole file), at most
/// [`MAX_RECORDS`]; none when the header is not ours.
pub(crate) fn parse(text: &str) -> Vec<ScanRecord> {
    let Some(body) = text
        .strip_prefix(HEADER)
        .and_then(|rest| rest.strip_prefix('\n'))
    else {
        return Vec::new();
    };
    body.lines()
        .filter_map(parse_line)
        .take(MAX_RECORDS)
        .collect()
}

impl ScanRecords {
    /// The records at `path` (none when missing or unreadable).
    pub fn load(path: &Path) -> ScanRecords {
        let records = std::fs::read(path)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(|text| parse(&text))
            .unwrap_or_default();
        ScanRecords {
            records: Mutex::new((records, false)),
        }
    }

    /// Whether a record of the context at `root` exists (its scan will
    /// probably match again: the per-file memo need not be loaded early).
    pub fn knows_root(&self, root: &str) -> bool {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.0.iter().any(|r| r.root == root)
    }

    /// The digest recorded for `print`.
    pub fn digest(&self, print: &[u8; 32]) -> Option<String> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .0
            .iter()
            .find(|r| r.print == *print)
            .map(|r| r.digest.clone())
    }

    /// Remember that a scan with `print` gave `digest` (first in the file).
    pub fn record(&self, print: [u8; 32], digest: &str, root: &Path) {
        let Some(root) = root.to_str().filter(|r| !r.contains('\n') && !r.is_empty()) else {
            return;
        };
        if !is_hex64(digest) {
            return;
        }
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let (list, dirty) = &mut *records;
        if list
            .first()
            .is_some_and(|r| r.print == print && r.digest == digest)
        {
            return;
        }
        list.retain(|r| r.print != print);
        list.insert(
            0,
            ScanRecord {
                print,
                digest: digest.to_string(),
                root: root.to_string(),
            },
        );
        list.truncate(MAX_RECORDS);
        *dirty = true;
    }

    /// Write the records to `path` (atomically, through `tmp_dir`) when one
    /// was added. Failures only cost the per-file path next time.
    pub fn save(&self, path: &PathBuf, tmp_dir: &Path) {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if !records.1 {
            return;
        }
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir)?;
            let mut out = std::io::BufWriter::new(tmp.as_file_mut());
            writeln!(out, "{HEADER}")?;
            for r in &records.0 {
                writeln!(out, "{} {} {}", hex::encode(r.print), r.digest, r.root)?;
            }
            out.flush()?;
            drop(out);
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!("saving {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(i: usize) -> [u8; 32] {
        let mut p = [0u8; 32];
        p[..8].copy_from_slice(&(i as u64).to_le_bytes());
        p
    }

    #[test]
    fn records_round_trip_newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("context-scans");
        let first = ScanRecords::load(&path);
        assert_eq!(first.digest(&[1; 32]), None, "a missing file is empty");
        for i in 0..(MAX_RECORDS + 3) {
            first.record(print(i), &format!("{i:064x}"), Path::new("/ctx with space"));
        }
        first.save(&path, dir.path());
        let second = ScanRecords::load(&path);
        assert_eq!(
            second.digest(&print(MAX_RECORDS + 2)),
            Some(format!("{:064x}", MAX_RECORDS + 2))
        );
        assert_eq!(second.digest(&print(0)), None, "the oldest went");
        assert!(second.knows_root("/ctx with space"));
        assert!(!second.knows_root("/ctx"));
        assert_eq!(
            second.records.lock().unwrap().0.len(),
            MAX_RECORDS,
            "bounded"
        );
    }

    #[test]
    fn bad_lines_and_foreign_files_are_ignored() {
        let good = format!("{} {} /c", "ab".repeat(32), "cd".repeat(32));
        let text = format!(
            "{HEADER}\n{good}\nnot a record\n{} {} /c\n{} {} \n{} {}\n\n",
            "AB".repeat(32),
            "cd".repeat(32),
            "ab".repeat(32),
            "cd".repeat(32),
            "ab".repeat(31),
            "cd".repeat(32)
        );
        let parsed = parse(&text);
        assert_eq!(parsed.len(), 1, "{parsed:?}");
        assert_eq!(parsed[0].root, "/c");
        assert!(parse(&good).is_empty(), "no header: not ours");
        assert!(parse("cairn context scans 2\n").is_empty());
    }

    #[test]
    fn the_loader_never_panics_on_arbitrary_bytes() {
        // A fuzz-style sweep: random bytes, truncations and single-byte
        // corruptions of a valid file; each parse must return without
        // panicking, and only well-formed lines may come back.
        let line = format!("{} {} /ctx", "0f".repeat(32), "e1".repeat(32));
        let valid = format!("{HEADER}\n{line}\n{line}\n").into_bytes();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let check = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            for r in parse(&text) {
                assert!(is_hex64(&r.digest) && !r.root.is_empty(), "{r:?}");
            }
        };
        for cut in 0..valid.len() {
            check(&valid[..cut]);
        }
        for _ in 0..2000 {
            let mut bytes = valid.clone();
            let at = next() as usize % bytes.len();
            bytes[at] = next() as u8;
            check(&bytes);
            let random: Vec<u8> = (0..(next() % 300)).map(|_| next() as u8).collect();
            check(&random);
            let mut prefixed = format!("{HEADER}\n").into_bytes();
            prefixed.extend(&random);
            check(&prefixed);
        }
    }
}
