//! A terminal as the command's controlling terminal (`run -t`, OCI's
//! `process.terminal`).
//!
//! The caller opens the pseudo-terminal and hands its slave side over as the
//! command's stdin, stdout and stderr. Inside the sandbox, as runc does with
//! its console: PID 1 binds that slave onto `/dev/console`, so the terminal
//! has a name in the container (`tty` prints `/dev/console`), and the
//! command starts a session of its own (setsid) and takes the terminal as its
//! controlling one (TIOCSCTTY): it is then the terminal's foreground process
//! group, ^C and ^Z reach it, a shell can do job control, and a resize of
//! the terminal sends it SIGWINCH.

use nix::mount::{mount, MsFlags};
use std::path::Path;

/// Bind the terminal on our stdin onto `console` (the rootfs's
/// `/dev/console`, on the sandbox's own /dev tmpfs). PID 1 does it before
/// the pivot, while the caller's /dev/pts is still in view: the bind takes
/// the terminal by its path there (an fd from the caller's mount namespace
/// cannot be bound), after checking that path is the very terminal on stdin.
pub(crate) fn bind_console(console: &Path) -> Result<(), String> {
    let slave = std::fs::read_link("/proc/self/fd/0")
        .map_err(|e| format!("-t: finding the terminal's name: {e}"))?;
    let on_stdin =
        nix::sys::stat::fstat(std::io::stdin()).map_err(|e| format!("-t: stdin: {e}"))?;
    let named = nix::sys::stat::stat(&slave).ok();
    let same = named.is_some_and(|n| {
        n.st_rdev == on_stdin.st_rdev && n.st_ino == on_stdin.st_ino && n.st_dev == on_stdin.st_dev
    });
    if on_stdin.st_mode & libc::S_IFMT != libc::S_IFCHR || !same {
        return Err(format!(
            "-t: the command's stdin is not a terminal in view ({})",
            slave.display()
        ));
    }
    std::fs::write(console, b"").map_err(|e| format!("creating {}: {e}", console.display()))?;
    mount(
        Some(&slave),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "binding the terminal {} onto /dev/console: {e}",
            slave.display()
        )
    })
}

/// Start a session and take the terminal on stdin as its controlling
/// terminal (the command's process, before it drops privileges).
pub(crate) fn take_terminal() -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("-t: setsid: {e}"))?;
    // SAFETY: TIOCSCTTY takes an integer (0: do not steal the terminal
    // from another session; nothing else has it as its controlling one).
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("-t: making the terminal the controlling one: {e}"));
    }
    Ok(())
}
