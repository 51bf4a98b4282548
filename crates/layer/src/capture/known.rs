//! Entries a writer of the tree already knows: a COPY that just wrote a
//! context dir knows every name, mode, owner and time below it, and the
//! bytes of its small files. The capture then walks only the rest of the
//! upper dir and stats the known dirs themselves; below them it takes the
//! known entries, so the commit neither re-stats nor re-reads what the
//! copy wrote. The entries are the ones the walk would have made (the
//! tests compare both layers byte for byte).

use super::walk::{walk_tree_pruned, FileType};
use super::{overlay, Entry, Kind, WHITEOUT_PREFIX};
use crate::error::LayerError;
use crate::{LayerOptions, OverlayFlavour};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a known entry is. No hard links, devices or fifos: a writer that
/// made one does not hand its entries over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnownKind {
    Dir,
    /// A regular file of `size` bytes; `content` when the writer kept
    /// them (the tar reads the file otherwise).
    File {
        size: u64,
        content: Option<Arc<[u8]>>,
    },
    Symlink(Vec<u8>),
}

/// One entry below a known dir, as it is on disk after the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEntry {
    /// Path relative to the known dir, `/`-separated.
    pub rel: Vec<u8>,
    pub kind: KnownKind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Host owner, mapped like the walk's by the layer options.
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

/// Known dirs of a tree (by path relative to its root) and everything
/// below each. A known dir's own metadata is still read from disk.
#[derive(Debug, Default)]
pub struct KnownEntries {
    below: HashMap<Vec<u8>, Vec<KnownEntry>>,
}

impl KnownEntries {
    /// Everything below the dir at `dir` (relative to the tree's root,
    /// `/`-separated) is `entries`; a dir given twice gets both lists.
    pub fn add(&mut self, dir: Vec<u8>, entries: Vec<KnownEntry>) {
        self.below.entry(dir).or_default().extend(entries);
    }

    pub fn is_empty(&self) -> bool {
        self.below.is_empty()
    }

    /// Entries known in all.
    pub fn len(&self) -> usize {
        self.below.values().map(Vec::len).sum()
    }
}

/// The entries of the overlay upper dir `upper` (as
/// [`super::overlay::capture`] makes them), below the known dirs from
/// `known` instead of from disk. A known dir that carries a default ACL
/// (its new children got ACLs the writer did not record) or overlay
/// metadata is walked as usual.
pub(crate) fn capture(
    upper: &Path,
    flavour: OverlayFlavour,
    known: &KnownEntries,
    opts: &LayerOptions,
) -> Result<Vec<Entry>, LayerError> {
    let mut out = Vec::new();
    let mut spliced: Vec<(&[u8], PathBuf)> = Vec::new();
    let prefix = flavour.xattr_prefix();
    let prune = |node: &super::Node| {
        node.file_type == FileType::Dir
            && known.below.contains_key(&node.rel)
            && !node.xattrs.iter().any(|(name, _)| {
                name.as_slice() == b"system.posix_acl_default" || name.starts_with(prefix)
            })
    };
    walk_tree_pruned(upper, &prune, &mut |node, pruned| {
        if pruned {
            if let Some((rel, _)) = known.below.get_key_value(&node.rel) {
                spliced.push((rel.as_slice(), node.abs.clone()));
            }
        }
        overlay::push_node(node, flavour, opts, &mut out)
    })?;
    for (dir, abs) in spliced {
        for e in known.below.get(dir).into_iter().flatten() {
            out.push(entry_of(dir, &abs, e, opts)?);
        }
    }
    Ok(out)
}

