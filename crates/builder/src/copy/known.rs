//! What a root COPY of a context dir wrote, handed to the commit
//! ([`cairn_layer::KnownEntries`]): every name, mode, owner and time below
//! the destination dir, and the bytes of its small files, so the commit
//! neither walks that tree again nor reads its files back (issue 16: a
//! one-changed-file rebuild pays the copy, not a second pass over 20,000
//! files). Anything the log cannot describe exactly (hard links, a name
//! that was already taken) spoils it, and the commit walks as before.

use cairn_layer::{KnownEntries, KnownEntry, KnownKind};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Files of at most this many bytes keep their bytes for the tar (the
/// tar writer's read-ahead takes the same size).
pub(super) const KEEP_MAX: u64 = 64 * 1024;
/// At most this many bytes are kept per COPY; later files are read back
/// by the tar as before.
const KEEP_BUDGET: u64 = 64 << 20;

/// The entries one copy wrote below its top destination dir.
pub(super) struct KnownLog {
    top: PathBuf,
    entries: Mutex<Vec<KnownEntry>>,
    spoiled: AtomicBool,
    kept: AtomicU64,
    /// The owner of an entry the copy does not chown: its creator's IDs,
    /// read once (not per entry).
    pub creator: (u32, u32),
}

impl KnownLog {
    pub fn new(top: &Path) -> Self {
        KnownLog {
            top: top.to_path_buf(),
            entries: Mutex::new(Vec::new()),
            spoiled: AtomicBool::new(false),
            kept: AtomicU64::new(0),
            creator: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        }
    }

    /// Something was written the log cannot describe.
    pub fn spoil(&self) {
        self.spoiled.store(true, Ordering::Relaxed);
    }

    /// Whether a file of `size` bytes keeps them (counted against the budget).
    pub fn keeps(&self, size: u64) -> bool {
        size <= KEEP_MAX && self.kept.fetch_add(size, Ordering::Relaxed) + size <= KEEP_BUDGET
    }

    /// The entry `name` of the written dir `dst_dir`, or `None` (spoiled)
    /// if that dir is not below the top, or if `name` is a whiteout's
    /// (`.wh.*`: a context may hold such files; the commit's walk decides
    /// what they become, and the known path refuses them).
    pub fn entry(
        &self,
        dst_dir: &Path,
        name: &[u8],
        kind: KnownKind,
        mode: u32,
        owner: (u32, u32),
        mtime: i64,
    ) -> Option<KnownEntry> {
        let below = match dst_dir.strip_prefix(&self.top) {
            Ok(below) if !name.starts_with(b".wh.") => below,
            _ => {
                self.spoil();
                return None;
            }
        };
        let below = below.as_os_str().as_bytes();
        let rel = match below.is_empty() {
            true => name.to_vec(),
            false => [below, b"/", name].concat(),
        };
        Some(KnownEntry {
            rel,
            kind,
            mode,
            uid: owner.0,
            gid: owner.1,
            mtime,
        })
    }

    /// Add the entries of one dir (one lock per dir, not per file).
    pub fn push(&self, entries: Vec<KnownEntry>) {
        if !entries.is_empty() {
            self.entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(entries);
        }
    }

    /// Add what this copy wrote to `known` as the contents of its top dir
    /// (`top_rel`: that dir relative to the layer's root); a spoiled log
    /// spoils `known` (returns false).
    pub fn into_known(self, top_rel: Vec<u8>, known: &mut KnownEntries) -> bool {
        if self.spoiled.load(Ordering::Relaxed) {
            return false;
        }
        let entries = self.entries.into_inner().unwrap_or_else(|e| e.into_inner());
        known.add(top_rel, entries);
        true
    }
}

/// A kept file's bytes, shared with the tar.
pub(super) fn kept(bytes: Vec<u8>) -> Option<Arc<[u8]>> {
    Some(Arc::from(bytes))
}

/// The store's [`cairn_store::LayerWriter`] for a tree a root COPY wrote:
/// the layer is written in this process from the known entries and the
/// rest of the upper dir (what a task's walk of the whole dir would give,
/// byte for byte; `cairn_layer::write_layer_known_unhashed`). The blob is
/// hashed by the store's writer, as with the task.
pub(crate) struct KnownLayerWriter<'a> {
    pub known: &'a KnownEntries,
    pub compression: cairn_layer::Compression,
    /// Container -> host IDs: the owners on disk are host IDs here.
    pub id_map: &'a cairn_layer::IdMap,
}

