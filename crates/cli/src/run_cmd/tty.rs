//! `run -t`: a pseudo-terminal for the command. Its slave side is the
//! command's stdin, stdout and stderr and its controlling terminal (the
//! sandbox makes it so: `cairn_sandbox` `console.rs`); this process copies
//! the master side to its own stdout and, with `-i`, its stdin to the
//! master, with our terminal (when stdin is one) in raw mode so keys pass
//! through as typed. The pty starts with our terminal's size and follows it:
//! on SIGWINCH the new size is copied over, and the kernel tells the
//! command's foreground process group.

use crate::exit::CliError;
use cairn::sandbox::RunStdio;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;

pub struct Tty {
    /// Kept open until the command is done, so the copiers' clones stay valid.
    _master: File,
    slave: Option<OwnedFd>,
    output: Option<JoinHandle<()>>,
    saved: Option<libc::termios>,
}

impl Tty {
    /// Open a pty sized like our terminal and start copying its output.
    pub fn open(interactive: bool) -> Result<Tty, CliError> {
        let (mut master_fd, mut slave_fd) = (-1, -1);
        let mut size = window_size();
        // SAFETY: openpty writes two fds into the out-parameters; the name
        // and termios pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                size.as_mut().map_or(std::ptr::null_mut(), |w| w as *mut _),
            )
        };
        if rc != 0 {
            return Err(CliError::failed(format!(
                "opening a pseudo-terminal for -t: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: both fds were just opened by openpty and are owned here alone.
        let (master, slave) =
            unsafe { (File::from_raw_fd(master_fd), OwnedFd::from_raw_fd(slave_fd)) };
        let saved = if interactive { raw_stdin() } else { None };
        if let Some(from) = size.and(caller_terminal()) {
            let to = master
                .try_clone()
                .map_err(|e| CliError::io("sharing the pseudo-terminal", e))?;
            follow_window_size(from, to);
        }
        let mut reader = master
            .try_clone()
            .map_err(|e| CliError::io("sharing the pseudo-terminal", e))?;
        let output = std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            let mut out = std::io::stdout();
            // Ends with EIO once the last holder of the slave side is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        });
        if interactive {
            let mut writer = master
                .try_clone()
                .map_err(|e| CliError::io("sharing the pseudo-terminal", e))?;
            // Detached: it ends with our stdin or at exit; nothing waits on
            // it, and an error only means the command is gone.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut writer);
            });
        }
        Ok(Tty {
            _master: master,
            slave: Some(slave),
            output: Some(output),
            saved,
        })
    }

    /// The command's stdio: the slave side on all three.
    pub fn stdio(&self) -> Result<RunStdio, CliError> {
        let slave = self
            .slave
            .as_ref()
            .ok_or_else(|| CliError::failed("the pseudo-terminal is already handed out"))?;
        let dup = || {
            slave
                .try_clone()
                .map(Stdio::from)
                .map_err(|e| CliError::io("sharing the pseudo-terminal", e))
        };
        Ok(RunStdio {
            stdin: Some(dup()?),
            stdout: Some(dup()?),
            stderr: Some(dup()?),
            terminal: true,
        })
    }

    /// After the command: close our slave copy, drain the output, restore
    /// our terminal.
    pub fn finish(mut self) {
        self.slave.take();
        if let Some(h) = self.output.take() {
            // A panicked copier has nothing left to flush.
            let _ = h.join();
        }
        if let Some(t) = self.saved.take() {
            // SAFETY: restoring the attributes read from the same fd.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// The caller's terminal: the first of stdout, stdin, stderr that is one.
fn caller_terminal() -> Option<i32> {
    // SAFETY: isatty only inspects the descriptor.
    [1, 0, 2]
        .into_iter()
        .find(|fd| unsafe { libc::isatty(*fd) } == 1)
}

/// Our terminal's size, when we have a terminal.
fn window_size() -> Option<libc::winsize> {
    size_of(caller_terminal()?)
}

fn size_of(fd: i32) -> Option<libc::winsize> {
    // SAFETY: all-zero is a valid winsize.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into `w`.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) };
    (rc == 0).then_some(w)
}

/// Write end of the pipe the SIGWINCH handler wakes the resizer through.
static WINCH_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_PIPE.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; a full pipe already holds a
    // wake-up, so a lost byte loses nothing.
    unsafe { libc::write(fd, b"w".as_ptr().cast(), 1) };
}

/// Copy `from`'s window size to the pty `to` whenever we get SIGWINCH.
/// (A thread waits on a pipe the handler writes to: the handler itself may
/// only make async-signal-safe calls.) Best effort: without the pipe or the
/// handler the command keeps its first size.
fn follow_window_size(from: i32, to: File) {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return;
    }
    // Only the write end needs to be non-blocking (a handler must not block).
    // SAFETY: fcntl on the fd just made.
    unsafe { libc::fcntl(fds[0], libc::F_SETFL, 0) };
    WINCH_PIPE.store(fds[1], Ordering::Relaxed);
    // SAFETY: the read end was just opened and is owned by the thread alone.
    let mut wake = unsafe { File::from_raw_fd(fds[0]) };
    std::thread::spawn(move || {
        let mut byte = [0u8; 64];
        while matches!(wake.read(&mut byte), Ok(n) if n > 0) {
            if let Some(w) = size_of(from) {
                // SAFETY: TIOCSWINSZ reads a winsize; `to` is the pty master.
                unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &w) };
            }
        }
    });
    // SAFETY: installing a handler that only calls write(2); SA_RESTART
    // keeps our own blocking reads from failing with EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_winch as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGWINCH, &action, std::ptr::null_mut());
    }
}

/// Put stdin in raw mode when it is a terminal; returns what to restore.
fn raw_stdin() -> Option<libc::termios> {
    // SAFETY: tcgetattr fills the termios; cfmakeraw edits a copy.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return None;
        }
        let saved = t;
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(0, libc::TCSANOW, &t);
        Some(saved)
    }
}
