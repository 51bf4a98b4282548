//! Memoised content hashes of context files, so an unchanged large context
//! is not re-read: a file's sha256 is reused while its (path, dev, inode,
//! size, mtime, ctime) are unchanged. Kept in `ROOT/context-hashes`
//! (a cache: a missing or unreadable file only costs a re-read).
//!
//! Racy entries are not trusted: a file changed within the timestamp
//! granularity of the moment it was hashed could change again without its
//! mtime moving, so an entry is used only when the file's mtime and ctime
//! are at least [`RACY_WINDOW_NS`] older than the hash (git's "racily clean").

use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Coarser than any filesystem's timestamp granularity we expect (ext3: 1 s).
pub(crate) const RACY_WINDOW_NS: i128 = 1_000_000_000;

/// Entries kept at most; beyond it, those not used by the last build go.
const MAX_ENTRIES: usize = 500_000;

/// First line of the memo file. The format is one line per file,
/// `dev ino size mtime_ns ctime_ns hashed_ns sha256hex path`, path last
/// (it may hold spaces): a 20,000-file memo parses in milliseconds, where
/// the JSON of version 1 took a cached rebuild's largest share of CPU.
const HEADER: &str = "cairn context hashes 2";

/// The version 1 memo (JSON); removed when found.
const OLD_NAME: &str = "context-hashes.json";

/// A decimal integer, optionally negative (`str::parse::<i128>` and the
/// hex crate's decoder were most of the time a build spent loading the
/// memo; these plain loops are several times faster).
fn decimal(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 38 {
        return None;
    }
    let mut value: i128 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i128::from(b - b'0');
    }
    Some(if negative { -value } else { value })
}

/// 64 lowercase hex digits as 32 bytes.
fn unhex(text: &str) -> Option<[u8; 32]> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    /// When the content was hashed (ns since the epoch).
    hashed_ns: i128,
    sha256: [u8; 32],
    /// Served or made by this build (kept first when the memo is full).
    used: bool,
}

impl Entry {
    fn parse(line: &str) -> Option<(String, Entry)> {
        let mut f = line.splitn(8, ' ');
        let mut num = || decimal(f.next()?);
        let (dev, ino, size) = (num()? as u64, num()? as u64, num()? as u64);
        let (mtime_ns, ctime_ns, hashed_ns) = (num()?, num()?, num()?);
        let sha256 = unhex(f.next()?)?;
        let path = f.next()?.to_string();
        let entry = Entry {
            dev,
            ino,
            size,
            mtime_ns,
            ctime_ns,
            hashed_ns,
            sha256,
            used: false,
        };
        Some((path, entry))
    }

    fn write(&self, path: &str, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} {} {} {} {} {} {} {path}",
            self.dev,
            self.ino,
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.hashed_ns,
            hex::encode(self.sha256)
        )
    }
}

type Entries = HashMap<String, Entry>;

/// The memo of one build: loaded at its start, saved at its end.
#[derive(Debug)]
pub(crate) struct HashMemo {
    path: PathBuf,
    tmp_dir: PathBuf,
    /// The file is read and parsed by a thread started in `load`, so the
    /// parse overlaps the build's start (Dockerfile, base image); the
    /// first look-up waits for it.
    loading: Mutex<Option<std::thread::JoinHandle<Entries>>>,
    entries: OnceLock<Mutex<Entries>>,
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

/// The entries of a memo file; empty when missing, unreadable or of
/// another version (a cache: that costs re-reads, nothing else).
fn read_entries(path: &Path) -> HashMap<String, Entry> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let Some(body) = text
        .strip_prefix(HEADER)
        .and_then(|rest| rest.strip_prefix('\n'))
    else {
        return HashMap::new();
    };
    // Parsed on every core, into a map sized once.
    let parsed: Vec<(String, Entry)> = body.par_lines().filter_map(Entry::parse).collect();
    let mut entries = HashMap::with_capacity(parsed.len());
    entries.extend(parsed);
    entries
}

impl HashMemo {
    /// Load the memo at `path` (empty when missing or unreadable).
    pub fn load(path: PathBuf, tmp_dir: PathBuf) -> HashMemo {
        if let Some(dir) = path.parent() {
            // Best effort: an old memo left behind only takes space.
            let _ = std::fs::remove_file(dir.join(OLD_NAME));
        }
        let file = path.clone();
        let loading = std::thread::Builder::new()
            .name("cairn-memo-load".into())
            .spawn(move || read_entries(&file));
        let entries = OnceLock::new();
        let loading = match loading {
            Ok(handle) => Some(handle),
            Err(_) => {
                let _ = entries.set(Mutex::new(read_entries(&path)));
                None
            }
        };
        HashMemo {
            loading: Mutex::new(loading),
            entries,
            path,
            tmp_dir,
            reads: AtomicU64::new(0),
        }
    }

    /// The entries, once the loading thread is done (empty if it failed).
    fn entries(&self) -> &Mutex<Entries> {
        self.entries.get_or_init(|| {
            let handle = self
                .loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            Mutex::new(handle.and_then(|h| h.join().ok()).unwrap_or_default())
        })
    }