impl cairn_store::LayerWriter for KnownLayerWriter<'_> {
    type Error = crate::BuildError;

    fn write_layer(
        &self,
        dir: &Path,
        out: &mut cairn_store::BlobWriter,
    ) -> Result<cairn_store::LayerReport, crate::BuildError> {
        let opts = cairn_layer::LayerOptions {
            compression: self.compression,
            id_map: self.id_map.clone(),
            ..cairn_layer::LayerOptions::default()
        };
        let flavour = cairn_layer::OverlayFlavour::UserXattr;
        let written = cairn_layer::write_layer_known_unhashed(dir, flavour, self.known, &opts, out)
            .map_err(|e| match e {
                cairn_layer::LayerError::Limit(exceeded) => crate::BuildError::input(format!(
                    "the copied tree in {}: {exceeded}",
                    dir.display()
                )),
                e => crate::BuildError::Internal(format!(
                    "writing the layer of {}: {e}",
                    dir.display()
                )),
            })?;
        Ok(cairn_store::LayerReport {
            diff_id: written.diff_id,
            size: written.size,
            media_type: self.compression.media_type().to_string(),
            tree: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree_copy::TreeCopy;
    use super::*;
    use cairn_layer::{Compression, DiffSource, LayerOptions, OverlayFlavour};
    use std::os::unix::fs::PermissionsExt;

    fn source(src: &Path) {
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::write(src.join("small"), "small").unwrap();
        std::fs::write(src.join("empty"), "").unwrap();
        std::fs::write(src.join("d/big"), vec![3u8; 200 * 1024]).unwrap();
        std::fs::write(src.join("d/e/setgid"), "sg").unwrap();
        let mode = std::fs::Permissions::from_mode(0o2751);
        std::fs::set_permissions(src.join("d/e/setgid"), mode).unwrap();
        std::fs::set_permissions(src.join("d/e"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("../small", src.join("d/link")).unwrap();
        for i in 0..300 {
            std::fs::write(src.join(format!("d/f{i}")), format!("{i}")).unwrap();
        }
    }

    /// Copy `src` into `upper/dest` logging, and return the known entries
    /// (`None`: the log was spoiled).
    fn copy_known(src: &Path, upper: &Path, chmod: Option<&Chmod>) -> Option<KnownEntries> {
        let dest = upper.join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        let copy = TreeCopy::new(None, chmod, None).knowing(&dest);
        copy.copy_contents(src, "", &dest).unwrap();
        let mut known = KnownEntries::default();
        copy.into_known()?
            .into_known(b"dest".to_vec(), &mut known)
            .then_some(known)
    }

    /// The blob of `upper` walked, and written with `known`.
    fn blobs(upper: &Path, known: &KnownEntries) -> (Vec<u8>, Vec<u8>) {
        let opts = LayerOptions {
            compression: Compression::Gzip,
            ..LayerOptions::default()
        };
        let flavour = OverlayFlavour::UserXattr;
        let mut walked = Vec::new();
        let source = DiffSource::OverlayUpper { upper, flavour };
        cairn_layer::write_layer(source, &opts, &mut walked).unwrap();
        let mut logged = Vec::new();
        cairn_layer::write_layer_known_unhashed(upper, flavour, known, &opts, &mut logged).unwrap();
        (walked, logged)
    }

    use cairn_sandbox::chmod::Chmod;

    #[test]
    fn a_copys_log_gives_the_walks_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, upper) = (tmp.path().join("src"), tmp.path().join("upper"));
        source(&src);
        let known = copy_known(&src, &upper, None).expect("nothing spoils this copy");
        // Everything below the destination is logged, small bytes kept.
        assert_eq!(known.len(), 307);
        let (walked, logged) = blobs(&upper, &known);
        assert!(walked == logged, "the same layer, byte for byte");
    }

    #[test]
    fn a_copys_log_with_chmod_gives_the_walks_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, upper) = (tmp.path().join("src"), tmp.path().join("upper"));
        source(&src);
        let chmod = Chmod::parse("u=rwx,g=rx,o=").unwrap();
        let known = copy_known(&src, &upper, Some(&chmod)).unwrap();
        let (walked, logged) = blobs(&upper, &known);
        assert!(walked == logged);
    }

    #[test]
    fn hard_links_and_taken_names_spoil_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, upper) = (tmp.path().join("src"), tmp.path().join("upper"));
        source(&src);
        std::fs::hard_link(src.join("small"), src.join("d/small-again")).unwrap();
        assert!(copy_known(&src, &upper, None).is_none(), "hard link");
        let (src2, upper2) = (tmp.path().join("src2"), tmp.path().join("upper2"));
        source(&src2);
        std::fs::create_dir_all(upper2.join("dest")).unwrap();
        std::fs::write(upper2.join("dest/small"), "was here").unwrap();
        assert!(copy_known(&src2, &upper2, None).is_none(), "taken name");
        let (src3, upper3) = (tmp.path().join("src3"), tmp.path().join("upper3"));
        source(&src3);
        std::fs::create_dir_all(upper3.join("dest/d")).unwrap();
        assert!(copy_known(&src3, &upper3, None).is_none(), "taken dir");
    }

    /// A context file named like a whiteout is left to the walk (the
    /// known path refuses such names: with the log the commit failed).
    #[test]
    fn a_whiteout_name_spoils_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, upper) = (tmp.path().join("src"), tmp.path().join("upper"));
        source(&src);
        std::fs::write(src.join("d/e/.wh.foo"), "not a whiteout").unwrap();
        assert!(copy_known(&src, &upper, None).is_none());
    }
}
