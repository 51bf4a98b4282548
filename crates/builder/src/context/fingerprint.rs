//! The fingerprint of a sources scan: a sha256 of every kept entry's
//! path and metadata (dev, inode, size, mtime, ctime, mode with type), in
//! scan order, after the sources themselves and the canonical root. Two
//! scans with the same fingerprint met the same entries (no file new,
//! gone, renamed, replaced, resized, written or chmod'ed), so the sources
//! digest of the first is the second's: `memo::scans` keeps it.
//!
//! The memo's racy rule holds for the whole scan: a fingerprint is
//! "settled" (may be recorded) only when every non-directory entry's
//! mtime and ctime are at least [`RACY_WINDOW_NS`] older than the moment
//! the scan began, so a file written again within its timestamp
//! granularity cannot keep an old fingerprint. (A directory's own times do
//! not stand in the digest; its entries do.)

use super::scan::Found;
use crate::memo::RACY_WINDOW_NS;
use sha2::{Digest as _, Sha256};
use std::path::Path;

/// A scan's fingerprint, and whether it may be recorded.
pub(crate) struct Fingerprint {
    pub sum: [u8; 32],
    pub settled: bool,
}

/// The fingerprint of `found` (one list per source in `sources`), scanned
/// below the canonical `root` from `began_ns` on.
pub(crate) fn of(
    root: &Path,
    sources: &[String],
    found: &[Vec<Found>],
    began_ns: i128,
) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(b"cairn-scan-v1\0");
    h.update(root.as_os_str().as_encoded_bytes());
    h.update([0]);
    let mut newest = i128::MIN;
    for (src, entries) in sources.iter().zip(found) {
        h.update((src.len() as u64).to_le_bytes());
        h.update(src.as_bytes());
        h.update((entries.len() as u64).to_le_bytes());
        for f in entries {
            let m = &f.meta;
            let (mtime, ctime) = (m.mtime_ns, m.ctime_ns);
            if !m.is_dir() {
                newest = newest.max(mtime).max(ctime);
            }
            // A path holds no NUL: it ends the name, fixed-size fields follow.
            let mut record = [0u8; 68];
            record[..8].copy_from_slice(&m.dev.to_le_bytes());
            record[8..16].copy_from_slice(&m.ino.to_le_bytes());
            record[16..24].copy_from_slice(&m.size.to_le_bytes());
            record[24..40].copy_from_slice(&mtime.to_le_bytes());
            record[40..56].copy_from_slice(&ctime.to_le_bytes());
            record[56..60].copy_from_slice(&m.mode.to_le_bytes());
            record[60..68].copy_from_slice(&m.nlink.to_le_bytes());
            h.update(f.rel.as_bytes());
            h.update([0]);
            h.update(record);
        }
    }
    Fingerprint {
        sum: h.finalize().into(),
        settled: newest == i128::MIN || newest.saturating_add(RACY_WINDOW_NS) <= began_ns,
    }
}
