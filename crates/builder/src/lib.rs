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
mod base;
mod builder;
mod cache_lookup;
pub mod config;
mod config_apply;
pub mod context;
mod copy;
mod error;
pub mod events;
mod exec;
pub mod explain;
mod fetch;
mod image_write;
pub mod keys;
pub mod layer_sink;
mod memo;
mod mount_setup;
mod mounts;
mod plan;
pub mod remote_cache;
mod report;
mod request;
mod run;
mod state;
pub mod tenancy;
mod view;
mod workdir;

pub use builder::Builder;
pub use cairn_sandbox::CancelToken;
pub use error::{BuildError, ErrorKind, NotSupported, Position};
pub use events::{BuildEvent, OutputStream};
pub use explain::{Change, Reason};
pub use fetch::FetchError;
pub use keys::KeyInput;
pub use mount_setup::{remove_cache_mounts, Secret};
pub use plan::{BuildGraph, Pending, StagePlan, StepKey, StepPlan};
pub use remote_cache::{CacheExport, CacheImport, CacheMode};
pub use report::{BuildResult, Plan, StepOutcome, StepReport};
pub use request::{BuildRequest, RunPolicy, INLINE_DOCKERFILE};
