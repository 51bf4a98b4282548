//! The one cache lookup every step goes through: the local build cache, else a
//! `--cache-from` registry cache (imported into the local one, then looked up again).

use crate::request::BuildRequest;
use crate::state::{created_time, LayerRef, EPOCH};
use crate::{BuildError, Builder};
use serde_json::Value;

impl Builder<'_> {
    /// A cache hit, locally or else from a `--cache-from` registry cache.
    pub(crate) fn cached_layer(
        &self,
        req: &BuildRequest,
        key: &str,
    ) -> Result<Option<(LayerRef, String)>, BuildError> {
        self.remote_cache.note_key(req, key);
        match self.local_cached_layer(req, key)? {
            // A dry run plans from what is here: it pulls nothing.
            None if !self.dry_run && crate::remote_cache::import(self, req, key) => {
                self.local_cached_layer(req, key)
            }
            hit => Ok(hit),
        }
    }

    /// A local hit: the step's layer (if its blob is still there) and the
    /// time it was first made. A dry run only peeks (the entry
    /// is not marked used).
    fn local_cached_layer(
        &self,
        req: &BuildRequest,
        key: &str,
    ) -> Result<Option<(LayerRef, String)>, BuildError> {
        if req.no_cache {
            return Ok(None);
        }
        let entry = match self.dry_run {
            true => self.store.cache_peek(key)?,
            false => self.store.cache_get(key)?,
        };
        let Some(entry) = entry else {
            return Ok(None);
        };
        let (Some(digest), Some(diff_id)) = (entry.layer_digest, entry.diff_id) else {
            return Ok(None);
        };
        // The blob is enough: a layer without its dir (imported from a
        // registry cache, or its dir pruned) is extracted when a step needs
        // the tree (`ensure_extracted`).
        if !self.store.has_blob(&digest) {
            return Ok(None);
        }
        let value: Value = serde_json::from_str(&entry.value).unwrap_or(Value::Null);
        let media_type = value["media_type"]
            .as_str()
            .unwrap_or(req.compression.media_type())
            .to_string();
        let created = match req.timestamp {
            Some(t) => created_time(Some(t)),
            None => value["created"].as_str().unwrap_or(EPOCH).to_string(),
        };
        Ok(Some((
            LayerRef {
                digest,
                size: entry.size,
                media_type,
                diff_id,
            },
            created,
        )))
    }
}
