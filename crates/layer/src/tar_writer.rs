//! The deterministic tar writer: ustar headers, PAX records where ustar cannot
//! say it (long names and links, big sizes and IDs, xattrs), no uname/gname,
//! no atime/ctime, mtimes clamped.

use crate::capture::{Entry, Kind};
use crate::error::LayerError;
use crate::sys;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use tar::{EntryType, Header};

/// The largest value an 8-byte octal ustar field holds.
const MAX_OCTAL_ID: u64 = 0o7777777;
/// The largest value the 12-byte octal size field holds.
const MAX_OCTAL_SIZE: u64 = 0o77777777777;
const COPY_BUFFER: usize = 256 * 1024;

/// Write all entries and the end-of-archive blocks; returns the inner writer.
///
/// Small files are read ahead by a second thread (see [`prefetch`]), so
/// their open/read/close overlaps the hashing and compression of the tar;
/// the bytes written are the same as reading each file in turn.
pub(crate) fn write_tar<W: Write>(
    entries: &[Entry],
    timestamp: Option<i64>,
    out: W,
) -> Result<W, LayerError> {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(PREFETCH_DEPTH);
        let reader = std::thread::Builder::new()
            .name("cairn-tar-read".into())
            .spawn_scoped(scope, move || prefetch(entries, &tx));
        // Without the thread, every file is read in turn below.
        let rx = reader.is_ok().then_some(rx);
        let mut ready: VecDeque<io::Result<Vec<u8>>> = VecDeque::new();
        let mut builder = tar::Builder::new(out);
        for entry in entries {
            let ahead = match (&rx, &entry.kind) {
                (
                    Some(rx),
                    Kind::File {
                        size,
                        content: None,
                        ..
                    },
                ) if is_prefetched(*size) => {
                    if ready.is_empty() {
                        ready = rx
                            .recv()
                            .map_err(|_| sink_bug("small-file reader stopped"))?
                            .into();
                    }
                    ready.pop_front()
                }
                _ => None,
            };
            write_entry(&mut builder, entry, timestamp, ahead)?;
        }
        builder.into_inner().map_err(LayerError::Sink)
    })
}

/// Regular files of at most this many bytes (and not empty) are read ahead.
const PREFETCH_MAX: u64 = 64 * 1024;
/// Files are handed over in batches of at most this many files or bytes
/// (one channel operation per batch, not per file)...
const BATCH_FILES: usize = 128;
const BATCH_BYTES: usize = 1 << 20;
/// ...with at most this many batches waiting: a few MiB held.
const PREFETCH_DEPTH: usize = 4;

type Batch = Vec<io::Result<Vec<u8>>>;

fn is_prefetched(size: u64) -> bool {
    size > 0 && size <= PREFETCH_MAX
}

/// Read every small regular file of `entries`, in order, and send the
/// contents (or errors) to the tar writer in batches. Stops when the
/// writer does.
fn prefetch(entries: &[Entry], tx: &SyncSender<Batch>) {
    let mut batch = Vec::with_capacity(BATCH_FILES);
    let mut bytes = 0;
    let mut parent = ParentDir::default();
    for entry in entries {
        let Kind::File {
            source,
            size,
            content: None,
        } = &entry.kind
        else {
            continue;
        };
        if !is_prefetched(*size) {
            continue;
        }
        let content = parent.read_small(source, *size);
        bytes += content.as_ref().map_or(0, Vec::len);
        batch.push(content);
        if batch.len() == BATCH_FILES || bytes >= BATCH_BYTES {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_FILES));
            bytes = 0;
            if tx.send(full).is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
}

/// The directory of the last file read ahead, open: entries are sorted by
/// path, so the files of one directory come one after another and each is
/// opened relative to it (no lookup of the whole path per file).
#[derive(Default)]
struct ParentDir {
    open: Option<(PathBuf, OwnedFd)>,
}

impl ParentDir {
    /// Up to `size` bytes of the file, in one `read` as a rule (fewer
    /// bytes if it shrank: the writer checks).
    fn read_small(&mut self, source: &Path, size: u64) -> io::Result<Vec<u8>> {
        let file = match (source.parent(), source.file_name()) {
            (Some(dir), Some(name)) => File::from(self.open_in(dir, name.as_bytes())?),
            _ => open_source(source)?,
        };
        let mut content = Vec::with_capacity(size as usize);
        file.take(size).read_to_end(&mut content)?;
        Ok(content)
    }

    fn open_in(&mut self, dir: &Path, name: &[u8]) -> io::Result<OwnedFd> {
        let fd = match &self.open {
            Some((path, fd)) if path == dir => fd,
            _ => {
                let fd = sys::open_long_path(dir, libc::O_PATH | libc::O_DIRECTORY)?;
                &self.open.insert((dir.to_path_buf(), fd)).1
            }
        };
        sys::openat(fd.as_fd(), name, SOURCE_FLAGS, 0)
    }
}

