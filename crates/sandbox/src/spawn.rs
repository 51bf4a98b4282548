//! How the caller starts its helper: a fork of itself, or an exec of the
//! helper binary.
//!
//! Exec is always possible, but the fresh process pays the dynamic loader,
//! page faults over a 25 MB binary and the runtime's start-up: a few ms of
//! CPU per sandbox.
//! A fork of a *single-threaded* caller is an ordinary process that may do
//! anything, including `unshare(CLONE_NEWUSER)`, so the helper can be the
//! forked copy itself, given its request in memory. A multithreaded caller
//! (a platform service) must not: another thread may hold a lock the child
//! would need, and the kernel refuses it a user namespace anyway. Then, or
//! when `CAIRN_SANDBOX_SPAWN=exec`, or for a launcher of another binary
//! (`Launcher::with_helper`), the helper is exec'd as before.

/// `CAIRN_SANDBOX_SPAWN`: `exec` forces an exec'd helper; `fork` (the
/// default) forks when it is safe.
pub const SPAWN_ENV: &str = "CAIRN_SANDBOX_SPAWN";

use cairn_layer::quiet::ForkWindow;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether the helper may be a fork of this process now: no thread runs
/// here but the calling one, the reaper (which is only ever blocked in
/// `recv` or `waitpid`, holding no lock, see `reap.rs`) and threads in
/// [`cairn_layer::quiet::Quiet`] (the store's early `syncfs`). `Some`: fork,
/// holding the window until the fork is done (no quiet thread leaves its
/// quiet state before).
pub(crate) fn fork_window() -> Option<ForkWindow> {
    if std::env::var_os(SPAWN_ENV).is_some_and(|v| v == "exec") {
        return None;
    }
    let window = ForkWindow::open();
    let expected = 1 + crate::reap::threads() + window.quiet_threads();
    if thread_count() != Some(expected) {
        return None;
    }
    Some(window)
}

/// Count a helper started as a fork (not the store's other forks, such as
/// the trash reclaimer).
pub(crate) fn note_forked_helper() {
    FORKED.fetch_add(1, Ordering::Relaxed);
}

/// Helpers started as a fork of this process so far (for tests: a
/// thread beside the caller must not silently turn forks into execs).
pub fn forked_helpers() -> usize {
    FORKED.load(Ordering::Relaxed)
}

static FORKED: AtomicUsize = AtomicUsize::new(0);

/// The number of threads of this process (`num_threads` of /proc/self/stat).
/// One `read` into a buffer the line fits in (a command name is at most 64
/// bytes, the other 51 fields numbers): `read_to_string` sizes its buffer by
/// the file's length, which procfs gives as 0, and took five reads.
fn thread_count() -> Option<usize> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open("/proc/self/stat")
        .ok()?
        .read(&mut buf)
        .ok()?;
    num_threads(std::str::from_utf8(buf.get(..n)?).ok()?)
}

/// `num_threads` from the text of a `/proc/PID/stat` file.
fn num_threads(stat: &str) -> Option<usize> {
    // Fields after the command name (which may hold spaces and parens):
    // state is field 3, num_threads field 20.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(17)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_num_threads_past_a_command_name_with_parens() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 98 0 0 0 0 0 0 0 20 0 7 0 123 \
                    4096 100 18446744073709551615";
        assert_eq!(num_threads(stat), Some(7));
        assert_eq!(num_threads("4242 (truncated"), None);
        assert_eq!(num_threads("4242 (x) S 1 2"), None);
    }

    #[test]
    fn counts_a_thread_that_is_alive() {
        // The test harness runs other tests on other threads, so only a
        // lower bound is stable: this thread and the one spawned here.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(thread_count().is_some_and(|n| n >= 2));
        drop(tx);
        let _ = t.join();
    }
}
