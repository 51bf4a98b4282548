//! What a build writes to the store: a step's new layer (into the stage and the build cache)
//! and, at the end, the image.

use crate::state::{created_time, LayerRef, StageState};
use crate::{BuildError, Builder};
use cairn_layer::Digest;
use cairn_store::image::BlobRef;
use serde_json::json;

impl Builder<'_> {
    /// Record a step's new layer in the stage and the build cache.
    pub(crate) fn add_layer(
        &self,
        state: &mut StageState,
        layer: LayerRef,
        created_by: &str,
        key: &str,
        timestamp: Option<i64>,
    ) -> Result<(), BuildError> {
        let created = created_time(timestamp);
        let value =
            json!({ "media_type": layer.media_type, "created_by": created_by, "created": created })
                .to_string();
        self.store.cache_put(&cairn_store::cache::CacheEntry {
            key: key.to_string(),
            layer_digest: Some(layer.digest),
            diff_id: Some(layer.diff_id),
            size: layer.size,
            value,
        })?;
        state.config.push_diff_id(&layer.diff_id.to_string());
        state.config.push_history(&created, created_by, false);
        state.created = created;
        state.layers.push(layer);
        Ok(())
    }

    pub(crate) fn write_image(
        &self,
        mut state: StageState,
        timestamp: Option<i64>,
    ) -> Result<Digest, BuildError> {
        let created = timestamp
            .map(|t| created_time(Some(t)))
            .unwrap_or_else(|| state.created.clone());
        state.config.set_created(&created);
        let config =
            serde_json::to_vec(&state.config.0).map_err(|e| BuildError::input(e.to_string()))?;
        let layers: Vec<BlobRef> = state
            .layers
            .iter()
            .map(|l| BlobRef {
                digest: l.digest,
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect();
        Ok(self.store.record_oci_image(&config, &layers)?)
    }
}