/// How a source file is opened: never through a final symlink.
const SOURCE_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOCTTY;

/// Open a source file by its path, which may be longer than PATH_MAX (a
/// file at the bottom of a deep tree).
fn open_source(source: &Path) -> io::Result<File> {
    sys::open_long_path(source, SOURCE_FLAGS).map(File::from)
}

/// Split a path into ustar (prefix, name), if it fits.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    // The prefix must end at a '/', be at most 155 bytes, and leave at most 100.
    let lowest = path.len().saturating_sub(101);
    path.iter()
        .enumerate()
        .skip(lowest)
        .take_while(|(i, _)| *i <= 155)
        .find(|(i, &b)| b == b'/' && path.len() - i - 1 <= 100 && *i > 0 && *i + 1 < path.len())
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
}

/// `ahead`: the file's content when it was read ahead.
fn write_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &Entry,
    timestamp: Option<i64>,
    ahead: Option<io::Result<Vec<u8>>>,
) -> Result<(), LayerError> {
    let mut name = entry.path.clone();
    if entry.kind == Kind::Dir {
        name.push(b'/');
    }
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut header = Header::new_ustar();

    match ustar_split(&name) {
        Some((prefix, base)) => {
            let ustar = header
                .as_ustar_mut()
                .ok_or_else(|| sink_bug("ustar header"))?;
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            ustar.name[..base.len()].copy_from_slice(base);
        }
        None => {
            pax.push(("path".into(), name.clone()));
            let short = &name[..100.min(name.len())];
            header.as_old_mut().name[..short.len()].copy_from_slice(short);
        }
    }

    let (entry_type, size, link) = match &entry.kind {
        Kind::Dir => (EntryType::Directory, 0, None),
        Kind::File { size, .. } => (EntryType::Regular, *size, None),
        Kind::Marker => (EntryType::Regular, 0, None),
        Kind::Symlink(t) => (EntryType::Symlink, 0, Some(t)),
        Kind::HardLink(t) => (EntryType::Link, 0, Some(t)),
        Kind::Fifo => (EntryType::Fifo, 0, None),
        Kind::Char { .. } => (EntryType::Char, 0, None),
        Kind::Block { .. } => (EntryType::Block, 0, None),
    };
    header.set_entry_type(entry_type);
    if let Some(target) = link {
        if target.len() <= 100 {
            header.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        } else {
            pax.push(("linkpath".into(), target.clone()));
        }
    }
    if size > MAX_OCTAL_SIZE {
        pax.push(("size".into(), size.to_string().into_bytes()));
        header.set_size(0);
    } else {
        header.set_size(size);
    }
    for (key, id, set) in [
        ("uid", entry.uid, Header::set_uid as fn(&mut Header, u64)),
        ("gid", entry.gid, Header::set_gid as fn(&mut Header, u64)),
    ] {
        if u64::from(id) > MAX_OCTAL_ID {
            pax.push((key.into(), id.to_string().into_bytes()));
            set(&mut header, 0);
        } else {
            set(&mut header, u64::from(id));
        }
    }
    header.set_mode(entry.mode & 0o7777);
    let mtime = match timestamp {
        Some(ts) => entry.mtime.min(ts),
        None => entry.mtime,
    };
    // Pre-1970 times are recorded as the epoch: ustar has no sign.
    header.set_mtime(mtime.max(0) as u64);
    if let Kind::Char { major, minor } | Kind::Block { major, minor } = entry.kind {
        header.set_device_major(major).map_err(LayerError::Sink)?;
        header.set_device_minor(minor).map_err(LayerError::Sink)?;
    } else {
        header.set_device_major(0).map_err(LayerError::Sink)?;
        header.set_device_minor(0).map_err(LayerError::Sink)?;
    }
    for (k, v) in &entry.xattrs {
        pax.push((
            format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)),
            v.clone(),
        ));
    }
    header.set_cksum();

    if !pax.is_empty() {
        builder
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(LayerError::Sink)?;
    }
    match (&entry.kind, ahead) {
        (
            Kind::File {
                source,
                size,
                content: Some(kept),
            },
            _,
        ) => append_kept(builder, &header, source, *size, kept),
        (Kind::File { source, size, .. }, Some(content)) => {
            append_read_ahead(builder, &header, source, *size, content)
        }
        (Kind::File { source, size, .. }, None) if *size > 0 => {
            append_file(builder, &header, source, *size)
        }
        _ => builder
            .append(&header, io::empty())
            .map_err(LayerError::Sink),
    }
}

