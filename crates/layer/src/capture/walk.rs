//! A pre-order walk of a directory tree that never follows symlinks and reads
//! each node's metadata and xattrs once.

use crate::error::LayerError;
use crate::sys;
use rayon::prelude::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
    fn read(abs: PathBuf, rel: Vec<u8>) -> Result<Node, LayerError> {
        let meta = std::fs::symlink_metadata(&abs).map_err(|e| LayerError::source_io(&abs, e))?;
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
        let link_target = if file_type == FileType::Symlink {
            let t = std::fs::read_link(&abs).map_err(|e| LayerError::source_io(&abs, e))?;
            Some(t.as_os_str().as_bytes().to_vec())
        } else {
            None
        };
        let xattrs = sys::list_xattrs(&abs).map_err(|e| LayerError::source_io(&abs, e))?;
        Ok(Node {
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

/// Walk `root` (not itself reported), calling `visit` for every node in
/// pre-order. Children are visited in name order so errors are reproducible.
pub(crate) fn walk_tree(
    root: &Path,
    visit: &mut dyn FnMut(Node) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir_abs, dir_rel)) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir_abs)
            .map_err(|e| LayerError::source_io(&dir_abs, e))?
            .map(|r| r.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| LayerError::source_io(&dir_abs, e))?;
        names.sort();
        let read = |name: &std::ffi::OsString| {
            let mut rel = dir_rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            Node::read(dir_abs.join(name), rel)
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
            if node.file_type == FileType::Dir {
                subdirs.push((node.abs.clone(), node.rel.clone()));
            }
            visit(node)?;
        }
        // Reverse so the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}
