//! The entries below one context path, with their metadata, in the order
//! a sorted pre-order walk meets them (the order the sources digest
//! hashes them in).
//!
//! Descriptor-relative: each directory is opened once (`openat` at its
//! parent's descriptor, `O_NOFOLLOW`), read with `getdents64`, and each
//! name stat'ed with one `statx(dirfd, name, AT_SYMLINK_NOFOLLOW)` asking
//! only for the fields the digest and fingerprint use. No call walks a
//! path from the root, so a tree's depth is not bounded by PATH_MAX here
//! (only by [`cairn_layer::MAX_TREE_DEPTH`]). The subtrees of the first
//! levels are walked on the rayon pool (both cores), deeper ones by a
//! loop; the results are joined in walk order. Directories that
//! `.dockerignore` excludes with nothing below them re-includable are not
//! descended. At most [`MAX_OPEN_DIRS`] descriptors are held per walk;
//! an ancestor closed to keep that bound is reopened by name from the
//! nearest open one and checked by dev/inode.

use crate::BuildError;
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use rayon::prelude::*;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Levels below a source walked in parallel (subtrees at these levels
/// are pool tasks; below, one loop per subtree).
const PARALLEL_LEVELS: usize = 2;

/// A directory with this many names is stat'ed on the pool (in halves
/// at least this big).
const PARALLEL_STATS: usize = 512;

/// Directory descriptors one loop keeps open before it closes the
/// shallowest (a rootless caller has 1,024).
const MAX_OPEN_DIRS: usize = 64;

/// The `statx` fields read: what [`Stat`] holds (dev comes with every call).
const MASK: u32 = libc::STATX_TYPE
    | libc::STATX_MODE
    | libc::STATX_NLINK
    | libc::STATX_INO
    | libc::STATX_SIZE
    | libc::STATX_MTIME
    | libc::STATX_CTIME;

/// The metadata of one entry the sources digest, its fingerprint and the
/// memo use: the same values as `std::fs::Metadata`'s `dev`, `ino`,
/// `size`, `mtime`/`ctime` (in ns), `mode` (with the type) and `nlink`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub mode: u32,
    pub nlink: u64,
}

impl Stat {
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }

    fn from_statx(x: &libc::statx) -> Self {
        let ns = |t: libc::statx_timestamp| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        Stat {
            dev: libc::makedev(x.stx_dev_major, x.stx_dev_minor),
            ino: x.stx_ino,
            size: x.stx_size,
            mtime_ns: ns(x.stx_mtime),
            ctime_ns: ns(x.stx_ctime),
            mode: x.stx_mode as u32,
            nlink: x.stx_nlink as u64,
        }
    }
}

impl From<&std::fs::Metadata> for Stat {
    fn from(m: &std::fs::Metadata) -> Self {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            mode: m.mode(),
            nlink: m.nlink(),
        }
    }
}

/// One entry: its path relative to the context root, and its lstat.
pub(crate) struct Found {
    pub rel: String,
    pub meta: Stat,
}

/// What a walk needs besides the tree: the root (for errors) and which
/// directories it need not enter.
struct Walk<'a> {
    root: &'a Path,
    skip: &'a (dyn Fn(&str) -> bool + Sync),
}

