//! The planner's read-only view of the store: cache entries (peeked, never
//! marked used), the last build of each step slot, and images by name. The
//! builder implements it over the real store; tests implement it in memory.

use crate::keys::KeyInput;
use crate::state::StageState;
use crate::{BuildError, Builder};
use cairn_store::cache::CacheEntry;

/// What the planner may read of the store. Nothing here writes.
pub(crate) trait CacheView {
    /// The usable build cache entry of `key` (its layer's blob is still
    /// there), without marking it used.
    fn peek(&self, key: &str) -> Result<Option<CacheEntry>, BuildError>;
    /// The last build of the step at `slot`: its key and named inputs.
    fn step_record(&self, slot: &str) -> Result<Option<(String, Vec<KeyInput>)>, BuildError>;
    /// The image `name` (a tag or digest in the store) as a stage would
    /// start from it: config, layers and base key; None when not there.
    fn image(&self, name: &str) -> Result<Option<StageState>, BuildError>;
}

impl CacheView for Builder<'_> {
    fn peek(&self, key: &str) -> Result<Option<CacheEntry>, BuildError> {
        let usable = |e: &CacheEntry| match (e.layer_digest, e.diff_id) {
            // The blob is enough: a missing dir is extracted on demand.
            (Some(digest), Some(_)) => self.store.has_blob(&digest),
            _ => false,
        };
        Ok(self.store.cache_peek(key)?.filter(usable))
    }

    fn step_record(&self, slot: &str) -> Result<Option<(String, Vec<KeyInput>)>, BuildError> {
        Ok(self
            .store
            .step_record(slot)?
            // A record this version cannot read explains nothing.
            .map(|r| (r.key, serde_json::from_str(&r.inputs).unwrap_or_default())))
    }

    fn image(&self, name: &str) -> Result<Option<StageState>, BuildError> {
        match self.store.resolve(name) {
            Ok(manifest) => Ok(Some(self.load_image(name, &manifest)?)),
            Err(cairn_store::StoreError::UnknownImage(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
