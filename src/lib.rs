//! Cairn: a daemonless, rootless OCI image builder and snapshot store.
//!
//! This crate is the facade platform services link: it re-exports the
//! building blocks, each of which lives in its own crate under `crates/`.

pub use cairn_dockerfile as dockerfile;
