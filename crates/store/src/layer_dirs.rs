//! Extracted layer dirs: `layers/<diff-id hex>/`, each entering the store
//! through one function, [`Store::adopt_layer_dir`], which makes its content
//! durable and then marks it complete with `layers/<hex>.complete`. Only a
//! dir with its marker counts as present; anything else under `layers/` is
//! garbage for GC (or, on use, replaced).
//!
//! Order, so that a crash anywhere leaves either nothing or a complete layer:
//! content synced (`syncfs` of the store's filesystem: the files of a layer
//! may belong to subordinate IDs we cannot open) -> marker written and
//! fsynced -> dir renamed into `layers/` -> `layers/` fsynced. A marker
//! without its dir is harmless (the layer is absent); a dir without a marker
//! is never trusted.

use crate::error::{Result, StoreError};
use crate::fsutil::sync_dir;
use crate::{Digest, Store};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Suffix of the completion marker beside each layer dir.
pub const MARKER_SUFFIX: &str = ".complete";

/// Removes a directory tree whose files may belong to subordinate IDs (the
/// CLI and the facade supply one that runs a task in a user namespace; the
/// store cannot depend on the sandbox crate). Must succeed when the path is
/// already gone.
pub trait TreeRemover {
    fn remove_tree(&self, path: &Path) -> std::result::Result<(), String>;
}

/// Removal with the caller's own rights: enough for trees it owns (as root,
/// or rootless without subordinate-owned files).
pub struct PlainRemover;

impl TreeRemover for PlainRemover {
    fn remove_tree(&self, path: &Path) -> std::result::Result<(), String> {
        match fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", path.display())),
        }
    }
}

/// What the completion marker says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerMarker {
    pub diff_id: Digest,
    /// Digest of the deterministic tar of the dir as adopted (uncompressed,
    /// no timestamp clamp): what `fsck --full` compares a fresh re-tar with.
    /// Equal to `diff_id` for a dir that is exactly its layer's tar.
    /// Not taken (and `diff_id` here) when `blob` is set.
    pub tree: Digest,
    /// The layer blob the dir was extracted from while it downloaded, set
    /// instead of taking `tree` (re-reading the new dir would cost as much
    /// as the extraction): `fsck --full` then compares the dir with a fresh
    /// extraction of this verified blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<Digest>,
}

impl LayerMarker {
    /// The marker of the layer dir of `diff_id`, checked against `reference`.
    fn new(diff_id: &Digest, reference: TreeRef) -> LayerMarker {
        let (tree, blob) = match reference {
            TreeRef::Tree(tree) => (tree.unwrap_or(*diff_id), None),
            TreeRef::Blob(blob) => (*diff_id, Some(blob)),
        };
        LayerMarker {
            diff_id: *diff_id,
            tree,
            blob,
        }
    }
}

/// Link a written marker to its name without clobbering: exactly one
/// adopter learns it made the marker. True when one was already there.
fn link_marker(tmp: tempfile::NamedTempFile, path: &Path) -> Result<bool> {
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(false),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(true),
        Err(e) => Err(StoreError::io("link into", path)(e.error)),
    }
}

/// What a layer dir is checked against later (see [`LayerMarker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeRef {
    /// The digest of the dir's deterministic tar, when not the diff id.
    Tree(Option<Digest>),
    /// The blob it was extracted from.
    Blob(Digest),
}

