//! Diff capture: from a directory (an overlay upper dir, a before/after pair of
//! trees, or a whole tree) to the sorted list of tar entries of a layer.

mod compare;
mod known;
mod overlay;
mod walk;

use crate::error::LayerError;
use crate::{DiffSource, LayerOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use known::{KnownEntries, KnownEntry, KnownKind};
pub(crate) use walk::{walk_tree, Node};

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    /// A regular file; its content is read from `source` when the tar is
    /// written, unless its writer kept it (`content`, see [`known`]).
    File {
        source: PathBuf,
        size: u64,
        content: Option<std::sync::Arc<[u8]>>,
    },
    Symlink(Vec<u8>),
    /// A hard link to an earlier entry (path in the layer).
    HardLink(Vec<u8>),
    Fifo,
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    /// `.wh.NAME` or `.wh..wh..opq`: an empty regular file with fixed metadata.
    Marker,
}

/// One tar entry, with owners already in container IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Relative path, no leading `./` or `/`, no trailing `/`.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch (before clamping).
    pub mtime: i64,
    /// xattrs to record, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// (dev, ino) of a regular file with more than one link, for hard link detection.
    pub link_id: Option<(u64, u64)>,
}

pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

impl Entry {
    /// A whiteout or opaque marker. Fixed metadata (mode 0, root, epoch) so the
    /// same deletion gives the same bytes however it was detected.
    pub(crate) fn marker(path: Vec<u8>) -> Entry {
        Entry {
            path,
            kind: Kind::Marker,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
            link_id: None,
        }
    }

    /// Entry from a walked node, owners mapped host -> container.
    pub(crate) fn from_node(node: &Node, opts: &LayerOptions) -> Result<Entry, LayerError> {
        let (uid, gid) = container_owner(opts, node.uid, node.gid, &node.abs)?;
        let kind = match node.file_type {
            walk::FileType::Dir => Kind::Dir,
            walk::FileType::File => Kind::File {
                source: node.abs.clone(),
                size: node.size,
                content: None,
            },
            walk::FileType::Symlink => Kind::Symlink(node.link_target.clone().unwrap_or_default()),
            walk::FileType::Fifo => Kind::Fifo,
            walk::FileType::Char => Kind::Char {
                major: libc::major(node.rdev),
                minor: libc::minor(node.rdev),
            },
            walk::FileType::Block => Kind::Block {
                major: libc::major(node.rdev),
                minor: libc::minor(node.rdev),
            },
            walk::FileType::Socket => Kind::Fifo, // filtered out before; never written
        };
        Ok(Entry {
            path: node.rel.clone(),
            kind,
            mode: node.mode & 0o7777,
            uid,
            gid,
            mtime: node.mtime,
            xattrs: keep_xattrs(&node.xattrs),
            link_id: (node.file_type == walk::FileType::File && node.nlink > 1)
                .then_some((node.dev, node.ino)),
        })
    }
}

/// A host owner mapped to the container's IDs; an ID outside the map is
/// an error naming the file at `path` (walked and known entries alike).
pub(crate) fn container_owner(
    opts: &LayerOptions,
    uid: u32,
    gid: u32,
    path: &Path,
) -> Result<(u32, u32), LayerError> {
    let unmapped = |kind, id| LayerError::UnmappedId {
        path: path.to_path_buf(),
        kind,
        id,
    };
    let uid = opts
        .id_map
        .uid_to_container(uid)
        .ok_or_else(|| unmapped("uid", uid))?;
    let gid = opts
        .id_map
        .gid_to_container(gid)
        .ok_or_else(|| unmapped("gid", gid))?;
    Ok((uid, gid))
}

/// The xattrs a layer carries: `security.capability`, `user.*` and `trusted.*`
/// except overlay's own (`*.overlay.*`), and POSIX ACLs. Others
/// (`security.selinux`, `security.ima`, ...) describe the host, not the image.
pub(crate) fn keep_xattrs(all: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    all.iter()
        .filter(|(name, _)| xattr_is_layer_content(name))
        .cloned()
        .collect()
}

pub(crate) fn xattr_is_layer_content(name: &[u8]) -> bool {
    if name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay.") {
        return false;
    }
    name == b"security.capability"
        || name.starts_with(b"user.")
        || name.starts_with(b"trusted.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// Sort key: path bytes, except that an opaque marker sorts right after its
/// directory and before any child, so readers that apply it when they meet it
/// (containerd, Docker) never remove this layer's own children.
fn sort_key(path: &[u8]) -> Vec<u8> {
    match path.strip_suffix(OPAQUE_MARKER) {
        Some(dir) if dir.is_empty() || dir.ends_with(b"/") => {
            let mut k = dir.to_vec();
            k.push(0);
            k
        }
        _ => path.to_vec(),
    }
}

/// Sort the entries and turn later links to an already-seen inode into hard links.
pub(crate) fn finish_entries(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by_cached_key(|e| sort_key(&e.path));
    let mut first_path: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for e in &mut entries {
        if let Some(id) = e.link_id {
            match first_path.get(&id) {
                Some(target) => e.kind = Kind::HardLink(target.clone()),
                None => {
                    first_path.insert(id, e.path.clone());
                }
            }
        }
    }
    entries
}

/// The sorted entries of an overlay upper dir, below its known dirs from
/// `known` (see [`known`]).
pub(crate) fn collect_known(
    upper: &std::path::Path,
    flavour: crate::OverlayFlavour,
    known: &KnownEntries,
    opts: &LayerOptions,
) -> Result<Vec<Entry>, LayerError> {
    Ok(finish_entries(known::capture(upper, flavour, known, opts)?))
}

/// The sorted entries of a diff source.
pub(crate) fn collect(
    source: &DiffSource<'_>,
    opts: &LayerOptions,
) -> Result<Vec<Entry>, LayerError> {
    let entries = match source {
        DiffSource::Full(root) => {
            let mut out = Vec::new();
            walk_tree(root, &mut |node| {
                if node.file_type != walk::FileType::Socket {
                    out.push(Entry::from_node(&node, opts)?);
                }
                Ok(())
            })?;
            out
        }
        DiffSource::OverlayUpper { upper, flavour } => overlay::capture(upper, *flavour, opts)?,
        DiffSource::Compare { lower, upper_tree } => compare::capture(lower, upper_tree, opts)?,
    };
    Ok(finish_entries(entries))
}
