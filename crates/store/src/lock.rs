//! `store.lock`: every process holds it shared while it works; GC holds it
//! exclusive, so it never sweeps a blob another process is about to name.
//!
//! A long-lived handle (a service) holds it only per operation: each
//! [`crate::Store::lease`] takes it shared on a descriptor of its own
//! (flock locks belong to open files, so leases conflict with a GC in the
//! same process too) and lets go when the operation ends. Between
//! operations a GC may run; what lives across operations (sandboxes,
//! snapshots, tags) is kept by GC roots, not by the lock.

use crate::error::{Result, StoreError};
use rustix::fs::{flock, FlockOperation};
use std::fs::{File, OpenOptions};
use std::path::Path;

/// How a store handle holds `store.lock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Ordinary work: many processes at once.
    Shared,
    /// Garbage collection: no one else in the store.
    Exclusive,
    /// A long-lived handle: shared only while an operation holds a
    /// [`crate::Store::lease`], so GC can run between operations.
    PerOperation,
}

/// A held flock; released when dropped (closing the file releases it).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    mode: LockMode,
}

impl StoreLock {
    /// Block until the lock is held in `mode`.
    pub fn acquire(path: &Path, mode: LockMode) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(StoreError::io("open lock file", path))?;
        let op = match mode {
            LockMode::Shared | LockMode::PerOperation => FlockOperation::LockShared,
            LockMode::Exclusive => FlockOperation::LockExclusive,
        };
        flock(&file, op).map_err(|e| StoreError::Io {
            action: "lock",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(StoreLock { _file: file, mode })
    }

    pub fn mode(&self) -> LockMode {
        self.mode
    }
}
