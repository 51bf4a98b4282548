//! Extracted layer dirs: `layers/<diff-id hex>/`, each filled under `tmp/`
//! and renamed into place whole, so a named dir is always complete.

use crate::error::StoreError;
use crate::fsutil::sync_dir;
use crate::{Digest, Store};
use std::fs;
use std::path::{Path, PathBuf};

impl Store {
    /// Where the extracted copy of the layer with this diff id lives.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layout().layers().join(diff_id.hex())
    }

    /// One stat: is the layer extracted?
    pub fn has_layer_dir(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// Return the layer dir, creating it with `fill` if it does not exist.
    /// `fill` gets an empty temp dir on the same filesystem; when it succeeds
    /// the dir is renamed to `layers/<hex>`. If another process finished the
    /// same layer first, ours is removed and theirs is used (same diff id,
    /// same content). If `fill` fails, nothing is named and its error returned.
    pub fn ensure_layer_dir<E>(
        &self,
        diff_id: &Digest,
        fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> std::result::Result<PathBuf, EnsureLayerError<E>> {
        let dest = self.layer_dir(diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp_root = self.layout().tmp();
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&tmp_root)
            .map_err(|e| {
                EnsureLayerError::Store(StoreError::io("create temp dir in", &tmp_root)(e))
            })?;
        fill(tmp.path()).map_err(EnsureLayerError::Fill)?;
        // fs::rename of a dir onto an existing non-empty dir fails: that is
        // the "someone else won" case, and their dir is as good as ours.
        let tmp_path = tmp.keep();
        match fs::rename(&tmp_path, &dest) {
            Ok(()) => {
                sync_dir(&self.layout().layers()).map_err(EnsureLayerError::Store)?;
                Ok(dest)
            }
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&tmp_path);
                Ok(dest)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp_path);
                Err(EnsureLayerError::Store(StoreError::io(
                    "rename layer dir into",
                    &dest,
                )(e)))
            }
        }
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
