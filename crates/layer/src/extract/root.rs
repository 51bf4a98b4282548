//! The destination directory as a capability: every lookup goes through
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from the root fd, and
//! every change is an `*at` call on a resolved parent fd with a single
//! component name. A symlink anywhere in a path resolves as if the root were
//! `/`, so nothing outside it can be reached. Without openat2 (Linux < 5.6),
//! lookups walk component by component and refuse any symlink on the way.

use crate::error::LayerError;
use crate::sys;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

pub(crate) struct Root {
    fd: OwnedFd,
    /// The last parent dir resolved: sorted tars put siblings together.
    cached: Option<(Vec<u8>, Rc<OwnedFd>)>,
}

impl Root {
    pub fn open(path: &Path) -> Result<Root, LayerError> {
        let dest_err = |source| LayerError::Destination {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::options()
            .read(true)
            .custom_flags_dir()
            .open(path)
            .map_err(dest_err)?;
        Ok(Root {
            fd: OwnedFd::from(f),
            cached: None,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Forget cached lookups: called whenever something is removed or replaced.
    pub fn invalidate(&mut self) {
        self.cached = None;
    }

    /// Open the directory at `rel` (cleaned, relative) as an `O_PATH` fd.
    pub fn open_dir(&self, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        let flags = flags | libc::O_DIRECTORY;
        if rel.is_empty() {
            return sys::openat(self.fd(), b".", flags, 0);
        }
        if sys::has_openat2() {
            return sys::openat2_in_root(self.fd(), rel, flags, 0);
        }
        let mut cur = sys::openat(self.fd(), b".", libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        for (i, comp) in comps.iter().enumerate() {
            let f = if i + 1 == comps.len() {
                flags
            } else {
                libc::O_PATH | libc::O_DIRECTORY
            };
            cur = sys::openat(cur.as_fd(), comp, f | libc::O_NOFOLLOW, 0)?;
        }
        Ok(cur)
    }

    /// The parent directory `rel` as a dirfd, creating missing directories
    /// (mode 0755, owned by `owner`) on the way. Shared with the cache, so
    /// consecutive siblings cost no lookup.
    pub fn parent(
        &mut self,
        rel: &[u8],
        owner: Option<(u32, u32)>,
        created: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.cached {
            if p.as_slice() == rel {
                return Ok(Rc::clone(fd));
            }
        }
        let fd = match self.open_dir(rel, libc::O_PATH) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.make_dirs(rel, owner, created)?
            }
            Err(e) => return Err(e),
        };
        let fd = Rc::new(fd);
        self.cached = Some((rel.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    fn make_dirs(
        &self,
        rel: &[u8],
        owner: Option<(u32, u32)>,
        created: &mut dyn FnMut(&[u8]),
    ) -> io::Result<OwnedFd> {
        let mut end = 0;
        let mut parent = self.open_dir(b"", libc::O_PATH)?;
        loop {
            let next = rel[end..]
                .iter()
                .position(|&b| b == b'/')
                .map(|i| end + i)
                .unwrap_or(rel.len());
            let prefix = &rel[..next];
            let comp = &rel[end..next];
            let fd = match self.open_dir(prefix, libc::O_PATH) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::mkdirat(parent.as_fd(), comp, 0o755) {
                        // The name exists but did not resolve: a symlink whose
                        // target (inside the root) does not exist. Tar fails here too.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            return Err(io::Error::new(
                                io::ErrorKind::NotFound,
                                format!(
                                    "{} is a symlink to a missing directory",
                                    String::from_utf8_lossy(prefix)
                                ),
                            ))
                        }
                        r => r?,
                    }
                    if let Some((uid, gid)) = owner {
                        sys::lchownat(parent.as_fd(), comp, uid, gid)?;
                    }
                    created(prefix);
                    self.open_dir(prefix, libc::O_PATH)?
                }
                Err(e) => return Err(e),
            };
            parent = fd;
            if next == rel.len() {
                return Ok(parent);
            }
            end = next + 1;
        }
    }
}

/// Remove `name` in `dir`, recursively if it is a directory, never following
/// a symlink (a link is removed, not its target).
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match sys::lstatat(dir, name)? {
        None => Ok(()),
        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            let sub = sys::openat(
                dir,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            clear_dir(sub.as_fd(), &mut |_| false)?;
            sys::unlinkat(dir, name, true)
        }
        Some(_) => sys::unlinkat(dir, name, false),
    }
}

/// Remove every child of `dir` for which `keep` says false.
pub(crate) fn clear_dir(
    dir: BorrowedFd<'_>,
    keep: &mut dyn FnMut(&[u8]) -> bool,
) -> io::Result<()> {
    for child in sys::read_dir_names(dir)? {
        if !keep(&child) {
            remove_all_at(dir, &child)?;
        }
    }
    Ok(())
}

trait DirFlags {
    fn custom_flags_dir(&mut self) -> &mut Self;
}

impl DirFlags for std::fs::OpenOptions {
    fn custom_flags_dir(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY)
    }
}
