//! Rootless COPY without a staging copy of the files: the context files and
//! symlinks a copy would write are recorded here instead (source, mode,
//! time), and the tar that [`super::TreeWriter::finish`] streams into the
//! extract task reads each file straight from the context. Each file is
//! read once (into the tar) and created once (by the extract task, in the
//! user namespace where its owner is the caller's to give).
//!
//! Directories are still made in the staging tree: they are few, and the
//! copy's rules about what replaces what (a dir over a file, a file over a
//! dir, a later source over an earlier one) then hold exactly as when the
//! files were written there too. A recorded entry stands in for a file at
//! its name in its staging dir; whatever writes a real entry at that name
//! forgets it first.
//!
//! Sources are opened again when the tar is written: beneath the copy's
//! source dir (kept open from the walk), one path component at a time,
//! never through a symlink, the file itself `O_NOFOLLOW` and checked to be
//! the regular file the walk saw (a swapped-in link, fifo or other file is
//! an error, not followed or read).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What stands at a recorded name.
pub(super) enum Body {
    /// A regular file: `name` in the source dir `src_dir` (relative to
    /// the copy's source root), `size` bytes, the source's (dev, ino)
    /// (hard links within one copy stay links), whether it has other links.
    File {
        src_dir: PathBuf,
        name: CString,
        size: u64,
        id: (u64, u64),
        linked: bool,
    },
    Symlink(CString),
}

/// One recorded file or symlink: its body, the copy it came from, and the
/// mode and time the copy gives it.
pub(super) struct Entry {
    pub body: Body,
    pub copy: usize,
    pub mode: u32,
    pub mtime: i64,
}

/// The entries recorded in one staging dir, by name.
pub(super) type DirEntries = BTreeMap<Vec<u8>, Entry>;

/// Everything a rootless step's copies recorded, by staging dir.
#[derive(Default)]
pub(crate) struct Deferred {
    /// The source dir of each copy, open (entries name their copy by index).
    roots: Mutex<Vec<(OwnedFd, PathBuf)>>,
    by_dir: Mutex<HashMap<PathBuf, DirEntries>>,
}

impl Deferred {
    /// Register a copy reading beneath the open dir `root` (at `path`);
    /// returns the index its entries carry.
    pub fn add_copy(&self, root: BorrowedFd, path: &Path) -> io::Result<usize> {
        let fd = root.try_clone_to_owned()?;
        let mut roots = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        roots.push((fd, path.to_path_buf()));
        Ok(roots.len() - 1)
    }

    /// Record the entries of the staging dir `dir` (replacing any recorded
    /// at the same names).
    pub fn record(&self, dir: &Path, entries: Vec<(Vec<u8>, Entry)>) {
        if entries.is_empty() {
            return;
        }
        let mut by_dir = self.by_dir.lock().unwrap_or_else(|e| e.into_inner());
        by_dir.entry(dir.to_path_buf()).or_default().extend(entries);
    }

    /// Forget the entry at `name` in the staging dir `dir` (a real entry
    /// is written there).
    pub fn forget(&self, dir: &Path, name: &[u8]) {
        let mut by_dir = self.by_dir.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = by_dir.get_mut(dir) {
            entries.remove(name);
        }
    }

    /// Forget every entry at or below the staging path `path` (a dir
    /// there was removed).
    pub fn forget_below(&self, path: &Path) {
        let mut by_dir = self.by_dir.lock().unwrap_or_else(|e| e.into_inner());
        by_dir.retain(|dir, _| !dir.starts_with(path));
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            if let Some(entries) = by_dir.get_mut(dir) {
                entries.remove(name.as_bytes());
            }
        }
    }

    /// Whether an entry is recorded at the staging path `path`.
    pub fn holds(&self, path: &Path) -> bool {
        let by_dir = self.by_dir.lock().unwrap_or_else(|e| e.into_inner());
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => by_dir
                .get(dir)
                .is_some_and(|e| e.contains_key(name.as_bytes())),
            _ => false,
        }
    }

    /// Take the entries recorded in the staging dir `dir`.
    pub fn take(&self, dir: &Path) -> DirEntries {
        let mut by_dir = self.by_dir.lock().unwrap_or_else(|e| e.into_inner());
        by_dir.remove(dir).unwrap_or_default()
    }

    /// A reader of a recorded file's `size` bytes (see the module doc).
    pub fn open(&self, sources: &mut SourceDirs, entry: &Entry) -> io::Result<Option<Exact>> {
        let Body::File {
            src_dir,
            name,
            size,
            id,
            ..
        } = &entry.body
        else {
            return Ok(None);
        };
        let roots = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        let (root, root_path) = roots
            .get(entry.copy)
            .ok_or_else(|| io::Error::other("a recorded file of an unknown copy"))?;
        let shown = root_path
            .join(src_dir)
            .join(OsStr::from_bytes(name.to_bytes()));
        let dir = sources
            .get(root.as_fd(), entry.copy, src_dir)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", shown.display())))?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let fd = open_at(dir, name, flags)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", shown.display())))?;
        let st = fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || (st.st_dev, st.st_ino) != *id {
            return Err(io::Error::other(format!(
                "{} changed while it was being copied",
                shown.display()
            )));
        }
        Ok(Some(Exact {
            file: std::fs::File::from(fd),
            left: *size,
            shown,
        }))
    }
}

/// The source dirs opened while a tar is written, by (copy, dir); a few
/// at a time (the entries of one staging dir come from few source dirs).
#[derive(Default)]
pub(super) struct SourceDirs {
    open: HashMap<(usize, PathBuf), OwnedFd>,
}

impl SourceDirs {
    fn get(&mut self, root: BorrowedFd, copy: usize, rel: &Path) -> io::Result<BorrowedFd<'_>> {
        let key = (copy, rel.to_path_buf());
        if !self.open.contains_key(&key) {
            if self.open.len() >= 64 {
                self.open.clear();
            }
            let mut fd = root.try_clone_to_owned()?;
            for part in rel.iter() {
                let part = CString::new(part.as_bytes())
                    .map_err(|_| io::Error::other("a path with a NUL byte"))?;
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                fd = open_at(fd.as_fd(), &part, flags)?;
            }
            self.open.insert(key.clone(), fd);
        }
        match self.open.get(&key) {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(io::Error::other("source dir cache")),
        }
    }
}

/// A recorded file's bytes: exactly the size the walk saw (a file that
/// grew since is cut there; one that shrank is an error, as the tar
/// header already promised its size).
pub(super) struct Exact {
    file: std::fs::File,
    left: u64,
    shown: PathBuf,
}

impl io::Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "{} shrank while it was being copied",
                self.shown.display()
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn open_at(dir: BorrowedFd, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: a valid dir descriptor and NUL-terminated name.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0) };
        if fd >= 0 {
            // SAFETY: openat just returned this descriptor, owned by no one.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid descriptor and a stat buffer fstat fills.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded.
    Ok(unsafe { st.assume_init() })
}
