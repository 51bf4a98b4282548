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

use sys::LONG_PATH;

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
    /// A path too long for one syscall (a tree deeper than PATH_MAX
    /// allows, up to [`crate::limits::MAX_TREE_DEPTH`] levels) is walked
    /// a component at a time, refusing symlinks on the way.
    pub fn open_dir(&self, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        let flags = flags | libc::O_DIRECTORY;
        if rel.is_empty() {
            return sys::openat(self.fd(), b".", flags, 0);
        }
        if sys::has_openat2() {
            if rel.len() < LONG_PATH {
                return sys::openat2_in_root(self.fd(), rel, flags, 0);
            }
            return self.open_long(rel, flags);
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

    /// A path past one call's PATH_MAX: its head resolved in the root as
    /// any path is, the rest in pieces below it with no symlink followed
    /// (the component walk's rule). A few calls, not one per component.
    fn open_long(&self, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        sys::open_in_pieces(rel, flags, &|head, f| {
            sys::openat2_in_root(self.fd(), head, f, 0)
        })
    }

    /// `rel` is the cached dir plus one component that is a real dir (not
    /// a symlink): open it relative to the cached fd, one lookup instead
    /// of a walk from the root. A sorted tar meets a deep tree this way.
    fn child_of_cached(&self, rel: &[u8]) -> Option<OwnedFd> {
        let (cached, fd) = self.cached.as_ref()?;
        let rest = rel.strip_prefix(cached.as_slice())?;
        let comp = if cached.is_empty() {
            rest
        } else {
            rest.strip_prefix(b"/")?
        };
        if comp.is_empty() || comp.contains(&b'/') || comp == b".." || comp == b"." {
            return None;
        }
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        sys::openat(fd.as_fd(), comp, flags, 0).ok()
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
        let found = match self.child_of_cached(rel) {
            Some(fd) => Ok(fd),
            None => self.open_dir(rel, libc::O_PATH),
        };
        let fd = match found {
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
        // Once one dir is made, everything below it is new: no lookup from
        // the root (quadratic in the depth, and limited to PATH_MAX).
        let mut fresh = false;
        loop {
            let next = rel[end..]
                .iter()
                .position(|&b| b == b'/')
                .map(|i| end + i)
                .unwrap_or(rel.len());
            let prefix = &rel[..next];
            let comp = &rel[end..next];
            let found = if fresh {
                Err(io::Error::from_raw_os_error(libc::ENOENT))
            } else {
                self.open_dir(prefix, libc::O_PATH)
            };
            let fd = match found {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    fresh = true;
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
                    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                    sys::openat(parent.as_fd(), comp, flags, 0)?
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
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match sys::lstatat(dir, name)? {
        None => Ok(()),
        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            let sub = open_to_clear(dir, name)?;
            clear_dir(sub.as_fd(), &mut |_| false)?;
            sys::unlinkat(dir, name, true)
        }
        Some(_) => sys::unlinkat(dir, name, false),
    }
}

/// Remove every child of `dir` for which `keep` says false. A loop with
/// its own stack, not a recursion: a hostile tree is as deep as it likes,
/// and the thread's stack is 2 MiB. Only the last [`OPEN_LEVELS`] levels
/// keep their descriptor open (a rootless caller may have only 1,024); an
/// ancestor whose descriptor was closed is reopened as its child's `..`
/// and checked to be the same directory.
pub(crate) fn clear_dir(
    dir: BorrowedFd<'_>,
    keep: &mut dyn FnMut(&[u8]) -> bool,
) -> io::Result<()> {
    let mut top: Vec<Vec<u8>> = sys::read_dir_names(dir)?;
    top.retain(|child| !keep(child));
    let mut stack: Vec<Level> = Vec::new();
    loop {
        let next = match stack.last_mut() {
            Some(level) => level.names.pop(),
            None => top.pop(),
        };
        let Some(name) = next else {
            let Some(done) = stack.pop() else {
                return Ok(());
            };
            let fd = done.fd.ok_or_else(|| io::Error::other("a closed level"))?;
            if let Some(parent) = stack.last_mut() {
                if parent.fd.is_none() {
                    parent.fd = Some(reopen_parent(fd.as_fd(), parent.id)?);
                }
            }
            drop(fd);
            let parent = stack.last().map_or(Some(dir), Level::fd);
            let parent = parent.ok_or_else(|| io::Error::other("a closed level"))?;
            sys::unlinkat(parent, &done.name, true)?;
            continue;
        };
        let at = match stack.last() {
            Some(level) => level
                .fd()
                .ok_or_else(|| io::Error::other("a closed level"))?,
            None => dir,
        };
        match sys::lstatat(at, &name)? {
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                let sub = open_to_clear(at, &name)?;
                let names = sys::read_dir_names(sub.as_fd())?;
                if stack.len() >= OPEN_LEVELS {
                    let far = stack.len() - OPEN_LEVELS;
                    stack[far].fd = None;
                }
                stack.push(Level {
                    fd: Some(sub),
                    id: (st.st_dev, st.st_ino),
                    names,
                    name,
                });
            }
            Some(_) => sys::unlinkat(at, &name, false)?,
            None => {}
        }
    }
}

/// Levels of [`clear_dir`] that keep an open descriptor.
pub(crate) const OPEN_LEVELS: usize = 64;

/// One directory [`clear_dir`] is in: its descriptor (closed when far
/// above the current level), its (dev, ino), the names left in it, and
/// its own name in its parent.
struct Level {
    fd: Option<OwnedFd>,
    id: (libc::dev_t, libc::ino_t),
    names: Vec<Vec<u8>>,
    name: Vec<u8>,
}

impl Level {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }
}

/// The parent of the open dir `child`, which must be the dir `id`.
pub(crate) fn reopen_parent(
    child: BorrowedFd<'_>,
    id: (libc::dev_t, libc::ino_t),
) -> io::Result<OwnedFd> {
    let parent = open_to_clear(child, b"..")?;
    match sys::lstatat(parent.as_fd(), b".")? {
        Some(st) if (st.st_dev, st.st_ino) == id => Ok(parent),
        _ => Err(io::Error::other("a directory moved while it was removed")),
    }
}

fn open_to_clear(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    sys::openat(dir, name, flags, 0)
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
