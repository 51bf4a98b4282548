//! Copying files the way COPY does: type, mode, mtime, symlinks as links,
//! hard links as links, owners kept or set. Used by builds for context files
//! (in the caller) and for `COPY --from` (in a task, as root of a user
//! namespace, where owners of subordinate IDs can be read and set).

use cairn_layer::dir_chain::{dir_id, DirChain};
use cairn_layer::{remove_all_at, sys, MAX_TREE_DEPTH};
use nix::libc;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Whose files the copies are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Whoever creates them (the caller: container root in a sandbox).
    Creator,
    /// The source's owners (`COPY --from`).
    Keep,
    /// This uid:gid (`--chown`).
    Set(u32, u32),
}

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub owners: Owners,
    /// Mode for copied files and dirs (`--chmod`); their own mode otherwise.
    pub chmod: Option<crate::chmod::Chmod>,
    /// Skip 0:0 character devices (overlay whiteouts in a raw layer dir).
    pub skip_whiteouts: bool,
}

fn ctx<'a>(what: &str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    let what = what.to_string();
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Copies entries, remembering hard links among the sources.
///
/// Below the paths it is given, every call is relative to the parent
/// directory's descriptor on both sides (a [`DirChain`] each, so a tree
/// deeper than PATH_MAX allows copies with a bounded number of
/// descriptors), and the walk is a loop, not a recursion.
pub struct Copier {
    opts: CopyOptions,
    /// The first copy of each source inode with several links.
    links: HashMap<(u64, u64), PathBuf>,
}

/// A source directory being copied: its names still to copy (last first),
/// its paths (for messages), and its own metadata, applied to its copy
/// once everything below it is written.
struct Frame {
    names: Vec<Vec<u8>>,
    from: PathBuf,
    to: PathBuf,
    meta: Option<libc::stat>,
}

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

impl Copier {
    pub fn new(opts: CopyOptions) -> Self {
        Copier {
            opts,
            links: HashMap::new(),
        }
    }

    /// Copy the contents of dir `from` into dir `to` (which must exist).
    pub fn copy_contents(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let dir = libc::O_RDONLY | libc::O_DIRECTORY;
        let src = sys::open_long_path(from, dir).map_err(ctx("reading", from))?;
        let dst = sys::open_long_path(to, dir).map_err(ctx("opening", to))?;
        self.copy_tree(src, dst, from, to, 0)
    }

