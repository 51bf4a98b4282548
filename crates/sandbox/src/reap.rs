//! Waiting for helpers in the background.
//!
//! A run's outcome is known when PID 1 reports the command's exit; the
//! helper's own exit comes later, after the kernel has torn the sandbox's
//! namespaces down (the overlay unmounted, the user namespace freed). The
//! caller need not wait for that: the helper goes to one long-lived reaper
//! thread per process, which waits for it (so no zombie is left) and then
//! drops what was held for it (a sandbox's exec lock, so the next exec of
//! that sandbox cannot mount its upper dir while the old mount lives).
//!
//! One thread that never exits, rather than a thread per run: a thread
//! that is only ever blocked in `recv` or `waitpid` holds no lock a forked
//! child could need, which lets `launch.rs` keep forking its helpers (see
//! `spawn.rs`) while the reaper exists.

use std::process::Child;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

/// A helper to wait for, and what to drop once it is gone.
struct Pending {
    child: Child,
    hold: Option<Box<dyn Send>>,
}

/// The reaper's queue; `None` when its thread could not be started.
static REAPER: OnceLock<Option<Mutex<Sender<Pending>>>> = OnceLock::new();

/// Wait for `child` on the reaper thread, then drop `hold`. Waits here
/// instead if there is no reaper thread.
pub(crate) fn reap_later(child: Child, hold: Option<Box<dyn Send>>) {
    let queue = REAPER.get_or_init(start);
    let pending = Pending { child, hold };
    let unsent = match queue {
        Some(tx) => match tx.lock() {
            Ok(tx) => tx.send(pending).err().map(|e| e.0),
            Err(_) => Some(pending),
        },
        None => Some(pending),
    };
    if let Some(mut p) = unsent {
        // Reaped here: blocking, but never a zombie.
        let _ = p.child.wait();
    }
}

/// How many threads of this process are the reaper's (0 or 1).
pub(crate) fn threads() -> usize {
    matches!(REAPER.get(), Some(Some(_))) as usize
}

fn start() -> Option<Mutex<Sender<Pending>>> {
    let (tx, rx) = channel::<Pending>();
    let spawned = std::thread::Builder::new()
        .name("cairn-reaper".into())
        .spawn(move || {
            for mut pending in rx {
                // An error means it was already reaped: nothing to wait for.
                let _ = pending.child.wait();
                drop(pending.hold);
            }
        });
    spawned.ok().map(|_| Mutex::new(tx))
}
