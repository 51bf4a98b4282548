//! Waiting for helpers (and detached reclaimers) in the background.
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

/// A helper (or a forked reclaimer) to wait for, and what to drop once it
/// is gone.
struct Pending {
    child: Waitable,
    hold: Option<Box<dyn Send>>,
}

/// A child of this process, spawned through `std::process` or forked.
enum Waitable {
    Child(Child),
    Pid(nix::unistd::Pid),
}

impl Waitable {
    /// Block until it has exited; an error means it was already reaped.
    fn wait(&mut self) {
        match self {
            Waitable::Child(c) => {
                let _ = c.wait();
            }
            Waitable::Pid(pid) => {
                let _ = nix::sys::wait::waitpid(*pid, None);
            }
        }
    }
}

/// The reaper's queue; `None` when its thread could not be started.
static REAPER: OnceLock<Option<Mutex<Sender<Pending>>>> = OnceLock::new();

/// Wait for `child` on the reaper thread, then drop `hold`. Waits here
/// instead if there is no reaper thread.
pub(crate) fn reap_later(child: Child, hold: Option<Box<dyn Send>>) {
    queue(Pending {
        child: Waitable::Child(child),
        hold,
    });
}

/// Wait for the forked child `pid` on the reaper thread (a detached
/// reclaimer, `manager/trash.rs`), or here if there is none.
pub(crate) fn reap_pid_later(pid: nix::unistd::Pid) {
    queue(Pending {
        child: Waitable::Pid(pid),
        hold: None,
    });
}

/// Declare that this process exits soon after its runs (a one-shot CLI
/// command): its helpers and reclaimers are then not waited for by a
/// reaper thread (whose start, ~0.1 ms, would come between the command's
/// end and the caller's next step); they go to whoever inherits them at
/// this process's exit (init, or a subreaper), and what is held for them
/// (a sandbox's exec lock) is held until then. A process that goes on
/// running sandboxes (a build, a service) must not call this.
pub fn leave_to_exit() {
    LEAVE_TO_EXIT.store(true, std::sync::atomic::Ordering::Relaxed);
}

static LEAVE_TO_EXIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What [`leave_to_exit`] keeps until the exit: statics are never dropped,
/// so the holds are released by the kernel as the process ends.
static LEFT: Mutex<Vec<Pending>> = Mutex::new(Vec::new());

fn queue(pending: Pending) {
    if LEAVE_TO_EXIT.load(std::sync::atomic::Ordering::Relaxed) {
        let mut left = LEFT.lock().unwrap_or_else(|e| e.into_inner());
        left.push(pending);
        return;
    }
    let queue = REAPER.get_or_init(start);
    let unsent = match queue {
        Some(tx) => match tx.lock() {
            Ok(tx) => tx.send(pending).err().map(|e| e.0),
            Err(_) => Some(pending),
        },
        None => Some(pending),
    };
    if let Some(mut p) = unsent {
        // Reaped here: blocking, but never a zombie.
        p.child.wait();
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
                pending.child.wait();
                drop(pending.hold);
            }
        });
    spawned.ok().map(|_| Mutex::new(tx))
}