/// A file whose writer kept its bytes (see `capture::known`): the same
/// size check as [`append_file`].
fn append_kept<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &Header,
    source: &std::path::Path,
    size: u64,
    kept: &[u8],
) -> Result<(), LayerError> {
    if kept.len() as u64 != size {
        return Err(LayerError::ChangedDuringCapture {
            path: source.to_path_buf(),
            expected: size,
            read: kept.len() as u64,
        });
    }
    builder.append(header, kept).map_err(LayerError::Sink)
}

/// A file read ahead: the same checks as [`append_file`].
fn append_read_ahead<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &Header,
    source: &std::path::Path,
    size: u64,
    content: io::Result<Vec<u8>>,
) -> Result<(), LayerError> {
    let content = content.map_err(|e| LayerError::source_io(source, e))?;
    if content.len() as u64 != size {
        return Err(LayerError::ChangedDuringCapture {
            path: source.to_path_buf(),
            expected: size,
            read: content.len() as u64,
        });
    }
    builder
        .append(header, content.as_slice())
        .map_err(LayerError::Sink)
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &Header,
    source: &std::path::Path,
    size: u64,
) -> Result<(), LayerError> {
    let file = open_source(source).map_err(|e| LayerError::source_io(source, e))?;
    let mut reader = BufReader::with_capacity(
        COPY_BUFFER.min(size as usize + 1),
        ReadErr {
            inner: file.take(size),
            error: None,
        },
    );
    let res = builder.append(header, &mut reader);
    let inner = reader.into_inner();
    // A read error is the source's fault, not the sink's: report it as such.
    if let Some(e) = inner.error {
        return Err(LayerError::source_io(source, e));
    }
    res.map_err(LayerError::Sink)?;
    let read = size - inner.inner.limit();
    if read != size {
        return Err(LayerError::ChangedDuringCapture {
            path: source.to_path_buf(),
            expected: size,
            read,
        });
    }
    Ok(())
}

/// Remembers a read error so it can be told apart from a write error.
struct ReadErr<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: Read> Read for ReadErr<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let kind = e.kind();
            self.error = Some(e);
            io::Error::from(kind)
        })
    }
}

fn sink_bug(what: &str) -> LayerError {
    LayerError::Sink(io::Error::other(format!("internal: {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_entry(path: &str, source: std::path::PathBuf, size: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: Kind::File {
                source,
                size,
                content: None,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            xattrs: Vec::new(),
            link_id: None,
        }
    }

    /// The tar as written before read-ahead: every file read in turn.
    fn write_tar_in_turn(entries: &[Entry]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            write_entry(&mut builder, entry, None, None).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn read_ahead_writes_the_same_bytes_as_reading_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries = Vec::new();
        // Many small files, an empty one, one at the read-ahead limit, one
        // over it: the reader and the writer must stay in step.
        for (i, size) in (0..3000u64).map(|i| (i, i % 1500 + 1)).chain([
            (3000, 0),
            (3001, PREFETCH_MAX),
            (3002, PREFETCH_MAX + 1),
        ]) {
            // Runs of files in one directory, then directories
            // alternating: the reader's open parent dir follows them.
            let sub = dir
                .path()
                .join(format!("d{}", if i < 2000 { i / 500 } else { i % 3 }));
            std::fs::create_dir_all(&sub).unwrap();
            let source = sub.join(format!("f{i:05}"));
            let content: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
            std::fs::write(&source, &content).unwrap();
            entries.push(file_entry(&format!("f{i:05}"), source, size));
        }
        let ahead = write_tar(&entries, None, Vec::new()).unwrap();
        assert!(ahead == write_tar_in_turn(&entries));
    }

    #[test]
    fn a_small_file_that_shrank_fails_the_read_ahead_too() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("f");
        std::fs::write(&source, b"short").unwrap();
        let entries = vec![file_entry("f", source, 100)];
        match write_tar(&entries, None, Vec::new()) {
            Err(LayerError::ChangedDuringCapture { expected, read, .. }) => {
                assert_eq!((expected, read), (100, 5))
            }
            other => panic!("expected ChangedDuringCapture, got {other:?}"),
        }
    }

    #[test]
    fn ustar_split_rules() {
        assert_eq!(ustar_split(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let long = [vec![b'd'; 120], b"/".to_vec(), vec![b'f'; 50]].concat();
        assert_eq!(
            ustar_split(&long).map(|(p, n)| (p.len(), n.len())),
            Some((120, 50))
        );
        let no_slash = vec![b'x'; 150];
        assert_eq!(ustar_split(&no_slash), None);
        let too_long = [vec![b'd'; 160], b"/".to_vec(), vec![b'f'; 50]].concat();
        assert_eq!(ustar_split(&too_long), None);
    }
}
