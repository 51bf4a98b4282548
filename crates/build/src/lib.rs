//! Builds: a Dockerfile and a context into an image in the store.
//!
//! Each stage starts from its base (scratch, a store image, an earlier stage,
//! an `oci:`/`oci-archive:` layout) and runs its instructions in order.
//! Config instructions edit the image config; RUN runs in a sandbox over the
//! stage's layer dirs and its upper dir becomes the new layer (and, renamed,
//! that layer's extracted dir); COPY writes into a fresh upper dir. Every
//! step has a cache key (see `keys.rs`); a step whose key is in the store's
//! build cache reuses the layer without running anything.

mod archive;
pub mod config;
pub mod context;
mod copy;
pub mod events;
pub mod explain;
mod fetch;
pub mod keys;
pub mod layer_sink;
mod memo;
mod mount_setup;
mod mounts;
pub mod remote_cache;
mod run;
mod stage;
pub mod tenancy;
mod view;
mod workdir;

pub use cairn_sandbox::CancelToken;
pub use events::{BuildEvent, OutputStream};
pub use explain::{Change, Reason};
pub use fetch::FetchError;
pub use keys::KeyInput;
pub use mount_setup::{remove_cache_mounts, Secret};
pub use remote_cache::{CacheExport, CacheImport, CacheMode};
pub use stage::{
    BuildRequest, BuildResult, Builder, Plan, RunPolicy, StepOutcome, StepReport, INLINE_DOCKERFILE,
};

use std::path::{Path, PathBuf};

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Bad input: the Dockerfile, a flag, a missing source or image.
    #[error("{0}")]
    Input(String),
    /// A RUN exited non-zero.
    #[error("{file}:{line}: RUN {command:?} failed with exit code {code}")]
    RunFailed {
        file: String,
        line: usize,
        command: String,
        code: i32,
    },
    /// The build was cancelled (its [`CancelToken`] fired): the running
    /// RUN was killed, its scratch dirs removed, nothing tagged.
    #[error("build cancelled")]
    Cancelled,
    /// A bug in Cairn (a stage thread panicked); the message says where.
    #[error("internal error: {0}")]
    Internal(String),
    /// Something not built yet; the message says what.
    #[error("not supported yet: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] cairn_sandbox::SandboxError),
    #[error(transparent)]
    Manager(#[from] cairn_sandbox::manager::ManagerError),
    #[error(transparent)]
    Registry(#[from] cairn_registry::RegistryError),
    /// `ADD <url>`: the download failed or did not match `--checksum`.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BuildError {
    pub(crate) fn input(message: impl Into<String>) -> Self {
        BuildError::Input(message.into())
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
        move |source| BuildError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the user's input is at fault (exit 2 in the CLI).
    pub fn is_bad_input(&self) -> bool {
        match self {
            BuildError::Input(_) => true,
            BuildError::Store(e) => e.is_bad_input(),
            BuildError::Manager(e) => e.is_bad_input(),
            BuildError::Sandbox(e) => e.is_bad_input(),
            BuildError::Registry(e) => e.is_bad_input(),
            BuildError::Fetch(e) => e.is_bad_input(),
            _ => false,
        }
    }
}