/// Every entry at or below `root/src` for which `keep(rel)` holds:
/// `src` itself first, then each directory's children sorted by name,
/// each directory's contents right after it. Symlinks are not followed,
/// except `src` itself when it is one to a directory. Directories for
/// which `skip(rel)` holds are listed (when kept) but not entered: `skip`
/// must hold only where `keep` holds for nothing below.
pub(crate) fn scan(
    root: &Path,
    src: &str,
    keep: &dyn Fn(&str) -> bool,
    skip: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<Found>, BuildError> {
    let top = root.join(src);
    let rel = super::rel_of(root, &top);
    let meta = std::fs::symlink_metadata(&top).map_err(|e| read_err(root, &rel, e))?;
    let meta = Stat::from(&meta);
    let descend = meta.is_dir() || (meta.is_symlink() && top.is_dir());
    let mut all = vec![Found {
        rel: rel.clone(),
        meta,
    }];
    if descend && !skip(&rel) {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(&top, flags, Mode::empty())
            .map_err(|e| read_err(root, &rel, e.into()))?;
        let walk = Walk { root, skip };
        walk.below(fd, &rel, 1, &mut all)?;
    }
    // The longest `rel` whose `root/rel` fits, with its NUL, in PATH_MAX.
    let limit = (libc::PATH_MAX as usize).saturating_sub(root.as_os_str().len() + 2);
    all.retain(|f| keep(&f.rel));
    if let Some(long) = all.iter().find(|f| f.rel.len() > limit) {
        return Err(too_long(root, &long.rel));
    }
    Ok(all)
}

impl Walk<'_> {
    /// Append the entries below the open directory `fd` (at `rel`, `depth`
    /// levels below the source) to `out`, in walk order.
    fn below(
        &self,
        fd: OwnedFd,
        rel: &str,
        depth: usize,
        out: &mut Vec<Found>,
    ) -> Result<(), BuildError> {
        if depth > PARALLEL_LEVELS {
            return self.walk_loop(fd, rel, depth, out);
        }
        let (dir, children) = self.read_children(fd, rel)?;
        let parent = dir.as_fd();
        // Subtrees are the pool's tasks; a level of files is one.
        if children.iter().filter(|c| c.1.is_dir()).count() < 2 {
            for (name, meta) in children {
                self.child(parent, rel, name, meta, depth, out)?;
            }
            return Ok(());
        }
        let parts: Vec<Vec<Found>> = children
            .into_par_iter()
            .map(|(name, meta)| {
                let mut part = Vec::new();
                self.child(parent, rel, name, meta, depth, &mut part)?;
                Ok(part)
            })
            .collect::<Result<_, BuildError>>()?;
        out.extend(parts.into_iter().flatten());
        Ok(())
    }

    /// Append one child of `parent` (at `rel`) and, for a directory not
    /// skipped, what lies below it.
    fn child(
        &self,
        parent: BorrowedFd<'_>,
        rel: &str,
        name: String,
        meta: Stat,
        depth: usize,
        out: &mut Vec<Found>,
    ) -> Result<(), BuildError> {
        let rel = join(rel, &name);
        if !meta.is_dir() || (self.skip)(&rel) {
            out.push(Found { rel, meta });
            return Ok(());
        }
        let fd = self.open_dir(parent, &name, &rel)?;
        out.push(Found {
            rel: rel.clone(),
            meta,
        });
        self.below(fd, &rel, depth + 1, out)
    }

    /// [`Walk::below`] by one loop with its own stack of levels.
    fn walk_loop(
        &self,
        fd: OwnedFd,
        rel: &str,
        depth: usize,
        out: &mut Vec<Found>,
    ) -> Result<(), BuildError> {
        let (dir, children) = self.read_children(fd, rel)?;
        let mut stack = vec![Level::new(Some(dir), rel.to_string(), None, children)];
        while let Some(level) = stack.last_mut() {
            let Some((name, meta)) = level.children.next() else {
                stack.pop();
                continue;
            };
            let rel = join(&level.rel, &name);
            if !meta.is_dir() || (self.skip)(&rel) {
                out.push(Found { rel, meta });
                continue;
            }
            out.push(Found {
                rel: rel.clone(),
                meta,
            });
            if depth + stack.len() > cairn_layer::MAX_TREE_DEPTH {
                return Err(BuildError::input(format!(
                    "reading the build context: {}: more than {} nested directories",
                    shown(self.root, &rel),
                    cairn_layer::MAX_TREE_DEPTH
                )));
            }
            self.reopen_parent(&mut stack)?;
            let top = stack.last().expect("the level just read");
            let fd = self.open_dir(top.fd(), &name, &rel)?;
            // A level whose last directory is open needs its own no more
            // (but the first, the anchor for reopening).
            let first = stack.len() == 1;
            let parent = stack.last_mut().expect("the level just read");
            if !first && !parent.children.as_slice().iter().any(|(_, m)| m.is_dir()) {
                parent.dir = None;
            }
            let (dir, children) = self.read_children(fd, &rel)?;
            stack.push(Level::new(Some(dir), rel, Some((name, meta)), children));
            close_shallowest(&mut stack);
        }
        Ok(())
    }

    /// Reopen the top level's directory if [`close_shallowest`] closed it:
    /// by name from the nearest open ancestor, each step checked by
    /// dev/inode against its stat (a tree changed under the walk is an
    /// error, never a walk elsewhere).
    fn reopen_parent(&self, stack: &mut [Level]) -> Result<(), BuildError> {
        let top = stack.len() - 1;
        if stack[top].dir.is_some() {
            return Ok(());
        }
        let open = (0..top).rev().find(|&i| stack[i].dir.is_some());
        let open = open.expect("the walk's first level stays open");
        for i in open + 1..=top {
            let (name, meta) = stack[i].entry.clone().expect("a level below the first");
            let fd = self.open_dir(stack[i - 1].fd(), &name, &stack[i].rel)?;
            let now = nix::sys::stat::fstat(&fd).map_err(|e| read_err(self.root, "", e.into()))?;
            if now.st_dev != meta.dev || now.st_ino != meta.ino {
                return Err(BuildError::input(format!(
                    "reading the build context: {}: changed during the build",
                    shown(self.root, &stack[i].rel)
                )));
            }
            let dir = Dir::from_fd(fd).map_err(|e| read_err(self.root, &stack[i].rel, e.into()))?;
            stack[i].dir = Some(dir);
        }
        Ok(())
    }

    /// Open `name` below `parent`: a directory, never through a symlink.
    fn open_dir(
        &self,
        parent: BorrowedFd<'_>,
        name: &str,
        rel: &str,
    ) -> Result<OwnedFd, BuildError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        nix::fcntl::openat(parent, name, flags, Mode::empty())
            .map_err(|e| read_err(self.root, rel, e.into()))
    }

    /// The names in `fd`, sorted by their bytes, each with its lstat.
    #[allow(clippy::type_complexity)]
    fn read_children(
        &self,
        fd: OwnedFd,
        rel: &str,
    ) -> Result<(Dir, Vec<(String, Stat)>), BuildError> {
        let err = |e: nix::Error| read_err(self.root, rel, e.into());
        let mut dir = Dir::from_fd(fd).map_err(err)?;
        let mut names: Vec<CString> = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(err)?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable();
        // SAFETY: `dir` stays open (and unmoved) until the stats are done.
        let at = unsafe { BorrowedFd::borrow_raw(dir.as_raw_fd()) };
        let one = |name: CString| {
            let stat =
                cairn_layer::sys::statx_masked(at, &name, MASK).map(|x| Stat::from_statx(&x));
            // Paths are text in the digest (as they were): lossy, as before.
            let name = name.to_string_lossy().into_owned();
            let stat = stat.map_err(|e| read_err(self.root, &join(rel, &name), e))?;
            Ok((name, stat))
        };
        let children = match names.len() >= PARALLEL_STATS {
            true => names
                .into_par_iter()
                .with_min_len(PARALLEL_STATS / 2)
                .map(one)
                .collect(),
            false => names
                .into_iter()
                .map(one)
                .collect::<Result<_, BuildError>>(),
        }?;
        Ok((dir, children))
    }
}