    /// Copy `from` (file, symlink, or dir with everything below it) to `to`.
    pub fn copy(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let (src_dir, src_name) = parent_and_name(from)?;
        let (dst_dir, dst_name) = parent_and_name(to)?;
        let src = sys::open_long_path(src_dir, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(ctx("reading", from))?;
        let dst = sys::open_long_path(dst_dir, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(ctx("opening", to))?;
        let at = (src.as_fd(), src_name, dst.as_fd(), dst_name);
        let Some(meta) = self.copy_entry(at, from, to)? else {
            return Ok(());
        };
        let s = sys::openat(src.as_fd(), src_name, DIR_FLAGS, 0).map_err(ctx("reading", from))?;
        let d = sys::openat(dst.as_fd(), dst_name, DIR_FLAGS, 0).map_err(ctx("opening", to))?;
        self.copy_tree(s, d, from, to, 1)?;
        self.finish(dst.as_fd(), dst_name, &meta, to)
    }

    /// Copy everything below the open dir `src` into the open dir `dst`:
    /// a loop with a stack of [`Frame`]s, each directory's metadata set
    /// after its contents. `base` is `src`'s depth below the destination
    /// the user named (0: its contents were named).
    fn copy_tree(
        &mut self,
        src: OwnedFd,
        dst: OwnedFd,
        from: &Path,
        to: &Path,
        base: usize,
    ) -> io::Result<()> {
        let mut srcs = DirChain::new(src).map_err(ctx("reading", from))?;
        let mut dsts = DirChain::new(dst).map_err(ctx("opening", to))?;
        let names = sorted_names(srcs.top()?).map_err(ctx("reading", from))?;
        let mut stack = vec![Frame {
            names,
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            meta: None,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.pop() else {
                let done = stack.pop();
                if let Some(Frame {
                    to,
                    meta: Some(meta),
                    ..
                }) = done
                {
                    srcs.pop().map_err(ctx("reading", &to))?;
                    dsts.pop().map_err(ctx("opening", &to))?;
                    self.finish(dsts.top()?, file_name(&to), &meta, &to)?;
                }
                continue;
            };
            let from = frame.from.join(OsStr::from_bytes(&name));
            let to = frame.to.join(OsStr::from_bytes(&name));
            let at = (srcs.top()?, name.as_slice(), dsts.top()?, name.as_slice());
            let Some(meta) = self.copy_entry(at, &from, &to)? else {
                continue;
            };
            if base + dsts.depth() + 1 > MAX_TREE_DEPTH {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: more than {MAX_TREE_DEPTH} nested directories",
                        from.display()
                    ),
                ));
            }
            let s = sys::openat(srcs.top()?, &name, DIR_FLAGS, 0).map_err(ctx("reading", &from))?;
            let d = sys::openat(dsts.top()?, &name, DIR_FLAGS, 0).map_err(ctx("opening", &to))?;
            let d_id = dir_id(d.as_fd()).map_err(ctx("opening", &to))?;
            srcs.push(s, (meta.st_dev, meta.st_ino));
            dsts.push(d, d_id);
            let names = sorted_names(srcs.top()?).map_err(ctx("reading", &from))?;
            stack.push(Frame {
                names,
                from,
                to,
                meta: Some(meta),
            });
        }
        Ok(())
    }

    /// Copy the entry `src_name` of `src_dir` to `dst_name` of `dst_dir`,
    /// except a directory's contents and metadata: for a directory (made
    /// or already there) its source metadata is returned, to finish it
    /// once its contents are copied.
    fn copy_entry(
        &mut self,
        (src_dir, src_name, dst_dir, dst_name): (BorrowedFd<'_>, &[u8], BorrowedFd<'_>, &[u8]),
        from: &Path,
        to: &Path,
    ) -> io::Result<Option<libc::stat>> {
        let meta = sys::lstatat(src_dir, src_name)
            .map_err(ctx("reading", from))?
            .ok_or_else(|| ctx("reading", from)(io::Error::from_raw_os_error(libc::ENOENT)))?;
        let kind = meta.st_mode & libc::S_IFMT;
        if self.opts.skip_whiteouts && kind == libc::S_IFCHR && meta.st_rdev == 0 {
            return Ok(None);
        }
        let is_dir = kind == libc::S_IFDIR;
        let kept_dir = match sys::lstatat(dst_dir, dst_name).map_err(ctx("replacing", to))? {
            Some(old) if old.st_mode & libc::S_IFMT == libc::S_IFDIR && is_dir => true,
            Some(_) => {
                remove_all_at(dst_dir, dst_name).map_err(ctx("replacing", to))?;
                false
            }
            None => false,
        };
        match kind {
            libc::S_IFDIR => {
                if !kept_dir {
                    // Owner-writable while its contents are copied; its
                    // own mode is set once they are.
                    sys::mkdirat(dst_dir, dst_name, 0o700).map_err(ctx("creating", to))?;
                }
                return Ok(Some(meta));
            }
            libc::S_IFLNK => {
                let target = sys::readlinkat(src_dir, src_name, meta.st_size as usize)
                    .map_err(ctx("reading", from))?;
                sys::symlinkat(&target, dst_dir, dst_name).map_err(ctx("creating", to))?;
                self.set_owner(dst_dir, dst_name, &meta, to)?;
                return set_times(dst_dir, dst_name, &meta, to).map(|()| None);
            }
            libc::S_IFREG => {}
            _ => return Ok(None), // sockets, fifos and devices are not copied
        }
        if meta.st_nlink > 1 {
            let id = (meta.st_dev, meta.st_ino);
            if let Some(first) = self.links.get(&id) {
                let (dir, name) = parent_and_name(first)?;
                let dir = sys::open_long_path(dir, libc::O_PATH | libc::O_DIRECTORY)
                    .map_err(ctx("linking", to))?;
                return sys::linkat(dir.as_fd(), name, dst_dir, dst_name)
                    .map_err(ctx("linking", to))
                    .map(|()| None);
            }
            self.links.insert(id, to.to_path_buf());
        }
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOCTTY;
        let mut input =
            File::from(sys::openat(src_dir, src_name, flags, 0).map_err(ctx("reading", from))?);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let mut output = File::from(
            sys::openat(dst_dir, dst_name, flags, 0o600).map_err(ctx("copying to", to))?,
        );
        io::copy(&mut input, &mut output).map_err(ctx("copying to", to))?;
        drop(output);
        self.finish(dst_dir, dst_name, &meta, to).map(|()| None)
    }

