//! One way in for a new layer made from a directory: [`Store::commit_layer`]
//! streams its blob into the store (hashed once, as it lands), checks it
//! against what the layer's writer counted, adopts the directory as the
//! layer's extracted dir (durably, see `layer_dirs`), and records the
//! build-cache entry when the caller has a key. Build steps (RUN, COPY/ADD,
//! WORKDIR), sandbox commits and snapshots all come through here.

use crate::cache::CacheEntry;
use crate::error::StoreError;
use crate::{BlobWriter, Digest, Store};
use cairn_layer::timing::span;
use std::path::Path;

/// Writes a directory as a layer blob into the store's writer. The store
/// cannot read every layer dir itself (its files may belong to subordinate
/// IDs): the sandbox crate's writer runs a task in a user namespace.
pub trait LayerWriter {
    /// The writer's own error; store errors of the commit come back in it.
    type Error: From<StoreError>;

    /// Stream the layer of `dir` into `out` and say what was written.
    fn write_layer(&self, dir: &Path, out: &mut BlobWriter) -> Result<LayerReport, Self::Error>;
}

/// What a [`LayerWriter`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Bytes of the blob as written (compressed).
    pub size: u64,
    /// The blob's media type (its compression).
    pub media_type: String,
    /// The dir's tree digest when it differs from the diff id (clamped
    /// mtimes); see [`crate::layer_dirs::LayerMarker::tree`].
    pub tree: Option<Digest>,
}

/// The build-cache entry to record with a committed layer.
#[derive(Debug, Clone, Copy)]
pub struct CacheRecord<'a> {
    pub key: &'a str,
    /// The builder's JSON (opaque to the store).
    pub value: &'a str,
}

/// A layer that is in the store: blob, diff id and extracted dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
    /// True when the source dir became the layer dir (it is gone from where
    /// it was); false when the layer was already extracted and the source
    /// dir is left to the caller to remove.
    pub adopted: bool,
}

impl Store {
    /// Commit the layer of `dir` (see the module doc). Nothing is named
    /// before the blob is complete and checked; on an error the blob's temp
    /// file is removed and `dir` stays where it was.
    pub fn commit_layer<W: LayerWriter>(
        &self,
        writer: &W,
        dir: &Path,
        cache: Option<CacheRecord<'_>>,
    ) -> Result<CommittedLayer, W::Error> {
        let write_span = span("store.commit_write_layer");
        let mut out = self.blob_writer()?;
        let report = writer.write_layer(dir, &mut out)?;
        if out.written() != report.size {
            return Err(StoreError::LayerMismatch {
                dir: dir.to_path_buf(),
                reason: format!(
                    "the layer writer wrote {} bytes but the store received {}",
                    report.size,
                    out.written()
                ),
            }
            .into());
        }
        // An uncompressed layer's blob is its tar: its digest must be the
        // diff id the writer reported (free to check: the blob is hashed anyway).
        let expected = (report.media_type == cairn_layer::Compression::None.media_type())
            .then_some((report.diff_id, report.size));
        let blob = out.commit(expected)?;
        drop(write_span);

        let _adopt_span = span("store.commit_adopt_layer_dir");
        let adopted = !self.has_layer_dir(&report.diff_id)
            && self.adopt_layer_dir(&report.diff_id, dir, report.tree)?;
        if let Some(c) = cache {
            self.cache_put(&CacheEntry {
                key: c.key.to_string(),
                layer_digest: Some(blob.digest),
                diff_id: Some(report.diff_id),
                size: blob.size,
                value: c.value.to_string(),
            })?;
        }
        Ok(CommittedLayer {
            digest: blob.digest,
            size: blob.size,
            media_type: report.media_type,
            diff_id: report.diff_id,
            adopted,
        })
    }
}
