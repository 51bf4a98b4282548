//! Memoised content hashes of context files, so an unchanged large context
//! is not re-read: a file's sha256 is reused while its (path, dev, inode,
//! size, mtime, ctime) are unchanged. Kept in `ROOT/context-hashes.json`
//! (a cache: a missing or unreadable file only costs a re-read).
//!
//! Racy entries are not trusted: a file changed within the timestamp
//! granularity of the moment it was hashed could change again without its
//! mtime moving, so an entry is used only when the file's mtime and ctime
//! are at least [`RACY_WINDOW_NS`] older than the hash (git's "racily clean").

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Coarser than any filesystem's timestamp granularity we expect (ext3: 1 s).
pub(crate) const RACY_WINDOW_NS: i128 = 1_000_000_000;

/// Entries kept at most; beyond it, those not used by the last build go.
const MAX_ENTRIES: usize = 500_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    /// When the content was hashed (ns since the epoch).
    hashed_ns: i128,
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    entries: HashMap<String, Entry>,
}

/// The memo of one build: loaded at its start, saved at its end.
#[derive(Debug)]
pub(crate) struct HashMemo {
    path: PathBuf,
    tmp_dir: PathBuf,
    entries: Mutex<(HashMap<String, Entry>, HashMap<String, Entry>)>,
    /// Files whose content was read (not served by the memo) in this build.
    pub reads: AtomicU64,
}

fn stat_key(meta: &std::fs::Metadata) -> (u64, u64, u64, i128, i128) {
    (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
    )
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

impl HashMemo {
    /// Load the memo at `path` (empty when missing or unreadable).
    pub fn load(path: PathBuf, tmp_dir: PathBuf) -> HashMemo {
        let old = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<File>(&b).ok())
            .filter(|f| f.version == 1)
            .map(|f| f.entries)
            .unwrap_or_default();
        HashMemo {
            path,
            tmp_dir,
            entries: Mutex::new((old, HashMap::new())),
            reads: AtomicU64::new(0),
        }
    }

    /// The content sha256 of the regular file `path` whose metadata is
    /// `meta`: from the memo when it is still valid, else by `read`.
    pub fn sha256(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        read: impl FnOnce() -> Result<[u8; 32], crate::BuildError>,
    ) -> Result<[u8; 32], crate::BuildError> {
        let Some(name) = path.to_str() else {
            self.reads.fetch_add(1, Ordering::Relaxed);
            return read();
        };
        let (dev, ino, size, mtime_ns, ctime_ns) = stat_key(meta);
        let hit = {
            let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let (old, used) = &mut *guard;
            let found = used.get(name).or_else(|| old.get(name)).cloned();
            found.filter(|e| {
                e.dev == dev
                    && e.ino == ino
                    && e.size == size
                    && e.mtime_ns == mtime_ns
                    && e.ctime_ns == ctime_ns
                    && mtime_ns.max(ctime_ns) + RACY_WINDOW_NS <= e.hashed_ns
            })
        };
        if let Some(e) = hit.as_ref() {
            if let Some(sum) = hex::decode(&e.sha256)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
            {
                let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                guard.1.insert(name.to_string(), e.clone());
                return Ok(sum);
            }
        }
        let hashed_ns = now_ns();
        self.reads.fetch_add(1, Ordering::Relaxed);
        let sum = read()?;
        let entry = Entry {
            dev,
            ino,
            size,
            mtime_ns,
            ctime_ns,
            hashed_ns,
            sha256: hex::encode(sum),
        };
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.insert(name.to_string(), entry);
        Ok(sum)
    }

    /// Write the memo back when this build hashed anything (entries used by
    /// this build, then older ones up to the bound), atomically. Failures
    /// only cost re-reads later.
    pub fn save(&self) {
        if self.reads.load(Ordering::Relaxed) == 0 {
            // Every hash came from the memo: it has nothing new.
            return;
        }
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (old, used) = &*guard;
        let mut entries = used.clone();
        for (k, v) in old {
            if entries.len() >= MAX_ENTRIES {
                break;
            }
            entries.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let file = File {
            version: 1,
            entries,
        };
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp_dir)?;
            serde_json::to_writer(std::io::BufWriter::new(tmp.as_file_mut()), &file)?;
            tmp.persist(&self.path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!("saving {}: {e}", self.path.display());
        }
    }
}