    /// The content sha256 of the regular file `path` whose metadata is
    /// `meta`: from the memo when it is still valid, else by `read`.
    pub fn sha256(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        read: impl FnOnce() -> Result<[u8; 32], crate::BuildError>,
    ) -> Result<[u8; 32], crate::BuildError> {
        let name = match path.to_str() {
            // One line per entry: a path with a newline is not memoised.
            Some(name) if !name.contains('\n') => name,
            _ => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                return read();
            }
        };
        let (dev, ino, size, mtime_ns, ctime_ns) = stat_key(meta);
        {
            let mut entries = self.entries().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = entries.get_mut(name) {
                if e.dev == dev
                    && e.ino == ino
                    && e.size == size
                    && e.mtime_ns == mtime_ns
                    && e.ctime_ns == ctime_ns
                    && mtime_ns.max(ctime_ns) + RACY_WINDOW_NS <= e.hashed_ns
                {
                    e.used = true;
                    return Ok(e.sha256);
                }
            }
        }
        let hashed_ns = now_ns();
        self.reads.fetch_add(1, Ordering::Relaxed);
        let sha256 = read()?;
        let entry = Entry {
            dev,
            ino,
            size,
            mtime_ns,
            ctime_ns,
            hashed_ns,
            sha256,
            used: true,
        };
        let mut entries = self.entries().lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(name.to_string(), entry);
        Ok(sha256)
    }

    /// Write the memo back when this build hashed anything (entries used by
    /// this build, then older ones up to the bound), atomically. Failures
    /// only cost re-reads later.
    pub fn save(&self) {
        if self.reads.load(Ordering::Relaxed) == 0 {
            // Every hash came from the memo: it has nothing new.
            return;
        }
        let entries = self.entries().lock().unwrap_or_else(|e| e.into_inner());
        // This build's entries first, then older ones up to the bound.
        let used = entries.iter().filter(|(_, e)| e.used);
        let old = entries.iter().filter(|(_, e)| !e.used);
        let keep = used.chain(old).take(MAX_ENTRIES);
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp_dir)?;
            let mut out = std::io::BufWriter::new(tmp.as_file_mut());
            writeln!(out, "{HEADER}")?;
            for (path, entry) in keep {
                entry.write(path, &mut out)?;
            }
            out.flush()?;
            drop(out);
            tmp.persist(&self.path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!("saving {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_lines_round_trip() {
        let entry = Entry {
            dev: u64::MAX,
            ino: 7,
            size: 0,
            mtime_ns: -1_500_000_000,
            ctime_ns: 1_700_000_000_123_456_789,
            hashed_ns: 1_700_000_001_000_000_000,
            sha256: std::array::from_fn(|i| (i * 37) as u8),
            used: false,
        };
        let mut line = Vec::new();
        entry.write("/ctx/a b", &mut line).unwrap();
        let line = String::from_utf8(line).unwrap();
        assert_eq!(
            Entry::parse(line.trim_end()),
            Some(("/ctx/a b".to_string(), entry))
        );
        for bad in ["1 2 3 4 5 6 zz /p", "1 2 x 4 5 6 00 /p", "", "1 2 3"] {
            assert_eq!(Entry::parse(bad), None, "{bad:?}");
        }
        assert_eq!(decimal("-0"), Some(0));
        assert_eq!(decimal("+1"), None);
        assert_eq!(unhex(&"A".repeat(64)), None, "lowercase only, as written");
    }

    #[test]
    fn saved_hashes_serve_the_next_build_and_changes_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a file with spaces");
        std::fs::write(&file, b"one").unwrap();
        // Old enough not to be racily clean.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let path = dir.path().join("context-hashes");
        std::fs::write(dir.path().join(OLD_NAME), b"{}").unwrap();
        let sum = |memo: &HashMemo, content: [u8; 32]| {
            let meta = std::fs::symlink_metadata(&file).unwrap();
            memo.sha256(&file, &meta, || Ok(content)).unwrap()
        };
        let first = HashMemo::load(path.clone(), dir.path().to_path_buf());
        assert!(
            !dir.path().join(OLD_NAME).exists(),
            "the JSON memo is removed"
        );
        assert_eq!(sum(&first, [7; 32]), [7; 32]);
        assert_eq!(first.reads.load(Ordering::Relaxed), 1);
        first.save();

        let second = HashMemo::load(path.clone(), dir.path().to_path_buf());
        assert_eq!(sum(&second, [9; 32]), [7; 32], "served from the saved memo");
        assert_eq!(second.reads.load(Ordering::Relaxed), 0);

        std::fs::write(&file, b"two").unwrap();
        assert_eq!(sum(&second, [9; 32]), [9; 32], "a changed file is read");
        assert_eq!(second.reads.load(Ordering::Relaxed), 1);

        std::fs::write(&path, b"garbage\n").unwrap();
        let third = HashMemo::load(path, dir.path().to_path_buf());
        assert_eq!(
            sum(&third, [5; 32]),
            [5; 32],
            "a corrupt memo only costs a read"
        );
    }
}
