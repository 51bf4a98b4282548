//! A walk of a directory tree that never follows symlinks, reads each
//! node's metadata and xattrs once, relative to its parent's descriptor,
//! and is bounded in depth and descriptors (a hostile RUN makes trees as
//! deep as it likes).

use crate::dir_chain::DirChain;
use crate::error::LayerError;
use crate::limits::{LimitExceeded, LimitKind, MAX_TREE_DEPTH};
use crate::sys;
use rayon::prelude::*;
use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Directories with at least this many names have them read in parallel.
const PARALLEL_FROM: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileType {
    Dir,
    File,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

/// One file found by the walk, with host IDs.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Path relative to the walked root, `/`-separated, no leading `./`.
    pub rel: Vec<u8>,
    pub abs: PathBuf,
    pub file_type: FileType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub rdev: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub link_target: Option<Vec<u8>>,
    /// All xattrs, sorted (filtering is the caller's business).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Node {
    /// The node `name` of the directory `dir` (open, at `abs`'s parent):
    /// `statx`, readlink and the xattr list relative to `dir`, so no call
    /// walks the whole path again (most of a small file's capture cost was
    /// that, and a deep node's path is longer than one call takes).
    fn read(
        dir: BorrowedFd<'_>,
        name: &[u8],
        abs: PathBuf,
        rel: Vec<u8>,
    ) -> Result<Node, LayerError> {
        let io_err = |e| LayerError::source_io(&abs, e);
        let st = sys::statx_at(dir, name).map_err(io_err)?;
        let file_type = match u32::from(st.stx_mode) & libc::S_IFMT {
            libc::S_IFDIR => FileType::Dir,
            libc::S_IFREG => FileType::File,
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::Fifo,
            libc::S_IFCHR => FileType::Char,
            libc::S_IFBLK => FileType::Block,
            _ => FileType::Socket,
        };
        let link_target = match file_type {
            FileType::Symlink => Some(sys::readlinkat(dir, name, 0).map_err(io_err)?),
            _ => None,
        };
        let xattrs = sys::list_xattrs_at(dir, name).map_err(io_err)?;
        Ok(Node {
            rel,
            file_type,
            mode: u32::from(st.stx_mode),
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: if file_type == FileType::File {
                st.stx_size
            } else {
                0
            },
            mtime: st.stx_mtime.tv_sec,
            mtime_nsec: i64::from(st.stx_mtime.tv_nsec),
            rdev: libc::makedev(st.stx_rdev_major, st.stx_rdev_minor),
            dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            nlink: u64::from(st.stx_nlink),
            link_target,
            xattrs,
            abs,
        })
    }

    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|(n, _)| n.as_slice() == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// A directory the walk is in (its descriptor is in the [`DirChain`]):
/// its subdirectories still to walk (last to walk first), and where it is.
struct Level {
    subdirs: Vec<Node>,
    rel: Vec<u8>,
    abs: PathBuf,
}

/// Walk `root` (not itself reported), calling `visit` for every node: a
/// directory's children in name order, then each subdirectory's tree in
/// turn (so errors are reproducible). A loop, not a recursion, and every
/// lookup is relative to the parent directory's descriptor, so a tree
/// deeper than PATH_MAX allows is read like any other, holding a bounded
/// number of descriptors ([`DirChain`]). A node more than
/// [`MAX_TREE_DEPTH`] levels down is refused with [`LimitKind::Depth`]
/// naming it.
pub(crate) fn walk_tree(
    root: &Path,
    visit: &mut dyn FnMut(Node) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    walk_tree_pruned(root, &|_| false, &mut |node, _| visit(node))
}

/// [`walk_tree`] that does not enter the dirs `prune` picks: they are
/// visited (with `true`), their contents are not.
pub(crate) fn walk_tree_pruned(
    root: &Path,
    prune: &dyn Fn(&Node) -> bool,
    visit: &mut dyn FnMut(Node, bool) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    let io_err = |e| LayerError::source_io(root, e);
    // The root itself may be reached through a symlink; nothing below it.
    let fd = sys::open_long_path(root, libc::O_RDONLY | libc::O_DIRECTORY).map_err(io_err)?;
    let mut chain = DirChain::new(fd).map_err(io_err)?;
    let mut top = Level {
        subdirs: Vec::new(),
        rel: Vec::new(),
        abs: root.to_path_buf(),
    };
    read_children(&mut top, &chain, prune, visit)?;
    let mut stack = vec![top];
    while let Some(level) = stack.last_mut() {
        let Some(sub) = level.subdirs.pop() else {
            stack.pop();
            if let Some(parent) = stack.last() {
                chain
                    .pop()
                    .map_err(|e| LayerError::source_io(&parent.abs, e))?;
            }
            continue;
        };
        let io_err = |e| LayerError::source_io(&sub.abs, e);
        // The name was a directory when it was stat'd; a symlink swapped
        // in since is refused, not followed.
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let parent = chain.top().map_err(io_err)?;
        let fd = sys::openat(parent, file_name(&sub.rel), flags, 0).map_err(io_err)?;
        chain.push(fd, (sub.dev, sub.ino));
        let mut next = Level {
            subdirs: Vec::new(),
            rel: sub.rel,
            abs: sub.abs,
        };
        read_children(&mut next, &chain, prune, visit)?;
        stack.push(next);
    }
    Ok(())
}

fn file_name(rel: &[u8]) -> &[u8] {
    rel.rsplit(|&b| b == b'/').next().unwrap_or(rel)
}

/// Visit the children of `level` (the top of `chain`) in name order and
/// keep its subdirectories for later.
fn read_children(
    level: &mut Level,
    chain: &DirChain,
    prune: &dyn Fn(&Node) -> bool,
    visit: &mut dyn FnMut(Node, bool) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    let io_err = |e| LayerError::source_io(&level.abs, e);
    let dir = chain.top().map_err(io_err)?;
    let mut names = sys::dir_names(dir).map_err(io_err)?;
    names.sort();
    let child = |name: &Vec<u8>| {
        let mut rel = level.rel.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        (level.abs.join(OsStr::from_bytes(name)), rel)
    };
    if chain.depth() >= MAX_TREE_DEPTH {
        if let Some(first) = names.first() {
            return Err(LayerError::Limit(LimitExceeded {
                kind: LimitKind::Depth,
                limit: MAX_TREE_DEPTH as u64,
                entry: Some(String::from_utf8_lossy(&child(first).1).into_owned()),
            }));
        }
    }
    let read = |name: &Vec<u8>| {
        let (abs, rel) = child(name);
        Node::read(dir, name, abs, rel)
    };
    // Big directories are read on every core (a stat and an xattr
    // list per name, mostly syscall time); in name order either way, so
    // the first error met is the same as in a sequential walk.
    let nodes: Vec<Result<Node, LayerError>> = if names.len() >= PARALLEL_FROM {
        names.par_iter().map(read).collect()
    } else {
        names.iter().map(read).collect()
    };
    let mut subdirs = Vec::new();
    for node in nodes {
        let node = node?;
        let pruned = node.file_type == FileType::Dir && prune(&node);
        if node.file_type == FileType::Dir && !pruned {
            subdirs.push(node.clone());
        }
        visit(node, pruned)?;
    }
    // Reversed: popped in name order.
    subdirs.reverse();
    level.subdirs = subdirs;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// The walk's node as it was read before the walk went relative to
    /// directory fds: everything by the node's full path, through std.
    fn read_by_path(abs: PathBuf, rel: Vec<u8>) -> Node {
        let meta = std::fs::symlink_metadata(&abs).unwrap();
        let ft = meta.file_type();
        let file_type = if ft.is_dir() {
            FileType::Dir
        } else if ft.is_file() {
            FileType::File
        } else if ft.is_symlink() {
            FileType::Symlink
        } else if ft.is_fifo() {
            FileType::Fifo
        } else if ft.is_char_device() {
            FileType::Char
        } else if ft.is_block_device() {
            FileType::Block
        } else {
            FileType::Socket
        };
        let link_target = (file_type == FileType::Symlink).then(|| {
            std::fs::read_link(&abs)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        });
        Node {
            rel,
            file_type,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: if file_type == FileType::File {
                meta.size()
            } else {
                0
            },
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            rdev: meta.rdev(),
            dev: meta.dev(),
            ino: meta.ino(),
            nlink: meta.nlink(),
            link_target,
            xattrs: sys::list_xattrs(&abs).unwrap(),
            abs,
        }
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        // SAFETY: NUL-terminated strings; value valid for its length.
        let r = unsafe {
            libc::lsetxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(r, 0, "setxattr {name}: {}", io::Error::last_os_error());
    }

    /// Every kind of node the capture meets: a big directory (read on both
    /// cores), small files, empty dirs, symlinks (one with a long target),
    /// hard links, a fifo, xattrs (one list longer than the first buffer),
    /// long names, a 0:0 whiteout device where we may make one.
    fn make_tree(root: &Path) {
        let many = root.join("many");
        std::fs::create_dir(&many).unwrap();
        for i in 0..3000 {
            std::fs::write(many.join(format!("f{i}")), vec![b'x'; i % 1500]).unwrap();
        }
        std::fs::create_dir_all(root.join("empty/deeper/still")).unwrap();
        std::fs::create_dir(root.join("e2")).unwrap();
        let long = "n".repeat(200);
        std::fs::create_dir(root.join(&long)).unwrap();
        std::fs::write(root.join(&long).join(&long), b"long").unwrap();
        std::os::unix::fs::symlink("many/f1", root.join("link")).unwrap();
        std::os::unix::fs::symlink("t/".repeat(300), root.join("longlink")).unwrap();
        std::os::unix::fs::symlink("/nowhere", many.join("dangling")).unwrap();
        std::fs::hard_link(many.join("f7"), root.join("hard")).unwrap();
        std::fs::hard_link(many.join("f7"), root.join("e2/hard2")).unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
        set_xattr(&many.join("f3"), "user.one", b"1");
        set_xattr(&root.join("e2"), "user.dir", b"opaque?");
        for i in 0..40 {
            set_xattr(
                &root.join("hard"),
                &format!("user.{}{i}", "k".repeat(20)),
                b"v",
            );
        }
        let wh = std::ffi::CString::new(root.join("gone").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path. Fails without CAP_MKNOD: skipped then.
        let _ = unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR | 0o600, 0) };
    }

    #[test]
    fn the_fd_relative_walk_reads_what_the_path_walk_read() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path());
        let mut walked = Vec::new();
        walk_tree(dir.path(), &mut |node| {
            walked.push(node);
            Ok(())
        })
        .unwrap();
        assert!(walked.len() > 3010, "{} nodes", walked.len());
        assert!(walked.iter().any(|n| n.xattrs.len() == 40));
        for node in &walked {
            let by_path = read_by_path(node.abs.clone(), node.rel.clone());
            assert_eq!(format!("{node:?}"), format!("{by_path:?}"));
        }
        // A directory's names in name order, its children after it.
        let rels: Vec<_> = walked.iter().map(|n| n.rel.clone()).collect();
        let pos = |p: &[u8]| rels.iter().position(|r| r == p).unwrap();
        assert!(pos(b"e2") < pos(b"empty") && pos(b"empty") < pos(b"fifo"));
        assert!(pos(b"e2") < pos(b"e2/hard2") && pos(b"many/f10") < pos(b"many/f2"));
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let mut swapped = false;
        let res = walk_tree(dir.path(), &mut |node| {
            if node.rel == b"d" {
                std::fs::remove_dir(&node.abs).unwrap();
                std::os::unix::fs::symlink(outside.path(), &node.abs).unwrap();
                swapped = true;
            }
            assert!(!node.rel.ends_with(b"secret"), "followed the swapped link");
            Ok(())
        });
        assert!(swapped);
        assert!(
            res.is_err(),
            "the swap must be an error, not a walk elsewhere"
        );
    }
}
