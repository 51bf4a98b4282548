//! A stage's state between its steps: config, layers, the last key and its inputs; and the build's times.

use crate::config::{self, ImageConfig};
use crate::explain::Reason;
use crate::keys::KeyInput;
use cairn_layer::Digest;
use cairn_registry::Platform;

pub(crate) const EPOCH: &str = "1970-01-01T00:00:00Z";

/// A layer of the image being built.
#[derive(Debug, Clone)]
pub(crate) struct LayerRef {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

/// A stage's state between instructions.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    pub key: String,
    /// When the newest layer was made (from the cache for a cached one): the
    /// time config-only steps and the image itself carry, so a fully cached
    /// rebuild gives the very same image.
    pub created: String,
    /// The named inputs of `key` (of the last step), for `--explain`.
    pub inputs: Vec<KeyInput>,
    /// The last step whose key changed for a reason of its own: its line
    /// and that reason, which later steps name as their parent's.
    pub change: Option<(usize, Reason)>,
    /// A dry run's FROM image that is not in the store: nothing after it
    /// can be keyed.
    pub missing_base: Option<String>,
    /// The context files of the last step (a COPY whose sources digest
    /// came from a recorded scan), not listed yet: `--explain` lists them
    /// into `inputs` only when it needs them.
    pub pending_files: Option<PendingFiles>,
}

/// Lists a COPY's context files as [`KeyInput::File`]s, in digest order.
#[derive(Clone)]
pub(crate) struct PendingFiles(
    pub std::sync::Arc<dyn Fn() -> Result<Vec<KeyInput>, crate::BuildError> + Send + Sync>,
);

impl std::fmt::Debug for PendingFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingFiles")
    }
}

impl StageState {
    /// `inputs` with the pending context files listed in (before the
    /// COPY's last input, its "sources, owner, mode and flags" setting,
    /// where a listing digest puts them).
    pub(crate) fn list_pending_files(&mut self) -> Result<(), crate::BuildError> {
        if let Some(pending) = self.pending_files.take() {
            let files = (pending.0)()?;
            let at = self.inputs.len().saturating_sub(1);
            self.inputs.splice(at..at, files);
        }
        Ok(())
    }
}

impl StageState {
    /// A stage starting from nothing: scratch for `platform`, keyed `key`.
    pub(crate) fn empty(platform: &Platform, key: &str, inputs: Vec<KeyInput>) -> Self {
        StageState {
            config: config::scratch(platform),
            layers: vec![],
            key: key.into(),
            created: EPOCH.into(),
            inputs,
            change: None,
            missing_base: None,
            pending_files: None,
        }
    }
}

/// RFC 3339 of the build's timestamp, or now.
pub(crate) fn created_time(timestamp: Option<i64>) -> String {
    let t = match timestamp {
        Some(secs) => std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64),
        None => std::time::SystemTime::now(),
    };
    humantime::format_rfc3339_seconds(t).to_string()
}