impl Store {
    /// Where the extracted copy of the layer with this diff id lives.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layout().layers().join(diff_id.hex())
    }

    pub(crate) fn layer_marker_path(&self, diff_id: &Digest) -> PathBuf {
        self.layout()
            .layers()
            .join(format!("{}{MARKER_SUFFIX}", diff_id.hex()))
    }

    /// Is the layer extracted and complete? (Two stats: marker and dir.)
    pub fn has_layer_dir(&self, diff_id: &Digest) -> bool {
        self.layer_marker_path(diff_id).is_file() && self.layer_dir(diff_id).is_dir()
    }

    /// The marker of a complete layer dir, if it has a readable one.
    pub fn layer_marker(&self, diff_id: &Digest) -> Option<LayerMarker> {
        let bytes = fs::read(self.layer_marker_path(diff_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Make `src` (a filled dir on the store's filesystem: under `tmp/`, or
    /// an upper dir) the layer dir of `diff_id`: sync, mark complete, rename.
    /// Returns false when a complete copy was already there; `src` is then
    /// left where it is, for the caller to remove. `tree` is the digest of
    /// the dir's deterministic tar when it differs from `diff_id`.
    pub fn adopt_layer_dir(
        &self,
        diff_id: &Digest,
        src: &Path,
        tree: Option<Digest>,
    ) -> Result<bool> {
        self.adopt_layer_dir_as(diff_id, src, TreeRef::Tree(tree))
    }

    /// [`Store::adopt_layer_dir`] with the marker's reference given.
    fn adopt_layer_dir_as(&self, diff_id: &Digest, src: &Path, reference: TreeRef) -> Result<bool> {
        if self.has_layer_dir(diff_id) {
            return Ok(false);
        }
        self.sync_for_adoption()?;
        self.adopt_synced_layer_dir(diff_id, src, reference)
    }

    /// Make everything written so far on the store's filesystem durable
    /// (one `syncfs`): the first half of adopting layer dirs, done once for
    /// any number of them (see [`Store::adopt_synced_layer_dir`]).
    pub fn sync_for_adoption(&self) -> Result<()> {
        let layers = self.layout().layers();
        let dir = fs::File::open(&layers).map_err(StoreError::io("open", &layers))?;
        rustix::fs::syncfs(&dir)
            .map_err(|e| StoreError::io("syncfs", &layers)(std::io::Error::from(e)))
    }

    /// [`Store::adopt_layer_dir`] for a `src` whose content was complete
    /// before the caller's last [`Store::sync_for_adoption`].
    pub fn adopt_synced_layer_dir(
        &self,
        diff_id: &Digest,
        src: &Path,
        reference: TreeRef,
    ) -> Result<bool> {
        if self.has_layer_dir(diff_id) {
            return Ok(false);
        }
        let marker = LayerMarker::new(diff_id, reference);
        let was_marked = self.write_marker(&marker)?;
        let adopted = self.place_layer_dir(diff_id, src, was_marked)?;
        if adopted {
            sync_dir(&self.layout().layers())?;
        }
        Ok(adopted)
    }

    /// Rename `src` to the layer dir of `diff_id`, its marker in place
    /// (`was_marked`: it was there before this adoption). False when
    /// another process completed it. Not synced: the caller fsyncs
    /// `layers/`.
    fn place_layer_dir(&self, diff_id: &Digest, src: &Path, was_marked: bool) -> Result<bool> {
        let dest = self.layer_dir(diff_id);
        if let Err(e) = fs::rename(src, &dest) {
            if !dest.is_dir() {
                return Err(StoreError::io("rename layer dir into", &dest)(e));
            }
            if was_marked {
                // Another process completed it (same diff id, same content).
                return Ok(false);
            }
            // We made the marker, so the dir there was named without one
            // (an older store) or by someone who saw ours (a complete copy
            // like ours). Either way ours replaces it; it goes to tmp/.
            let aside = tempfile::Builder::new()
                .prefix(&format!("unmarked-{}-", diff_id.hex()))
                .tempdir_in(self.layout().tmp())
                .map_err(StoreError::io("create temp dir in", self.layout().tmp()))?
                .keep();
            fs::rename(&dest, aside.join("dir")).map_err(StoreError::io("move aside", &dest))?;
            fs::rename(src, &dest).map_err(StoreError::io("rename layer dir into", &dest))?;
        }
        Ok(true)
    }

    /// Write the marker (fsynced); true when one was already there.
    fn write_marker(&self, marker: &LayerMarker) -> Result<bool> {
        let path = self.layer_marker_path(&marker.diff_id);
        if path.is_file() {
            return Ok(true);
        }
        let tmp = self.prepare_marker(marker)?;
        tmp.as_file()
            .sync_all()
            .map_err(StoreError::io("fsync", tmp.path().to_path_buf()))?;
        link_marker(tmp, &path)
    }

    /// The marker's bytes in a temp file under `tmp/`, not yet synced.
    fn prepare_marker(&self, marker: &LayerMarker) -> Result<tempfile::NamedTempFile> {
        let body = serde_json::to_vec(marker).map_err(|source| StoreError::Json {
            what: "layer marker".into(),
            source,
        })?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.layout().tmp())
            .map_err(StoreError::io("create temp file in", self.layout().tmp()))?;
        tmp.write_all(&body)
            .map_err(StoreError::io("write", tmp.path().to_path_buf()))?;
        Ok(tmp)
    }

    /// Adopt several filled dirs at once (a pull's streamed layers), with
    /// the same crash guarantees as [`Store::adopt_layer_dir`] and fewer
    /// syncs: every marker is written to `tmp/` first, so the one `syncfs`
    /// makes the markers' bytes durable with the dirs' content; then each
    /// marker is linked and each dir renamed into `layers/`, and `layers/`
    /// is fsynced once for all. (One at a time, each layer costs a marker
    /// fsync and a `layers/` fsync after the `syncfs`: 2-15 ms each here.)
    /// A crash before that last fsync leaves any subset of the names, each
    /// harmless: a marker without its dir is an absent layer, a dir without
    /// its marker is garbage. Returns, per dir, what
    /// [`Store::adopt_synced_layer_dir`] would (false: a complete copy was
    /// there, `src` is the caller's to remove); `Err` when the sync failed.
    pub fn adopt_layer_dirs(
        &self,
        dirs: &[(Digest, PathBuf, TreeRef)],
    ) -> Result<Vec<Result<bool>>> {
        let prepared: Vec<Result<Option<(LayerMarker, tempfile::NamedTempFile)>>> = dirs
            .iter()
            .map(|(diff_id, _, reference)| {
                if self.has_layer_dir(diff_id) {
                    return Ok(None);
                }
                let marker = LayerMarker::new(diff_id, *reference);
                let tmp = self.prepare_marker(&marker)?;
                Ok(Some((marker, tmp)))
            })
            .collect();
        self.sync_for_adoption()?;
        let mut placed = false;
        let results = dirs
            .iter()
            .zip(prepared)
            .map(|((_, src, _), prep)| {
                let Some((marker, tmp)) = prep? else {
                    return Ok(false);
                };
                let path = self.layer_marker_path(&marker.diff_id);
                let was_marked = path.is_file() || link_marker(tmp, &path)?;
                let adopted = self.place_layer_dir(&marker.diff_id, src, was_marked)?;
                placed |= adopted;
                Ok(adopted)
            })
            .collect();
        if placed {
            sync_dir(&self.layout().layers())?;
        }
        Ok(results)
    }

    /// [`Store::ensure_layer_dir_with`] for a filler that writes the layer's
    /// own tar content (tree digest = diff id) and files the caller owns.
    pub fn ensure_layer_dir<E>(
        &self,
        diff_id: &Digest,
        fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> std::result::Result<PathBuf, EnsureLayerError<E>> {
        self.ensure_layer_dir_with(diff_id, &PlainRemover, |dir| {
            fill(dir).map(|()| TreeRef::Tree(None))
        })
    }

    /// Return the layer dir, creating it with `fill` if it is not complete.
    /// `fill` gets an empty temp dir under `tmp/` and returns what the dir
    /// is checked against later ([`TreeRef`]: the digest of its
    /// deterministic tar when that differs from the diff id, or the blob it
    /// was extracted from, which spares a read-back of the new dir); the dir
    /// is then synced and adopted as in [`Store::adopt_layer_dir`]. If
    /// `fill` fails, nothing is named, the temp dir is removed through
    /// `remover` (what it cannot remove stays in `tmp/` for GC) and the
    /// error is returned.
    pub fn ensure_layer_dir_with<E>(
        &self,
        diff_id: &Digest,
        remover: &dyn TreeRemover,
        fill: impl FnOnce(&Path) -> std::result::Result<TreeRef, E>,
    ) -> std::result::Result<PathBuf, EnsureLayerError<E>> {
        let dest = self.layer_dir(diff_id);
        if self.has_layer_dir(diff_id) {
            return Ok(dest);
        }
        let tmp_root = self.layout().tmp();
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&tmp_root)
            .map_err(|e| {
                EnsureLayerError::Store(StoreError::io("create temp dir in", &tmp_root)(e))
            })?
            .keep();
        let adopted = match fill(&tmp) {
            Ok(reference) => self
                .adopt_layer_dir_as(diff_id, &tmp, reference)
                .map_err(EnsureLayerError::Store),
            Err(e) => Err(EnsureLayerError::Fill(e)),
        };
        if adopted.as_ref().map_or(true, |moved| !moved) {
            // Best effort: what stays behind is in tmp/, garbage for GC.
            let _ = remover.remove_tree(&tmp);
        }
        adopted.map(|_| dest)
    }
}

/// Why [`Store::ensure_layer_dir`] failed: the store, or the caller's filler.
#[derive(Debug, thiserror::Error)]
pub enum EnsureLayerError<E> {
    #[error(transparent)]
    Store(StoreError),
    #[error("filling layer dir: {0}")]
    Fill(E),
}
