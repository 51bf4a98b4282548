//! What a caller asks of a build: the request and the policy its RUN steps run under.

use cairn_layer::Compression;
use cairn_sandbox::{CancelToken, Network};
use std::collections::HashMap;
use std::path::PathBuf;

/// What to build. `Default`: an empty Dockerfile given as text, no context
/// dir (set one), the default compression, host network, no tags.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its path, for messages and for `<Dockerfile>.dockerignore`; empty
    /// for a Dockerfile given as text (messages then name
    /// [`INLINE_DOCKERFILE`], and only the context's `.dockerignore` counts).
    pub dockerfile_path: PathBuf,
    pub context: PathBuf,
    pub tags: Vec<String>,
    pub build_args: HashMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub compression: Compression,
    /// Clamp file mtimes and set every created time to this (SOURCE_DATE_EPOCH).
    pub timestamp: Option<i64>,
    pub network: Network,
    /// The organization the build is for (a platform's tenant), or None for
    /// the operator. With one, FROM / COPY --from / --mount from= cannot
    /// name another organization's snapshot images, cache mounts are the
    /// organization's own, and a step that used a secret is cached for it
    /// alone (see `tenancy`).
    pub organization: Option<String>,
    /// Entitlements and limits of the RUN steps.
    pub run_policy: RunPolicy,
    /// `--cache-from`: registry caches a step missing locally is pulled from.
    pub cache_from: Vec<crate::CacheImport>,
    /// `--cache-to`: registry caches the build's steps are pushed to.
    pub cache_to: Vec<crate::CacheExport>,
    /// Stops this build (and only this one) when cancelled; overrides the
    /// builder's [`Builder::with_cancel`] token.
    pub cancel: Option<CancelToken>,
}

/// What messages call a Dockerfile given as text.
pub const INLINE_DOCKERFILE: &str = "Dockerfile (inline)";

impl BuildRequest {
    /// The Dockerfile as messages name it: its path, or [`INLINE_DOCKERFILE`].
    pub fn dockerfile_name(&self) -> String {
        match self.dockerfile_path.as_os_str().is_empty() {
            true => INLINE_DOCKERFILE.to_string(),
            false => self.dockerfile_path.display().to_string(),
        }
    }
}

/// What the caller lets the Dockerfile's RUN steps have: a Dockerfile can
/// never widen it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunPolicy {
    /// `--allow network.host`: `RUN --network=host` may reach the host's
    /// network even when the build's network is `none` (BuildKit's entitlement).
    pub allow_network_host: bool,
    /// Memory of each RUN step in bytes (cgroup).
    pub memory_bytes: Option<u64>,
    /// CPUs of each RUN step (cgroup).
    pub cpus: Option<f64>,
    /// Processes of each RUN step; [`cairn_sandbox::manager::DEFAULT_PIDS_LIMIT`] when None.
    pub pids: Option<u64>,
    /// Kill a RUN step (and fail the build) after this long.
    pub timeout: Option<std::time::Duration>,
}

impl RunPolicy {
    /// The entitlements BuildKit names, as `--allow` takes them.
    pub fn allow(&mut self, entitlement: &str) -> Result<(), String> {
        match entitlement {
            "network.host" => self.allow_network_host = true,
            "security.insecure" => return Err(
                "entitlement security.insecure: not supported (sandboxes never get host privileges)"
                    .into(),
            ),
            other => {
                return Err(format!(
                    "entitlement {other:?}: unknown (expected network.host)"
                ))
            }
        }
        Ok(())
    }
}
