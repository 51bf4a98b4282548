//! The walk-and-compare fallback: the layer is what differs between the lower
//! view (a stack of layer dirs, overlay semantics) and the tree after the change.

use super::overlay::{is_opaque, is_whiteout, opaque_marker_path, with_name_prefix};
use super::walk::{walk_tree, FileType, Node};
use super::{keep_xattrs, Entry, WHITEOUT_PREFIX};
use crate::error::LayerError;
use crate::{LayerOptions, OverlayFlavour};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

type Tree = BTreeMap<Vec<u8>, Node>;

/// Remove `rel`'s descendants: all keys starting with `rel/` form one range.
fn remove_descendants(tree: &mut Tree, rel: &[u8]) {
    let start = [rel, b"/"].concat();
    let end = [rel, b"0"].concat(); // '0' is the byte after '/'
    let doomed: Vec<_> = tree.range(start..end).map(|(k, _)| k.clone()).collect();
    for k in doomed {
        tree.remove(&k);
    }
}

/// Merge the lower dirs (topmost first) the way overlayfs would.
fn lower_view(lower: &[&Path]) -> Result<Tree, LayerError> {
    let mut view = Tree::new();
    for dir in lower.iter().rev() {
        walk_tree(dir, &mut |node| {
            if is_whiteout(&node) {
                remove_descendants(&mut view, &node.rel);
                view.remove(&node.rel);
                return Ok(());
            }
            if node.file_type == FileType::Socket {
                // Sockets are never in a layer (the after side skips them too).
                return Ok(());
            }
            let replaces_tree = node.file_type != FileType::Dir
                || is_opaque(&node, OverlayFlavour::UserXattr)
                || is_opaque(&node, OverlayFlavour::Trusted);
            if replaces_tree {
                remove_descendants(&mut view, &node.rel);
            }
            view.insert(node.rel.clone(), node);
            Ok(())
        })?;
    }
    Ok(view)
}

fn same_content(a: &Path, b: &Path) -> Result<bool, LayerError> {
    let open = |p: &Path| {
        crate::sys::open_long_path(p, libc::O_RDONLY | libc::O_NOFOLLOW)
            .map(std::fs::File::from)
            .map_err(|e| LayerError::source_io(p, e))
    };
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| LayerError::source_io(a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| LayerError::source_io(b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether `after` differs from `before` in anything a layer records.
fn changed(before: &Node, after: &Node) -> Result<bool, LayerError> {
    let meta_differs = before.file_type != after.file_type
        || before.mode != after.mode
        || before.uid != after.uid
        || before.gid != after.gid
        || before.size != after.size
        || before.rdev != after.rdev
        || before.link_target != after.link_target
        || keep_xattrs(&before.xattrs) != keep_xattrs(&after.xattrs)
        || (before.mtime, before.mtime_nsec) != (after.mtime, after.mtime_nsec);
    if meta_differs {
        return Ok(true);
    }
    // Same metadata: a regular file may still have been rewritten within the
    // same timestamp. Different inodes are compared by content.
    if after.file_type == FileType::File && (before.dev, before.ino) != (after.dev, after.ino) {
        return Ok(!same_content(&before.abs, &after.abs)?);
    }
    Ok(false)
}

fn parent(rel: &[u8]) -> Option<&[u8]> {
    rel.iter().rposition(|&b| b == b'/').map(|i| &rel[..i])
}

pub(crate) fn capture(
    lower: &[&Path],
    upper_tree: &Path,
    opts: &LayerOptions,
) -> Result<Vec<Entry>, LayerError> {
    let before = lower_view(lower)?;
    let mut after = Tree::new();
    walk_tree(upper_tree, &mut |node| {
        if node.file_type != FileType::Socket {
            after.insert(node.rel.clone(), node);
        }
        Ok(())
    })?;

    let mut out = Vec::new();
    // Dirs that must appear because something below them changed.
    let mut needed_dirs = BTreeSet::new();
    let mut emitted = BTreeSet::new();
    let need_parents = |rel: &[u8], needed: &mut BTreeSet<Vec<u8>>| {
        let mut p = parent(rel);
        while let Some(dir) = p {
            if !needed.insert(dir.to_vec()) {
                break;
            }
            p = parent(dir);
        }
    };

    for (rel, node) in &after {
        let old = before.get(rel);
        let is_changed = match old {
            None => true,
            Some(old) => changed(old, node)?,
        };
        if !is_changed {
            continue;
        }
        out.push(Entry::from_node(node, opts)?);
        emitted.insert(rel.clone());
        // A dir made where a non-dir was: overlayfs marks it opaque; do the same
        // so both capture paths give the same layer.
        if node.file_type == FileType::Dir && old.is_some_and(|o| o.file_type != FileType::Dir) {
            out.push(Entry::marker(opaque_marker_path(rel)));
        }
        need_parents(rel, &mut needed_dirs);
    }

    for rel in before.keys() {
        if after.contains_key(rel) {
            continue;
        }
        // Only the topmost deleted path gets a whiteout; and none if the parent
        // is now a non-dir (the replacement hides it already).
        if let Some(p) = parent(rel) {
            if !after.get(p).is_some_and(|n| n.file_type == FileType::Dir) {
                continue;
            }
        }
        out.push(Entry::marker(with_name_prefix(rel, WHITEOUT_PREFIX)));
        need_parents(rel, &mut needed_dirs);
    }

    for dir in needed_dirs {
        if emitted.contains(&dir) {
            continue;
        }
        if let Some(node) = after.get(&dir) {
            out.push(Entry::from_node(node, opts)?);
        }
    }
    Ok(out)
}
