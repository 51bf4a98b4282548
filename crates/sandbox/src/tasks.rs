//! Filesystem tasks done as root of a user namespace (see [`crate::Task`]).
//!
//! Rootless, files the sandbox created for container IDs other than 0 belong
//! to the caller's subordinate IDs: the caller cannot read, change or delete
//! them from outside. Inside a user namespace with the same mapping it is
//! their root and can. As real root the mapping is the identity and the same
//! code runs.

use crate::protocol::Task;
use std::path::Path;

/// Do `task`; the value goes back to the caller as JSON.
pub fn perform(task: Task) -> Result<serde_json::Value, String> {
    match task {
        Task::RemoveTree(path) => remove_tree(&path).map(|()| serde_json::Value::Null),
    }
}

fn remove_tree(path: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}
