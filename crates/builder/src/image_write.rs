//! What a build writes to the store: a step's new layer (through the store's
//! one commit path, with its build-cache entry; then into the stage) and, at
//! the end, the image.

use crate::config::Field;
use crate::exec::LayerCommit;
use crate::state::{created_time, LayerRef, StageState};
use crate::BuildRequest;
use crate::{BuildError, Builder};
use cairn_layer::Digest;
use cairn_store::image::BlobRef;
use cairn_store::CacheRecord;
use serde_json::json;
use std::path::Path;

impl Builder<'_> {
    /// Commit an upper dir as step `step`'s layer through the store's one
    /// commit path: blob written and hashed once, checked, the dir adopted
    /// as the layer's extracted dir (or left, when the layer is already
    /// extracted), and the build-cache entry recorded.
    pub(crate) fn commit_upper(
        &self,
        req: &BuildRequest,
        upper: &Path,
        step: &StepCommit<'_>,
        known: Option<&cairn_layer::KnownEntries>,
    ) -> Result<CommittedStep, BuildError> {
        let _span = cairn_layer::timing::span("build.commit_layer");
        let media_type = req.compression.media_type();
        let created = created_time(req.timestamp);
        let value =
            json!({ "media_type": media_type, "created_by": step.created_by, "created": created })
                .to_string();
        let commit = LayerCommit {
            compression: req.compression,
            timestamp: req.timestamp,
            cache: Some(CacheRecord {
                key: step.key,
                value: &value,
            }),
        };
        let layer = match known {
            Some(known) => self.tasks.commit_known_layer(upper, commit, known)?,
            None => self.tasks.commit_layer(upper, commit)?,
        };
        if layer.adopted {
            // The caller's scratch dir keeps its shape for its removal.
            std::fs::create_dir_all(upper).map_err(BuildError::io(upper))?;
        }
        let layer = LayerRef {
            digest: layer.digest,
            size: layer.size,
            media_type: layer.media_type,
            diff_id: layer.diff_id,
        };
        Ok(CommittedStep { layer, created })
    }

    /// Add a step's committed layer to the stage.
    pub(crate) fn add_layer(&self, state: &mut StageState, step: CommittedStep, created_by: &str) {
        let CommittedStep { layer, created } = step;
        self.reuse_layer(state, layer, created_by, created);
    }

    pub(crate) fn write_image(
        &self,
        mut state: StageState,
        timestamp: Option<i64>,
    ) -> Result<Digest, BuildError> {
        let created = timestamp
            .map(|t| created_time(Some(t)))
            .unwrap_or_else(|| state.created.clone());
        state.config.created = Field::Set(created);
        let layers: Vec<BlobRef> = state
            .layers
            .iter()
            .map(|l| BlobRef {
                digest: l.digest,
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect();
        Ok(self.store.record_image(&state.config, &layers)?)
    }
}

/// Which step a layer is committed for: its cache key and history text.
pub(crate) struct StepCommit<'a> {
    pub key: &'a str,
    pub created_by: &'a str,
}

/// A step's layer in the store, and the time its history entry carries.
pub(crate) struct CommittedStep {
    pub layer: LayerRef,
    pub created: String,
}
