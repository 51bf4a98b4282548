//! Memoised content hashes of context files, so an unchanged large context
//! is not re-read: a file's sha256 is reused while its (path, dev, inode,
//! size, mtime, ctime) are unchanged. Kept in `ROOT/context-hashes`
//! (a cache: a missing or unreadable file only costs a re-read).
//!
//! Racy entries are not trusted: a file changed within the timestamp
//! granularity of the moment it was hashed could change again without its
//! mtime moving, so an entry is used only when the file's mtime and ctime
//! are at least [`RACY_WINDOW_NS`] older than the hash (git's "racily clean").
//!
//! Beside it, [`scans`] maps the fingerprint of a whole sources scan to
//! the digest it gave: a fully cached rebuild of an unchanged context
//! takes its digest from there and never loads the per-file entries
//! (they are read only when a look-up needs them, or early, on a thread,
//! when no scan of this context was recorded).

use crate::context::Stat;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

pub(crate) mod scans;

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
    #[cfg(test)]
    fn parse(line: &str) -> Option<(String, Entry)> {
        let (fields, path) = split_path(line)?;
        Some((path.to_string(), Entry::parse_fields(fields)?))
    }

    /// The seven fields before the path.
    fn parse_fields(fields: &str) -> Option<Entry> {
        let mut f = fields.split(' ');
        let mut num = || decimal(f.next()?);
        let (dev, ino, size) = (num()? as u64, num()? as u64, num()? as u64);
        let (mtime_ns, ctime_ns, hashed_ns) = (num()?, num()?, num()?);
        let sha256 = unhex(f.next()?)?;
        if f.next().is_some() {
            return None;
        }
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
        Some(entry)
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

/// A memo line split into its seven fields and its path (after the
/// seventh space; a path may hold spaces).
fn split_path(line: &str) -> Option<(&str, &str)> {
    let mut spaces = line.match_indices(' ').map(|(i, _)| i);
    let at = spaces.nth(6)?;
    Some((&line[..at], &line[at + 1..]))
}

type Entries = HashMap<String, Entry>;

/// A loaded memo: the entries of this build's context, parsed, and the
/// lines of every other context, kept verbatim for `save`.
#[derive(Debug, Default)]
struct Loaded {
    entries: Mutex<Entries>,
    /// Whole lines, each ending in `\n`.
    others: String,
}

/// The memo of one build: loaded at its start (or at its first look-up),
/// saved at its end.
#[derive(Debug)]
pub(crate) struct HashMemo {
    path: PathBuf,
    tmp_dir: PathBuf,
    /// `canonical context root/`: only those entries are parsed.
    scope: Option<String>,
    /// When no scan of this context was recorded, the file is read and
    /// parsed by a thread started in `load`, so the parse overlaps the
    /// build's start; the first look-up waits for it. Otherwise it is read
    /// by the first look-up (a matching scan needs none).
    loading: Mutex<Option<std::thread::JoinHandle<Loaded>>>,
    loaded: OnceLock<Loaded>,
    /// Whole-scan fingerprints and their digests (`ROOT/context-scans`).
    scans: scans::ScanRecords,
    scans_path: PathBuf,
    /// Files whose content was read (not served by the memo) in this build.
    pub reads: AtomicU64,
}

fn stat_key(meta: &Stat) -> (u64, u64, u64, i128, i128) {
    (meta.dev, meta.ino, meta.size, meta.mtime_ns, meta.ctime_ns)
}

pub(crate) fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// The entries of a memo file below `scope` (all when `None`), parsed,
/// and the other lines as they are; empty when missing, unreadable or of
/// another version (a cache: that costs re-reads, nothing else). Only
/// this context's lines are parsed: the memo of a store that also built
/// a 20,000-file context cost a one-file build most of its CPU.
fn read_entries(path: &Path, scope: Option<&str>) -> Loaded {
    let _span = cairn_layer::timing::span("context.memo_load");
    let Ok(text) = std::fs::read_to_string(path) else {
        return Loaded::default();
    };
    let Some(body) = text
        .strip_prefix(HEADER)
        .and_then(|rest| rest.strip_prefix('\n'))
    else {
        return Loaded::default();
    };
    // One pass: each line's path is found once; only this context's lines
    // are parsed, into a map sized for all of them. On this thread only: a
    // look-up from a rayon worker waits for this thread, so it must not
    // wait for the pool.
    let mut others = String::new();
    let mut entries = HashMap::with_capacity(body.len() / 150);
    for line in body.lines() {
        let Some((fields, path)) = split_path(line) else {
            continue;
        };
        if scope.is_some_and(|prefix| !path.starts_with(prefix)) {
            others.push_str(line);
            others.push('\n');
        } else if let Some(entry) = Entry::parse_fields(fields) {
            entries.insert(path.to_string(), entry);
        }
    }
    Loaded {
        entries: Mutex::new(entries),
        others,
    }
}

impl HashMemo {
    /// Load the memo at `path` (empty when missing or unreadable); only
    /// the entries below `context` (a canonical directory) are parsed,
    /// on a thread now when no scan of `context` is recorded in
    /// `ROOT/context-scans` beside it, else by the first look-up.
    pub fn load(path: PathBuf, tmp_dir: PathBuf, context: Option<&Path>) -> HashMemo {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        // Best effort: an old memo left behind only takes space.
        let _ = std::fs::remove_file(dir.join(OLD_NAME));
        let scans_path = dir.join("context-scans");
        let scans = scans::ScanRecords::load(&scans_path);
        // Memo paths are `canonical root` + `/` + relative path.
        let root = context.and_then(Path::to_str);
        let scope = root.map(|root| format!("{}/", root.trim_end_matches('/')));
        let known = root.is_some_and(|root| scans.knows_root(root));
        let loading = match known {
            true => None,
            false => {
                let file = path.clone();
                let thread_scope = scope.clone();
                std::thread::Builder::new()
                    .name("cairn-memo-load".into())
                    .spawn(move || read_entries(&file, thread_scope.as_deref()))
                    .ok()
            }
        };
        HashMemo {
            loading: Mutex::new(loading),
            loaded: OnceLock::new(),
            path,
            tmp_dir,
            scope,
            scans,
            scans_path,
            reads: AtomicU64::new(0),
        }
    }

    /// The memo, once loaded: by the loading thread (empty if it failed),
    /// else here.
    fn loaded(&self) -> &Loaded {
        self.loaded.get_or_init(|| {
            let handle = self
                .loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            match handle {
                Some(h) => h.join().unwrap_or_default(),
                None => read_entries(&self.path, self.scope.as_deref()),
            }
        })
    }

    /// The sources digest recorded for a scan fingerprinted `print`.
    pub fn scan_digest(&self, print: &[u8; 32]) -> Option<String> {
        self.scans.digest(print)
    }

    /// Record that a settled scan fingerprinted `print` (of the context at
    /// the canonical `root`) gave `digest`.
    pub fn record_scan(&self, print: [u8; 32], digest: &str, root: &Path) {
        self.scans.record(print, digest, root);
    }

    fn entries(&self) -> &Mutex<Entries> {
        &self.loaded().entries
    }

    /// Wait for the load now (before look-ups from a thread pool, which
    /// should not all block on the loading thread).
    pub fn ready(&self) {
        self.loaded();
    }

    /// The content sha256 of the regular file `path` whose metadata is
    /// `meta`: from the memo when it is still valid, else by `read`.
    pub fn sha256(
        &self,
        path: &Path,
        meta: &Stat,
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
        self.scans.save(&self.scans_path, &self.tmp_dir);
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
            let mut written = 0;
            for (path, entry) in keep {
                entry.write(path, &mut out)?;
                written += 1;
            }
            // Other contexts' entries, as they were, within the bound.
            for line in self.loaded().others.lines().take(MAX_ENTRIES - written) {
                writeln!(out, "{line}")?;
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
    fn a_scoped_load_parses_one_context_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let (a, ab, b) = (root.join("a"), root.join("ab"), root.join("b"));
        let mut files = Vec::new();
        for ctx in [&a, &ab, &b] {
            std::fs::create_dir(ctx).unwrap();
            let f = ctx.join("f");
            std::fs::write(&f, b"x").unwrap();
            files.push(f);
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let path = root.join("context-hashes");
        let sum = |memo: &HashMemo, file: &Path, content: [u8; 32]| {
            let meta = Stat::from(&std::fs::symlink_metadata(file).unwrap());
            memo.sha256(file, &meta, || Ok(content)).unwrap()
        };
        let all = HashMemo::load(path.clone(), root.clone(), None);
        for f in &files {
            sum(&all, f, [1; 32]);
        }
        all.save();

        let only_a = HashMemo::load(path.clone(), root.clone(), Some(&a));
        assert_eq!(
            only_a.entries().lock().unwrap().len(),
            1,
            "a/ only, not ab/"
        );
        assert_eq!(sum(&only_a, &files[0], [2; 32]), [1; 32], "served");
        assert_eq!(
            sum(&only_a, &files[2], [2; 32]),
            [2; 32],
            "b/ is not parsed"
        );
        only_a.save();

        let only_ab = HashMemo::load(path, root.clone(), Some(&ab));
        assert_eq!(
            sum(&only_ab, &files[1], [3; 32]),
            [1; 32],
            "other contexts' lines survive a scoped save"
        );
        assert_eq!(only_ab.reads.load(Ordering::Relaxed), 0);
    }

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
            let meta = Stat::from(&std::fs::symlink_metadata(&file).unwrap());
            memo.sha256(&file, &meta, || Ok(content)).unwrap()
        };
        let first = HashMemo::load(path.clone(), dir.path().to_path_buf(), None);
        assert!(
            !dir.path().join(OLD_NAME).exists(),
            "the JSON memo is removed"
        );
        assert_eq!(sum(&first, [7; 32]), [7; 32]);
        assert_eq!(first.reads.load(Ordering::Relaxed), 1);
        first.save();

        let second = HashMemo::load(path.clone(), dir.path().to_path_buf(), None);
        assert_eq!(sum(&second, [9; 32]), [7; 32], "served from the saved memo");
        assert_eq!(second.reads.load(Ordering::Relaxed), 0);

        std::fs::write(&file, b"two").unwrap();
        assert_eq!(sum(&second, [9; 32]), [9; 32], "a changed file is read");
        assert_eq!(second.reads.load(Ordering::Relaxed), 1);

        std::fs::write(&path, b"garbage\n").unwrap();
        let third = HashMemo::load(path, dir.path().to_path_buf(), None);
        assert_eq!(
            sum(&third, [5; 32]),
            [5; 32],
            "a corrupt memo only costs a read"
        );
    }
}
