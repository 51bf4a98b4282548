//! A removed sandbox's directory: moved aside at once, reclaimed after.
//!
//! Removing a sandbox is ~15 unlinks and ~6 rmdirs (upper, work with the
//! overlay's `work/incompat/volatile`, merged, the /etc files, the record,
//! the lock), each a journalled metadata change that waits on a busy disk;
//! rootless, the overlay's `work/work` (mode 000) even needs a helper task
//! in the user namespace. None of it has to happen before `run --rm`
//! returns. So [`SandboxManager::remove`](super::SandboxManager::remove)
//! renames `sandboxes/<id>` to `tmp/trash-sandbox-<id>` (one rename in the
//! same filesystem) and hands the trash to [`reclaim`].
//!
//! The contract: when `remove` returns, the sandbox is gone from listings,
//! its id and name are free and its GC root is dropped; its bytes are
//! reclaimed right after. A single-threaded caller (the CLI) reclaims in a
//! detached child, so the command's exit does not wait for the disk;
//! a multithreaded one (a service, a test harness) cannot fork safely and
//! reclaims inline, as before. A crash (or a reclaim that fails) leaves
//! only `tmp/trash-sandbox-*`: the next `sandbox ls`/`prune` sweep
//! reclaims leftovers ([`reclaim_leftovers`]: `ls` through a detached
//! reclaimer too, `prune` inline), and GC clears all of `tmp/` anyway. The reclaimer holds `store.lock` shared while it works, so a GC
//! never clears `tmp/` under it.

use cairn_store::layer_dirs::TreeRemover;
use cairn_store::lock::{LockMode, StoreLock};
use cairn_store::Store;
use std::path::{Path, PathBuf};

/// Name prefix of removed sandboxes' dirs in the store's `tmp/`.
const PREFIX: &str = "trash-sandbox-";

/// Where the dir of removed sandbox `id` waits to be reclaimed.
pub(crate) fn path(store: &Store, id: &str) -> PathBuf {
    store.layout().tmp().join(format!("{PREFIX}{id}"))
}

/// Move `dir` to `trash`. `Ok(false)`: there was no `dir`.
pub(crate) fn move_aside(dir: &Path, trash: &Path) -> std::io::Result<bool> {
    match std::fs::rename(dir, trash) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        // A leftover trash of the same id (a removal that crashed before
        // the reclaim, then a dir of that id again): reclaim it, then move.
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            let _ = std::fs::remove_dir_all(trash);
            std::fs::rename(dir, trash).map(|()| true)
        }
        Err(e) => Err(e),
    }
}

/// Delete `trash` through `remover`: in a detached child when this
/// process may fork (see `spawn.rs`), else here. Errors of a detached
/// reclaim are dropped (the sweep and GC retry); inline ones are returned.
pub(crate) fn reclaim(
    store: &Store,
    remover: &dyn TreeRemover,
    trash: &Path,
) -> Result<(), String> {
    if hand_off(store, remover, &[trash.to_path_buf()]) {
        return Ok(());
    }
    remove(remover, trash)
}

/// Give `trees` to a detached reclaimer; false when this process may not
/// fork (a multithreaded caller), `CAIRN_RECLAIM_INLINE` is set, or the
/// fork failed: the caller then deletes them itself.
fn hand_off(store: &Store, remover: &dyn TreeRemover, trees: &[PathBuf]) -> bool {
    if std::env::var_os(INLINE_ENV).is_some() {
        return false;
    }
    // Held until the fork is done, as for a forked helper (spawn.rs).
    let Some(window) = crate::spawn::fork_window() else {
        return false;
    };
    let forked = detached(store.layout().lock().as_path(), remover, trees);
    drop(window);
    forked.is_some()
}

/// Delete `trash`: with this process's own rights when it can, after
/// giving owner access back to dirs it owns but cannot read (the overlay's
/// `work/work` is made mode 000: rootless, the caller owns it yet cannot
/// list it), and only then through `remover`'s user-namespace task (a
/// helper with `newuidmap`: ~10-25 ms of CPU that a busy machine's next
/// `run` would share).
fn remove(remover: &dyn TreeRemover, trash: &Path) -> Result<(), String> {
    if std::fs::remove_dir_all(trash).is_ok() {
        return Ok(());
    }
    open_up_own_dirs(trash);
    remover.remove_tree(trash)
}

