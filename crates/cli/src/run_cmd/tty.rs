//! `run -t`: a pseudo-terminal for the command. Its slave side is the
//! command's stdout and stderr (and stdin); this process copies the master
//! side to its own stdout and, with `-i`, its stdin to the master, with our
//! terminal (when stdin is one) in raw mode so keys pass through as typed.

use crate::exit::CliError;
use cairn::sandbox::RunStdio;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
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

/// Our terminal's size, when stdout is a terminal.
fn window_size() -> Option<libc::winsize> {
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into `w`.
    let rc = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut w) };
    (rc == 0).then_some(w)
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
