//! cairn-store: the content-addressed image store.
//!
//! One directory, shared by any number of processes without a daemon:
//! an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`) that
//! skopeo and umoci read directly, extracted layer dirs under `layers/`,
//! metadata in SQLite (`meta.db`), in-flight writes under `tmp/`, and
//! `store.lock` (shared for work, exclusive for GC). See docs/store.md.

pub mod blob;
pub mod cache;
pub mod commit;
mod db;
pub mod error;
mod file_pipe;
mod fsutil;
pub mod gc;
pub mod image;
pub mod image_config;
mod index_json;
pub mod layer_dirs;
pub mod layout;
pub mod lock;
pub mod reference;
pub mod remote;
pub mod size;
pub mod transport;

pub use blob::{BlobInfo, BlobWriter};
pub use commit::{CacheRecord, CommittedLayer, LayerReport, LayerWriter};
pub use error::{Result, StoreError};
pub use image::{ImageRecord, ManifestKind};
pub use image_config::ImageConfig;
pub use layout::{default_root, Layout};
pub use lock::LockMode;
pub use reference::ImageRef;
pub use transport::Transport;

/// Digests come from cairn-layer: one digest type for the whole project.
pub use cairn_layer::digest::Digest;

use lock::StoreLock;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// An open store. Holds `store.lock` (shared, or exclusive for GC) for as
/// long as it lives; metadata goes through one SQLite connection.
pub struct Store {
    layout: Layout,
    conn: Mutex<Connection>,
    /// Held for the handle's life, except in [`LockMode::PerOperation`].
    lock: Option<StoreLock>,
    mode: LockMode,
}

/// An operation's hold on the store (see [`Store::lease`]): while any lease
/// lives, no GC runs; dropping it lets one in.
#[derive(Debug)]
pub struct Lease {
    _lock: Option<StoreLock>,
}

impl Store {
    /// Open (creating if needed) the store at `root` for ordinary work.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        Store::open_with(root, LockMode::Shared)
    }

    /// Open the store with `store.lock` held exclusively: no other process is
    /// in the store while this handle lives (GC needs this). Blocks until
    /// every other handle is gone, including this process's own: drop any
    /// shared `Store` first, or this waits forever.
    pub fn open_exclusive(root: impl AsRef<Path>) -> Result<Self> {
        Store::open_with(root, LockMode::Exclusive)
    }

    /// Open the store for a long-lived service: `store.lock` is held only
    /// while an operation holds a [`Store::lease`], so `prune` (another
    /// process) or [`Store::open_exclusive`] (this one) can collect garbage
    /// between operations. Everything that must outlive an operation is a GC
    /// root (tags, snapshots, sandboxes), so GC deletes nothing in use.
    pub fn open_per_operation(root: impl AsRef<Path>) -> Result<Self> {
        Store::open_with(root, LockMode::PerOperation)
    }

    /// Hold the store for one operation (a build, a pull, a sandbox create
    /// or commit): blocks while a GC runs, and keeps GC out until dropped.
    /// A no-op on handles that hold the lock for life.
    pub fn lease(&self) -> Result<Lease> {
        let lock = match self.mode {
            LockMode::PerOperation => Some(StoreLock::acquire(
                &self.layout.lock(),
                LockMode::PerOperation,
            )?),
            _ => None,
        };
        Ok(Lease { _lock: lock })
    }

    fn open_with(root: impl AsRef<Path>, mode: LockMode) -> Result<Self> {
        // Absolute: layer dirs under the root reach the sandbox helper, which
        // does not share our working directory (`--store ./s` must work).
        let root = std::path::absolute(root.as_ref())
            .map_err(StoreError::io("resolve store directory", root.as_ref()))?;
        let layout = Layout::new(root);
        // The lock comes first: a GC must not run between our mkdirs and our work.
        layout::ensure_dir(layout.root(), "create store directory")?;
        let lock = StoreLock::acquire(&layout.lock(), mode)?;
        layout.create()?;
        let conn = db::open(&layout.meta_db())?;
        let mut store = Store {
            layout,
            conn: Mutex::new(conn),
            lock: Some(lock),
            mode,
        };
        if !store.layout.index_json().exists() {
            store.write_index_json()?;
        }
        if mode == LockMode::PerOperation {
            store.lock = None;
        }
        Ok(store)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    pub fn lock_mode(&self) -> LockMode {
        self.mode
    }

    /// The metadata connection. A poisoned mutex only means another thread
    /// panicked mid-query; SQLite rolled its transaction back, so carry on.
    pub(crate) fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn db_err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Db {
            path: self.layout.meta_db(),
            source,
        }
    }
}

/// Seconds since the epoch, for `recorded_at` style columns (RFC 3339 text).
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
