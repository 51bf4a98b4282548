//! Threads that hold no lock while they are counted, so that a process
//! that forks (the sandbox's helper, `cairn_sandbox::spawn`) may still
//! count itself as single-threaded beside them.
//!
//! A fork copies only the calling thread; any lock another thread held at
//! that instant (a std `Mutex`, stdio, a logger) stays held forever in the
//! child. A thread that enters [`Quiet`] promises that, until the guard is
//! dropped, it does nothing but atomics, `park`/`unpark`, clock reads and
//! plain system calls (no allocation, no lock, no I/O through std's
//! buffered handles). The forking side opens a [`ForkWindow`]: from then
//! until it is dropped (after the fork), no quiet thread can leave its
//! quiet state, so the count it read stays true across the fork.
//!
//! It lives here, below both the store (whose commit starts an early
//! `syncfs` thread) and the sandbox (which decides between fork and exec).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

/// Low 32 bits: quiet threads; high 32 bits: fork windows open.
static STATE: AtomicU64 = AtomicU64::new(0);
const ONE_QUIET: u64 = 1;
const ONE_WINDOW: u64 = 1 << 32;
const QUIET_MASK: u64 = ONE_WINDOW - 1;

/// This thread is quiet (see the module doc) while the guard lives. Not
/// `Send`: it is entered and left on one thread.
pub struct Quiet {
    _not_send: PhantomData<*const ()>,
}

impl Quiet {
    /// Enter the quiet state; call on the thread itself, once it runs (its
    /// start-up code allocates).
    pub fn enter() -> Quiet {
        STATE.fetch_add(ONE_QUIET, Ordering::SeqCst);
        Quiet {
            _not_send: PhantomData,
        }
    }
}

impl Drop for Quiet {
    /// Leave, but never while a fork window is open: the forking thread
    /// counted this one as quiet.
    fn drop(&mut self) {
        loop {
            let s = STATE.load(Ordering::SeqCst);
            if s >= ONE_WINDOW {
                // sched_yield: a plain system call.
                std::thread::yield_now();
                continue;
            }
            let left = STATE.compare_exchange(s, s - ONE_QUIET, Ordering::SeqCst, Ordering::SeqCst);
            if left.is_ok() {
                return;
            }
        }
    }
}

/// Held by a thread about to fork, from before it counts the process's
/// threads until the fork is done.
pub struct ForkWindow {
    quiet: usize,
}

impl ForkWindow {
    pub fn open() -> ForkWindow {
        let s = STATE.fetch_add(ONE_WINDOW, Ordering::SeqCst);
        ForkWindow {
            quiet: (s & QUIET_MASK) as usize,
        }
    }

    /// The threads that were quiet when the window opened; none of them
    /// leaves its quiet state before the window closes.
    pub fn quiet_threads(&self) -> usize {
        self.quiet
    }
}

impl Drop for ForkWindow {
    fn drop(&mut self) {
        STATE.fetch_sub(ONE_WINDOW, Ordering::SeqCst);
    }
}

/// How many threads are quiet now (for tests and diagnostics).
pub fn quiet_threads() -> usize {
    (STATE.load(Ordering::SeqCst) & QUIET_MASK) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn a_quiet_thread_does_not_leave_while_a_window_is_open() {
        // Other tests of this crate never enter Quiet, so the counts here
        // are this test's own.
        let window = ForkWindow::open();
        let left = Arc::new(AtomicBool::new(false));
        let entered = Arc::new(AtomicBool::new(false));
        let (flag, mark) = (Arc::clone(&left), Arc::clone(&entered));
        let t = std::thread::spawn(move || {
            let quiet = Quiet::enter();
            mark.store(true, Ordering::SeqCst);
            drop(quiet);
            flag.store(true, Ordering::SeqCst);
        });
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!left.load(Ordering::SeqCst), "left inside the window");
        drop(window);
        t.join().unwrap();
        assert!(left.load(Ordering::SeqCst));
    }
}
