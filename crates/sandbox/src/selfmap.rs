//! An early helper's own ID maps, rootless (`helper.rs::serve_early`).
//!
//! A subordinate range is written by `newuidmap`/`newgidmap`, setuid
//! programs run in the caller's user namespace for the helper's pid once
//! the helper has unshared. Run by the caller, their start blocks it (std
//! spawns with vfork: the caller waits for each setuid exec, ~0.8 ms of
//! the ~1.4 ms) just when it should be creating the sandbox. So the early
//! helper runs them for itself: before its `unshare` it forks one waiter
//! per tool (still in the caller's namespaces, with the caller's rights and
//! nothing more), unshares, lets them go, and waits for both. The caller
//! only forks the helper and later reads its `U`, which then means
//! "unshared and mapped".

use crate::idmap::{IdMapping, IdRange};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

/// The byte that lets a waiter exec its tool.
const GO: u8 = b'G';

/// Two forked waiters, each about to exec one map tool.
pub(crate) struct MapTools {
    waiters: Vec<Waiter>,
    /// The write end the waiters wait on; closed unwritten, they exit.
    go: Option<File>,
}

struct Waiter {
    tool: &'static str,
    pid: Pid,
    stderr: File,
}

/// Fork the waiters for the maps of `m` for this process (not yet
/// unshared). Each waits for [`MapTools::run`]; if this process dies or
/// gives up first they exit without running anything.
pub(crate) fn prepare(m: &IdMapping) -> Result<MapTools, String> {
    let pid = std::process::id();
    let (go_r, go_w) = pipe()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("opening /dev/null: {e}"))?;
    let mut waiters = Vec::new();
    let mut go = Some(File::from(go_w));
    for (tool, ranges) in [("newuidmap", &m.map.uids), ("newgidmap", &m.map.gids)] {
        let argv = tool_argv(tool, pid, ranges)?;
        let (err_r, err_w) = pipe()?;
        // SAFETY: the helper is single-threaded (a fork of a single-threaded
        // caller); the child only reads, dup2s, execs and _exits.
        match unsafe { fork() } {
            Err(e) => {
                drop(go.take());
                reap(&waiters);
                return Err(format!("fork: {e}"));
            }
            Ok(ForkResult::Child) => {
                drop(go.take());
                waiter(&go_r, &null, &err_w, &argv)
            }
            Ok(ForkResult::Parent { child }) => waiters.push(Waiter {
                tool,
                pid: child,
                stderr: File::from(err_r),
            }),
        }
    }
    Ok(MapTools { waiters, go })
}

impl MapTools {
    /// This process has unshared: let both tools run, wait for them. A
    /// failure is the tool's name and what it said.
    pub(crate) fn run(mut self) -> Result<(), String> {
        let sent = match self.go.take() {
            Some(mut go) => go.write_all(&[GO; 2]),
            None => Ok(()),
        };
        let mut failure = None;
        for w in &mut self.waiters {
            let status = loop {
                match waitpid(w.pid, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            if !matches!(status, Ok(WaitStatus::Exited(_, 0))) && failure.is_none() {
                let mut said = String::new();
                let _ = w.stderr.read_to_string(&mut said);
                // The tools name themselves in their messages.
                let said = said.trim();
                let said = match said.starts_with(w.tool) {
                    true => said.to_string(),
                    false => format!("{}: {said}", w.tool),
                };
                failure = Some(format!("{said} (check /etc/subuid and /etc/subgid)"));
            }
        }
        self.waiters.clear();
        if let Err(e) = sent {
            return Err(format!("starting the map tools: {e}"));
        }
        failure.map_or(Ok(()), Err)
    }
}

impl Drop for MapTools {
    /// Not run: the waiters see EOF on `go` and exit; reap them.
    fn drop(&mut self) {
        drop(self.go.take());
        reap(&self.waiters);
    }
}

fn reap(waiters: &[Waiter]) {
    for w in waiters {
        while let Err(nix::errno::Errno::EINTR) = waitpid(w.pid, None) {}
    }
}

/// `TOOL PID CONTAINER HOST LEN...` as C strings.
fn tool_argv(tool: &str, pid: u32, ranges: &[IdRange]) -> Result<Vec<CString>, String> {
    let mut args = vec![tool.to_string(), pid.to_string()];
    for r in ranges {
        args.extend([r.container, r.host, r.len].map(|n| n.to_string()));
    }
    args.into_iter()
        .map(|a| CString::new(a).map_err(|_| "NUL in a map tool argument".to_string()))
        .collect()
}

/// The waiter: wait for the go byte, then exec the tool with stdin and
/// stdout on /dev/null and stderr into the pipe. Never returns.
fn waiter(go: &OwnedFd, null: &File, err: &OwnedFd, argv: &[CString]) -> ! {
    let mut byte = [0u8; 1];
    // SAFETY: reads, dup2s and exec on descriptors this process owns;
    // _exit without running the caller's exit handlers.
    unsafe {
        let n = libc::read(go.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
        if n != 1 || byte[0] != GO {
            libc::_exit(125); // the helper gave up before unsharing
        }
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        libc::execvp(ptrs[0], ptrs.as_ptr());
        let msg = b"cannot be run (is the uidmap package installed?)\n";
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}
