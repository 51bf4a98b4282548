//! Snapshots: pre-built, versioned images with a record around them —
//! state, organization, resources, regions, build info — from which
//! sandboxes start. This crate holds the domain model and its persistence;
//! creating snapshots from builds, images and sandboxes ties in the other
//! crates (see docs/snapshots.md for what is built).

pub mod asynchronous;
pub mod context;
mod copies;
pub mod language;
pub mod record;
pub mod repo;
pub mod service;
pub mod state;
pub mod version;

pub use asynchronous::AsyncSnapshots;
pub use language::LanguageSnapshots;
pub use record::{BuildInfo, Limits, Resources, Snapshot};
pub use repo::{
    LeaseTerms, ListQuery, NewSnapshot, Page, SnapshotBackend, SnapshotDb, SnapshotError,
    SnapshotRepo,
};
pub use service::{CreateRequest, ServiceError, SnapshotService, Source};
pub use state::SnapshotState;

/// Render a value as YAML (serde_norway: the maintained fork of serde_yaml).
pub fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_norway::to_string(value).map_err(|e| e.to_string())
}
