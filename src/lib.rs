//! Cairn: a daemonless, rootless OCI image builder and snapshot store.
//!
//! This crate is what platform services link. Open one [`Cairn`] handle
//! from [`CairnOptions`] and keep it (it is cheap to clone, `Send + Sync`):
//! builds ([`Cairn::build`]), sandboxes ([`Cairn::create_sandbox`],
//! [`Cairn::exec_output`], [`Cairn::write_file`], ...), snapshots
//! ([`Cairn::create_snapshot`], ...), pull/push and GC hang off it, as
//! blocking calls and, through [`Cairn::asynchronous`], as tokio futures
//! that cancel their work when dropped. Every call fails with one
//! [`Error`] whose [`Error::kind`] says what to do about it. The building
//! blocks stay reachable as modules (`cairn::build`, `cairn::store`, ...).
//!
//! **Call [`init`] first thing in `main`**, before any thread starts:
//! sandboxes (and rootless layer work) run in a re-executed copy of the
//! current binary, and `init` is where that copy does its work. Forgetting
//! it makes the first sandbox call fail with a message saying so.
//!
//! ```
//! fn main() -> Result<(), cairn::Error> {
//!     cairn::init();
//! #   let dir = tempfile::tempdir().unwrap();
//! #   drop(cairn_testsupport::store_with_busybox(dir.path()));
//! #   let store = dir.path().join("store");
//!     let cairn = cairn::Cairn::open(cairn::CairnOptions::new(store))?;
//!     let image = cairn.build(
//!         &cairn::BuildRequest::text("FROM busybox:fixture\nRUN echo ready > /status\n")
//!             .tag("localhost/svc:1"),
//!     )?;
//!     let sandbox = cairn.create_sandbox("localhost/svc:1", &cairn::SandboxOptions::default())?;
//!     let out = cairn.exec_output(&sandbox.id, &cairn::ExecRequest::new(["cat", "/status"]))?;
//!     assert_eq!(out.stdout, b"ready\n");
//!     cairn.remove_sandbox(&sandbox.id)?;
//!     # let _ = image;
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

mod asynchronous;
mod builds;
mod error;
mod handle;
mod options;
mod sandboxes;
mod snapshots;

pub use asynchronous::{AsyncCairn, BuildStream};
pub use builds::{BuildRequest, Dockerfile};
pub use error::{Error, ErrorKind, Position, Result};
pub use handle::Cairn;
pub use options::CairnOptions;
pub use sandboxes::{ExecRequest, SandboxOptions};
pub use snapshots::SnapshotRequest;

pub use cairn_builder::{BuildEvent, BuildResult, CancelToken};
pub use cairn_sandbox::{ExecOutput, StdStream};

/// Builds: Dockerfile + context into an image (the `cairn-builder` crate).
pub use cairn_builder as build;
/// Dockerfile parsing (the `cairn-dockerfile` crate).
pub use cairn_dockerfile as dockerfile;
/// Layers: diff, tar, compression, extraction (the `cairn-layer` crate).
pub use cairn_layer as layer;
/// Registries: pull, push, auth, regions (the `cairn-registry` crate).
pub use cairn_registry as registry;
/// Sandboxes: namespaces, rootfs, exec, commit (the `cairn-sandbox` crate).
pub use cairn_sandbox as sandbox;
/// Snapshots: records, states, the service (the `cairn-snapshot` crate).
pub use cairn_snapshot as snapshot;
/// The image store: blobs, images, layer dirs, GC (the `cairn-store` crate).
pub use cairn_store as store;

/// If this process was started as a Cairn sandbox helper, do the helper's
/// work and exit; otherwise return at once (one environment lookup).
///
/// The kernel refuses a new user namespace to a multithreaded process, so
/// Cairn never unshares in the caller: it re-executes the caller's binary,
/// and this call is where the re-executed copy takes over. A binary that
/// cannot call it can point [`CairnOptions::with_helper`] at one that does
/// (the `cairn` CLI does).
///
/// ```
/// fn main() {
///     cairn::init(); // before anything else, before any thread
///     // ... the service
/// }
/// # main();
/// ```
pub fn init() {
    cairn_sandbox::init_hook();
}