    /// Owner, mode, then times of the copy `name` in `dir` from `meta`.
    fn finish(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &libc::stat,
        to: &Path,
    ) -> io::Result<()> {
        self.set_owner(dir, name, meta, to)?;
        let is_dir = meta.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let mode = match &self.opts.chmod {
            Some(chmod) => chmod.apply(meta.st_mode, is_dir),
            None => meta.st_mode & 0o7777,
        };
        // After chown: chown clears setuid/setgid bits.
        sys::fchmodat(dir, name, mode).map_err(ctx("chmod", to))?;
        set_times(dir, name, meta, to)
    }

    fn set_owner(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        source: &libc::stat,
        to: &Path,
    ) -> io::Result<()> {
        let (uid, gid) = match self.opts.owners {
            Owners::Creator => return Ok(()),
            Owners::Keep => (source.st_uid, source.st_gid),
            Owners::Set(u, g) => (u, g),
        };
        sys::lchownat(dir, name, uid, gid).map_err(ctx("chown", to))
    }
}

fn sorted_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = sys::dir_names(dir)?;
    // Reversed: popped in name order.
    names.sort_by(|a, b| b.cmp(a));
    Ok(names)
}

fn file_name(path: &Path) -> &[u8] {
    path.file_name().map_or(b"", |n| n.as_bytes())
}

fn parent_and_name(path: &Path) -> io::Result<(&Path, &[u8])> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            Ok((dir, name.as_bytes()))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a path to copy", path.display()),
        )),
    }
}

