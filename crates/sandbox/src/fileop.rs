//! File reads and writes inside a sandbox without a shell: done by the
//! sandbox's own process (after the rootfs is entered and the user's IDs
//! taken), so the file is the user's, the user's permissions apply, and
//! paths resolve with `openat2(RESOLVE_IN_ROOT)` from the sandbox's root:
//! neither `..` nor a symlink (`/tmp/x -> /etc/passwd`) reaches past it.

use crate::protocol::FileOp;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

/// Why a file operation failed; `not_found` when the path (or its parent)
/// does not exist.
#[derive(Debug)]
pub struct FileOpError {
    pub message: String,
    pub not_found: bool,
}

/// Do `op` in the current root, reading stdin / writing stdout.
pub fn perform(op: &FileOp) -> Result<(), FileOpError> {
    match op {
        FileOp::Write { path, mode } => write(path, *mode),
        FileOp::Read { path } => read(path),
    }
}

fn failed(what: &str, path: &str, e: std::io::Error) -> FileOpError {
    FileOpError {
        not_found: e.kind() == std::io::ErrorKind::NotFound,
        message: format!("{what} {path}: {e}"),
    }
}

fn write(path: &str, mode: u32) -> Result<(), FileOpError> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let fd = open_in_root(path, flags, mode & 0o7777).map_err(|e| failed("writing", path, e))?;
    let mut file = File::from(fd);
    // The umask must not narrow the mode asked for (`docker cp` keeps it).
    let meta = file.metadata().map_err(|e| failed("writing", path, e))?;
    if !meta.is_file() {
        return Err(FileOpError {
            message: format!("writing {path}: not a regular file"),
            not_found: false,
        });
    }
    nix::sys::stat::fchmod(
        &file,
        nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777),
    )
    .map_err(|e| failed("writing", path, e.into()))?;
    std::io::copy(&mut *raw_std(0), &mut file).map_err(|e| failed("writing", path, e))?;
    Ok(())
}

fn read(path: &str) -> Result<(), FileOpError> {
    let fd = open_in_root(path, libc::O_RDONLY, 0).map_err(|e| failed("reading", path, e))?;
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(|e| failed("reading", path, e))?;
    if !meta.is_file() {
        return Err(FileOpError {
            message: format!("reading {path}: not a regular file"),
            not_found: false,
        });
    }
    let mut stdout = raw_std(1);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| failed("reading", path, e))?;
        if n == 0 {
            break;
        }
        stdout
            .write_all(&buf[..n])
            .map_err(|e| failed("reading", path, e))?;
    }
    stdout.flush().map_err(|e| failed("reading", path, e))
}

/// Standard descriptor `fd` unbuffered: this process may be a fork of a
/// caller whose `std::io` buffers hold its own pending bytes.
fn raw_std(fd: std::os::fd::RawFd) -> std::mem::ManuallyDrop<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: 0 and 1 stay open for the process's life; ManuallyDrop
    // keeps this File from closing them.
    std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

/// Open `path` (absolute or relative to `/`) beneath `/` with
/// `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, creating it with `mode`.
fn open_in_root(path: &str, flags: libc::c_int, mode: u32) -> std::io::Result<OwnedFd> {
    let root = File::open("/")?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    cairn_layer::openat2_in_root(root.as_fd(), rel.as_bytes(), flags, mode)
}