/// One directory of a loop's stack: its descriptor while still needed,
/// its name and stat in its parent (to reopen it), its children to visit.
struct Level {
    dir: Option<Dir>,
    rel: String,
    entry: Option<(String, Stat)>,
    children: std::vec::IntoIter<(String, Stat)>,
}

impl Level {
    fn new(
        dir: Option<Dir>,
        rel: String,
        entry: Option<(String, Stat)>,
        children: Vec<(String, Stat)>,
    ) -> Self {
        Level {
            dir,
            rel,
            entry,
            children: children.into_iter(),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        let dir = self.dir.as_ref().expect("reopened before use");
        // SAFETY: the descriptor is the open `Dir`'s, borrowed no longer than it.
        unsafe { BorrowedFd::borrow_raw(dir.as_raw_fd()) }
    }
}

/// Keep at most [`MAX_OPEN_DIRS`] descriptors: close the shallowest open
/// one (never the first level's, the anchor for reopening).
fn close_shallowest(stack: &mut [Level]) {
    if stack.iter().filter(|l| l.dir.is_some()).count() > MAX_OPEN_DIRS {
        if let Some(level) = stack.iter_mut().skip(1).find(|l| l.dir.is_some()) {
            level.dir = None;
        }
    }
}

/// A context path for a message: whole, or its start and end when longer
/// than a screen.
fn shown(root: &Path, rel: &str) -> String {
    const EACH: usize = 120;
    let path = root.join(rel).to_string_lossy().into_owned();
    if path.len() <= 2 * EACH + 3 {
        return path;
    }
    let head = (0..=EACH).rev().find(|&i| path.is_char_boundary(i));
    let tail = (path.len() - EACH..path.len()).find(|&i| path.is_char_boundary(i));
    let (head, tail) = (head.unwrap_or(0), tail.unwrap_or(path.len()));
    format!("{}...{}", &path[..head], &path[tail..])
}

fn read_err(root: &Path, rel: &str, e: std::io::Error) -> BuildError {
    BuildError::input(format!(
        "reading the build context: {}: {e}",
        shown(root, rel)
    ))
}

/// A kept entry whose path does not fit in PATH_MAX: the COPY that would
/// read it is refused before anything is written (docs/security.md).
fn too_long(root: &Path, rel: &str) -> BuildError {
    let path = root.join(rel);
    BuildError::input(format!(
        "reading the build context: {}: the path is {} bytes, {} directories deep; \
         a build context's paths must fit in PATH_MAX ({} bytes)",
        shown(root, rel),
        path.as_os_str().len(),
        rel.matches('/').count(),
        libc::PATH_MAX
    ))
}

/// `a/b`, or `b` when `a` is empty.
fn join(a: &str, b: &str) -> String {
    match a.is_empty() {
        true => b.to_string(),
        false => format!("{a}/{b}"),
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