/// The tar entry of a known entry below the dir `dir` (at `abs`).
fn entry_of(
    dir: &[u8],
    abs: &Path,
    e: &KnownEntry,
    opts: &LayerOptions,
) -> Result<Entry, LayerError> {
    let name = e.rel.rsplit(|&b| b == b'/').next().unwrap_or(&e.rel);
    if e.rel.is_empty() || name.starts_with(WHITEOUT_PREFIX) {
        // A whiteout name would read as a deletion; the walk sees it as a
        // file. Such trees are left to the walk by the writer.
        return Err(LayerError::bad_entry(&e.rel, "not a known entry"));
    }
    let source = abs.join(OsStr::from_bytes(&e.rel));
    let (uid, gid) = super::container_owner(opts, e.uid, e.gid, &source)?;
    let path = match dir.is_empty() {
        true => e.rel.clone(),
        false => [dir, b"/", &e.rel].concat(),
    };
    let kind = match &e.kind {
        KnownKind::Dir => Kind::Dir,
        KnownKind::File { size, content } => Kind::File {
            source,
            size: *size,
            content: content.clone(),
        },
        KnownKind::Symlink(target) => Kind::Symlink(target.clone()),
    };
    Ok(Entry {
        path,
        kind,
        mode: e.mode & 0o7777,
        uid,
        gid,
        mtime: e.mtime,
        xattrs: Vec::new(),
        link_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_layer, Compression, DiffSource};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// What a writer would know of everything below `dir` (`rel` below
    /// the known dir), read back with std; files up to 64 KiB keep bytes.
    fn know(dir: &Path, rel: &[u8], out: &mut Vec<KnownEntry>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let name = e.file_name();
            let child = match rel.is_empty() {
                true => name.as_bytes().to_vec(),
                false => [rel, b"/", name.as_bytes()].concat(),
            };
            let kind = if meta.is_dir() {
                KnownKind::Dir
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                KnownKind::Symlink(target.as_os_str().as_bytes().to_vec())
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                let content = (bytes.len() <= 64 * 1024).then(|| Arc::from(bytes));
                KnownKind::File {
                    size: meta.len(),
                    content,
                }
            };
            out.push(KnownEntry {
                rel: child.clone(),
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
            });
            if meta.is_dir() {
                know(&e.path(), &child, out);
            }
        }
    }

    fn tree(root: &Path) {
        let known = root.join("dst/known");
        std::fs::create_dir_all(known.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        std::fs::write(root.join("other/walked"), "walked").unwrap();
        std::fs::write(known.join("empty"), "").unwrap();
        std::fs::write(known.join("small"), "small").unwrap();
        std::fs::write(known.join("sub/big"), vec![7u8; 100 * 1024]).unwrap();
        std::fs::write(known.join("sub/deeper/setuid"), "x").unwrap();
        let mode = std::fs::Permissions::from_mode(0o4755);
        std::fs::set_permissions(known.join("sub/deeper/setuid"), mode).unwrap();
        let mode = std::fs::Permissions::from_mode(0o2750);
        std::fs::set_permissions(known.join("sub"), mode).unwrap();
        std::os::unix::fs::symlink("../small", known.join("sub/link")).unwrap();
        std::os::unix::fs::symlink("t/".repeat(80), known.join("long-link")).unwrap();
        std::fs::write(known.join("n".repeat(150)), "a long name").unwrap();
    }

    fn diff_ids(root: &Path, known: &KnownEntries) -> (Digest, Digest) {
        let opts = LayerOptions {
            compression: Compression::Gzip,
            ..LayerOptions::default()
        };
        let flavour = OverlayFlavour::UserXattr;
        let mut walked = Vec::new();
        let source = DiffSource::OverlayUpper {
            upper: root,
            flavour,
        };
        let full = write_layer(source, &opts, &mut walked).unwrap();
        let mut spliced = Vec::new();
        let part =
            crate::write_layer_known_unhashed(root, flavour, known, &opts, &mut spliced).unwrap();
        assert_eq!(walked, spliced, "the blobs are the same bytes");
        assert_eq!(full.entries, part.entries);
        (full.diff_id, part.diff_id)
    }

    use crate::Digest;

    #[test]
    fn known_entries_give_the_walks_layer_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        let mut entries = Vec::new();
        know(&tmp.path().join("dst/known"), b"", &mut entries);
        let mut known = KnownEntries::default();
        known.add(b"dst/known".to_vec(), entries);
        let (full, part) = diff_ids(tmp.path(), &known);
        assert_eq!(full, part);
    }

    #[test]
    fn known_entries_are_what_the_tar_holds() {
        // Wrong entries show: the known ones are taken, not the disk's.
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        let mut entries = Vec::new();
        know(&tmp.path().join("dst/known"), b"", &mut entries);
        entries.retain(|e| e.rel != b"small");
        let mut known = KnownEntries::default();
        known.add(b"dst/known".to_vec(), entries);
        let opts = LayerOptions::default();
        let flavour = OverlayFlavour::UserXattr;
        let entries = crate::capture::collect_known(tmp.path(), flavour, &known, &opts).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.clone()).collect();
        assert!(paths.contains(&b"dst/known/sub/big".to_vec()));
        assert!(paths.contains(&b"other/walked".to_vec()));
        assert!(!paths.contains(&b"dst/known/small".to_vec()));
        let kept = entries
            .iter()
            .find(|e| e.path == b"dst/known/sub/deeper/setuid")
            .unwrap();
        assert!(matches!(&kept.kind, Kind::File { content: Some(c), .. } if &c[..] == b"x"));
        assert_eq!(kept.mode, 0o4755);
    }

    #[test]
    fn a_known_dir_with_overlay_metadata_is_walked() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        let dir = tmp.path().join("dst/known");
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        // Nothing known of it is true: the walk must not take it.
        let bogus = KnownEntry {
            rel: b"not-there".to_vec(),
            kind: KnownKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut known = KnownEntries::default();
        known.add(b"dst/known".to_vec(), vec![bogus]);
        let (full, part) = diff_ids(tmp.path(), &known);
        assert_eq!(full, part);
    }
}