fn set_times(dir: BorrowedFd<'_>, name: &[u8], source: &libc::stat, to: &Path) -> io::Result<()> {
    let mtime = TimeSpec::new(source.st_mtime, source.st_mtime_nsec);
    utimensat(
        dir,
        OsStr::from_bytes(name),
        &mtime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
    .map_err(ctx("setting times of", to))
}

/// Resolve `rel` inside `root` as a chroot would: symlinks (absolute or
/// relative) are followed within `root`, and `..` never climbs above it. A
/// symlink in the last component is left as it is.
pub fn resolve_in_root(root: &Path, rel: &str) -> io::Result<PathBuf> {
    resolve_within(root, rel, false)
}

/// [`resolve_in_root`], following a symlink in the last component too (the
/// path a mount or an open inside the chroot would reach).
pub fn resolve_all_in_root(root: &Path, rel: &str) -> io::Result<PathBuf> {
    resolve_within(root, rel, true)
}

fn resolve_within(root: &Path, rel: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<String> = rel.split('/').rev().map(String::from).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !pending.is_empty()) => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!(
                        "too many symlinks resolving {rel}"
                    )));
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    if let Component::Normal(n) = c {
                        pending.push(n.to_string_lossy().into_owned());
                    } else if c == Component::ParentDir {
                        pending.push("..".into());
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Copy `src`'s contents into `dst` as the caller, modes kept.
    fn copy_as_creator(src: &Path, dst: &Path) {
        let opts = CopyOptions {
            owners: Owners::Creator,
            chmod: None,
            skip_whiteouts: false,
        };
        Copier::new(opts).copy_contents(src, dst).unwrap();
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc", root.join("usr/escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/lib/x").unwrap(),
            root.join("usr/lib/x")
        );
        assert_eq!(
            resolve_in_root(root, "usr/escape/passwd").unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(root, "../../x").unwrap(), root.join("x"));
        std::os::unix::fs::symlink("/../../tmp/host-file", root.join("usr/last")).unwrap();
        assert_eq!(
            resolve_all_in_root(root, "/usr/last").unwrap(),
            root.join("tmp/host-file")
        );
        assert_eq!(
            resolve_in_root(root, "/usr/last").unwrap(),
            root.join("usr/last")
        );
    }

    #[test]
    fn copies_keep_modes_times_links() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), "x").unwrap();
        std::fs::set_permissions(src.join("d/f"), std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::hard_link(src.join("d/f"), src.join("d/g")).unwrap();
        std::os::unix::fs::symlink("f", src.join("d/l")).unwrap();
        let dst = tmp.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        copy_as_creator(&src, &dst);
        let f = std::fs::metadata(dst.join("d/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o751);
        assert_eq!(
            f.ino(),
            std::fs::metadata(dst.join("d/g")).unwrap().ino(),
            "hard link lost"
        );
        assert_eq!(std::fs::read_link(dst.join("d/l")).unwrap(), Path::new("f"));
        assert_eq!(
            f.mtime(),
            std::fs::metadata(src.join("d/f")).unwrap().mtime()
        );
    }

    /// `d` nested `levels` times below `root`, made relative to each
    /// parent's descriptor; the bottom dir's path.
    fn make_deep(root: &Path, levels: usize) -> PathBuf {
        let mut cur = sys::open_long_path(root, libc::O_RDONLY | libc::O_DIRECTORY).unwrap();
        for _ in 0..levels {
            sys::mkdirat(cur.as_fd(), b"d", 0o755).unwrap();
            cur = sys::openat(cur.as_fd(), b"d", DIR_FLAGS, 0).unwrap();
        }
        root.join("d/".repeat(levels))
    }

    #[test]
    fn a_tree_deeper_than_path_max_copies_with_its_links() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let bottom = make_deep(&src, 2100);
        let open = |p: &Path, f| File::from(sys::open_long_path(p, f).unwrap());
        let dir = sys::open_long_path(&bottom, libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let flags = libc::O_WRONLY | libc::O_CREAT;
        let f = File::from(sys::openat(dir.as_fd(), b"f", flags, 0o644).unwrap());
        io::Write::write_all(&mut &f, b"deep").unwrap();
        sys::linkat(dir.as_fd(), b"f", dir.as_fd(), b"g").unwrap();
        sys::symlinkat(b"../f", dir.as_fd(), b"l").unwrap();
        let dst = tmp.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        copy_as_creator(&src, &dst);
        let copied = dst.join("d/".repeat(2100));
        let mut body = String::new();
        io::Read::read_to_string(&mut open(&copied.join("f"), libc::O_RDONLY), &mut body).unwrap();
        assert_eq!(body, "deep");
        let dir = sys::open_long_path(&copied, libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let (f, g) = (
            sys::lstatat(dir.as_fd(), b"f").unwrap().unwrap(),
            sys::lstatat(dir.as_fd(), b"g").unwrap().unwrap(),
        );
        assert_eq!(f.st_ino, g.st_ino, "hard link lost");
        assert_eq!(sys::readlinkat(dir.as_fd(), b"l", 0).unwrap(), b"../f");
    }
}
