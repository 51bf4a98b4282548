//! Cairn: a daemonless, rootless OCI image builder and snapshot store.
//!
//! This crate is the facade platform services link: it re-exports the
//! building blocks, each of which lives in its own crate under `crates/`.
//!
//! **Call [`init`] first thing in `main`**, before any thread starts:
//! sandboxes (and rootless layer work) run in a re-executed copy of the
//! current binary, and `init` is where that copy does its work.

pub use cairn_build as build;
pub use cairn_dockerfile as dockerfile;
pub use cairn_layer as layer;
pub use cairn_registry as registry;
pub use cairn_sandbox as sandbox;
pub use cairn_snapshot as snapshot;
pub use cairn_store as store;

/// If this process was started as a Cairn sandbox helper, do the helper's
/// work and exit; otherwise return at once (one environment lookup).
///
/// The kernel refuses a new user namespace to a multithreaded process, so
/// Cairn never unshares in the caller: it re-executes the caller's binary,
/// and this call is where the re-executed copy takes over. A binary that
/// cannot call it can point `sandbox::Launcher::with_helper` at one that does
/// (the `cairn` CLI does).
pub fn init() {
    cairn_sandbox::init_hook();
}
