//! Sandboxes of this process whose exec has ended but whose mount is still
//! going away.
//!
//! An exec returns when the command has ended; the kernel then tears the
//! sandbox's namespaces down (the overlay over its upper dir included)
//! while the helper is reaped in the background. The sandbox's exec lock is
//! held until then, so the next exec, commit or file operation cannot
//! mount or read that upper dir beside the dying mount. Only the removal
//! of such a sandbox by this same process need not wait: nothing runs in
//! it any more, and deleting its dirs under the dying mount is harmless.

use nix::fcntl::Flock;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Dirs of the sandboxes whose teardown a [`Teardown`] of this process holds.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A sandbox's exec lock, held until its helper has been reaped.
pub(crate) struct Teardown {
    dir: PathBuf,
    _lock: Flock<std::fs::File>,
}

impl Teardown {
    pub(crate) fn new(dir: PathBuf, lock: Flock<std::fs::File>) -> Teardown {
        pending().push(dir.clone());
        Teardown { dir, _lock: lock }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        // Forgotten first, then (as the field drops) unlocked: whoever sees
        // the lock taken and the dir not pending waits for the lock.
        let mut pending = pending();
        if let Some(i) = pending.iter().position(|d| d == &self.dir) {
            pending.swap_remove(i);
        }
    }
}

/// Whether a [`Teardown`] of this process holds `dir`'s lock.
pub(crate) fn is_pending(dir: &Path) -> bool {
    pending().iter().any(|d| d == dir)
}

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // Poisoned only by a panic while holding it; the list is still sound.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}