/// chmod u+rwx every dir under `top` (itself included) that this process
/// owns and lacks them on. Not a boundary: only dirs already this user's
/// change, symlinks are not followed (lstat), and nothing runs in the
/// sandbox any more to swap a dir for a symlink in between. A loop, not
/// recursion: the sandbox chose the tree's depth.
fn open_up_own_dirs(top: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let mut todo = vec![top.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.mode();
        if mode & 0o700 != 0o700 && meta.uid() == me {
            let perms = std::fs::Permissions::from_mode((mode | 0o700) & 0o7777);
            let _ = std::fs::set_permissions(&dir, perms);
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            todo.extend(entries.flatten().map(|e| e.path()));
        }
    }
}

/// `CAIRN_RECLAIM_INLINE` (any value): reclaim before `remove` returns, even in a
/// process that could fork (for measuring, and for callers that want the
/// bytes back first).
pub const INLINE_ENV: &str = "CAIRN_RECLAIM_INLINE";

/// Fork a reclaimer that takes `store.lock` shared, removes `trees` and
/// exits; this process's reaper thread waits for it (the CLI exits first:
/// then init reaps it). None if the fork failed.
fn detached(lock: &Path, remover: &dyn TreeRemover, trees: &[PathBuf]) -> Option<()> {
    // SAFETY: only the calling thread, the idle reaper and quiet threads
    // run here (the caller holds `spawn::fork_window`); glibc's fork leaves
    // malloc usable in the child.
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Parent { child } => {
            crate::reap::reap_pid_later(child);
            Some(())
        }
        nix::unistd::ForkResult::Child => {
            reclaimer(lock, remover, trees);
            // SAFETY: _exit runs no destructors or atexit handlers (the
            // SQLite handles and stdio buffers are the parent's).
            unsafe { libc::_exit(0) }
        }
    }
}

/// The reclaimer's body: let go of the caller's stdio and descriptors (a
/// `$(cairn run --rm ...)` must see EOF when the CLI exits), hold the
/// store lock shared of its own, remove the trash.
fn reclaimer(lock: &Path, remover: &dyn TreeRemover, trees: &[PathBuf]) {
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // SAFETY: close every inherited descriptor but stdio: the reclaimer
    // uses none of them (SQLite's are closed without SQLite, which this
    // process never calls again).
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let _lock = StoreLock::acquire(lock, LockMode::Shared);
    for trash in trees {
        let _ = remove(remover, trash);
    }
}

/// Reclaim what removals left in `tmp/` (a crash between the move and the
/// reclaim, or a reclaim that failed). Best effort: a reclaimer may be
/// deleting the same tree right now; whatever is left GC removes. A
/// listing is a read: it hands the leftovers to a detached reclaimer like
/// `remove` does, and deletes them itself only when it cannot fork, or
/// under GC's exclusive lock (`prune`), which a reclaimer would wait for.
pub(crate) fn reclaim_leftovers(store: &Store, remover: &dyn TreeRemover) {
    let Ok(entries) = std::fs::read_dir(store.layout().tmp()) else {
        return;
    };
    let leftovers: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .map(|e| e.path())
        .collect();
    if leftovers.is_empty() {
        return;
    }
    for path in &leftovers {
        tracing::info!(path = %path.display(), "reclaiming a removed sandbox's dir");
    }
    if store.lock_mode() != LockMode::Exclusive && hand_off(store, remover, &leftovers) {
        return;
    }
    for path in &leftovers {
        let _ = remove(remover, path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn own_unreadable_dirs_are_opened_up_and_symlinks_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let trash = tmp.path().join("trash");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(trash.join("work/work/deeper")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, trash.join("link")).unwrap();
        for p in [&outside, &trash.join("work/work/deeper")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        std::fs::set_permissions(
            trash.join("work/work"),
            std::fs::Permissions::from_mode(0o050),
        )
        .unwrap();
        open_up_own_dirs(&trash);
        assert_eq!(mode(&trash.join("work/work")), 0o750);
        assert_eq!(mode(&trash.join("work/work/deeper")), 0o700);
        // The symlink's target is not the trash's: left as it was.
        assert_eq!(mode(&outside), 0o000);
        remove(&cairn_store::layer_dirs::PlainRemover, &trash).unwrap();
        assert!(!trash.exists() && outside.exists());
    }

    #[test]
    fn moving_aside_a_missing_dir_is_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandboxes-id");
        let aside = tmp.path().join("trash-sandbox-id");
        assert!(!move_aside(&dir, &aside).unwrap());
        std::fs::create_dir_all(dir.join("upper")).unwrap();
        // A leftover of the same name is replaced.
        std::fs::create_dir_all(aside.join("old")).unwrap();
        assert!(move_aside(&dir, &aside).unwrap());
        assert!(aside.join("upper").is_dir() && !aside.join("old").exists() && !dir.exists());
    }
}
