//! Exec with its output captured or streamed, and file writes and reads
//! into a sandbox, for library callers that have no terminal to inherit.
//!
//! Both pipes are read while the command runs (one `poll` loop on the
//! caller's thread, the exec waiting on a scoped thread): a command that
//! writes more than a pipe holds (64 KiB) to either stream never blocks.

use crate::launch::{RunControl, RunOutcome, RunStdio};
use crate::manager::{Argv, ExecOptions, ManagerError, SandboxManager};
use crate::protocol::FileOp;
use crate::SandboxError;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::Stdio;

/// Which stream of a command a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StdStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Everything written to standard output.
    pub stdout: Vec<u8>,
    /// Everything written to standard error.
    pub stderr: Vec<u8>,
    /// The exit code, as Docker reports it (see [`RunOutcome::exit_code`]).
    pub exit_code: i32,
    /// The whole outcome (timeout, cancel, setup failure).
    pub outcome: RunOutcome,
}

fn pipe() -> Result<(File, File), SandboxError> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| SandboxError::sys("creating a pipe", e))?;
    Ok((File::from(r), File::from(w)))
}

/// Read both files until both are at EOF, handing each chunk to `sink`.
fn pump(
    mut out: File,
    mut err: File,
    sink: &mut dyn FnMut(StdStream, &[u8]),
) -> std::io::Result<()> {
    let mut open = [true, true];
    let mut buf = vec![0u8; 1 << 16];
    while open.iter().any(|o| *o) {
        let (ready_out, ready_err) = {
            let mut fds = Vec::with_capacity(2);
            let flags = PollFlags::POLLIN;
            if open[0] {
                fds.push(PollFd::new(out.as_fd(), flags));
            }
            if open[1] {
                fds.push(PollFd::new(err.as_fd(), flags));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let ready = |i: usize| fds[i].any().unwrap_or(true);
            match (open[0], open[1]) {
                (true, true) => (ready(0), ready(1)),
                (true, false) => (ready(0), false),
                _ => (false, ready(0)),
            }
        };
        for (i, ready, file, stream) in [
            (0, ready_out, &mut out, StdStream::Stdout),
            (1, ready_err, &mut err, StdStream::Stderr),
        ] {
            if !ready {
                continue;
            }
            match file.read(&mut buf) {
                Ok(0) => open[i] = false,
                Ok(n) => sink(stream, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

impl SandboxManager<'_> {
    /// Run a command, handing its output to `sink` chunk by chunk as it
    /// comes (on this thread). `opts.stdio`'s stdout and stderr are
    /// replaced by pipes; stdin is /dev/null unless `opts.stdio` gives one.
    pub fn exec_streaming(
        &self,
        id_or_name: &str,
        mut opts: ExecOptions,
        sink: &mut dyn FnMut(StdStream, &[u8]),
    ) -> Result<RunOutcome, ManagerError> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        opts.stdio.stdin = Some(opts.stdio.stdin.take().unwrap_or_else(Stdio::null));
        opts.stdio.stdout = Some(out_w.into());
        opts.stdio.stderr = Some(err_w.into());
        std::thread::scope(|scope| {
            // The write ends live in `opts` until the helper is spawned (or
            // the exec fails): either way the reads below reach EOF.
            let run = scope.spawn(move || self.exec(id_or_name, opts));
            let pumped = pump(out_r, err_r, sink);
            let outcome = run.join().unwrap_or_else(|_| {
                Err(SandboxError::TaskFailed("the exec thread panicked".into()).into())
            })?;
            pumped.map_err(|e| SandboxError::io("reading the command's output", e))?;
            Ok(outcome)
        })
    }

    /// Run a command and return what it printed on each stream and its exit
    /// code. Both streams are read as they are written, so any amount of
    /// output works.
    pub fn exec_output(
        &self,
        id_or_name: &str,
        opts: ExecOptions,
    ) -> Result<ExecOutput, ManagerError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let outcome = self.exec_streaming(id_or_name, opts, &mut |stream, bytes| match stream {
            StdStream::Stdout => stdout.extend_from_slice(bytes),
            StdStream::Stderr => stderr.extend_from_slice(bytes),
        })?;
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code: outcome.exit_code,
            outcome,
        })
    }

    /// Write `data` into the sandbox at `path` with `mode`, as `user` (the
    /// image's user when None): the file is that user's, made without a
    /// shell, and the path resolves inside the sandbox (see [`crate::fileop`]).
    pub fn write_file(
        &self,
        id_or_name: &str,
        path: &str,
        data: &[u8],
        mode: u32,
        user: Option<&str>,
    ) -> Result<(), ManagerError> {
        let (in_r, mut in_w) = pipe()?;
        let stdio = RunStdio {
            stdin: Some(in_r.into()),
            stdout: Some(Stdio::null()),
            stderr: Some(Stdio::null()),
            ..RunStdio::default()
        };
        let op = FileOp::Write {
            path: path.to_string(),
            mode,
        };
        std::thread::scope(|scope| {
            // A failed or refused write stops reading: ignore EPIPE here,
            // the outcome says why.
            let feeder = scope.spawn(move || {
                let _ = in_w.write_all(data);
            });
            let outcome = self.file_op(id_or_name, op, user, stdio);
            let _ = feeder.join();
            outcome.map(drop)
        })
    }

    /// Read the regular file `path` of the sandbox, as `user` (the image's
    /// user when None).
    pub fn read_file(
        &self,
        id_or_name: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<Vec<u8>, ManagerError> {
        let (out_r, out_w) = pipe()?;
        let stdio = RunStdio {
            stdin: Some(Stdio::null()),
            stdout: Some(out_w.into()),
            stderr: Some(Stdio::null()),
            ..RunStdio::default()
        };
        let op = FileOp::Read {
            path: path.to_string(),
        };
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut data = Vec::new();
                let mut out_r = out_r;
                out_r.read_to_end(&mut data).map(|_| data)
            });
            let outcome = self.file_op(id_or_name, op, user, stdio);
            let data = reader
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the reader thread panicked")));
            outcome?;
            data.map_err(|e| SandboxError::io(format!("reading {path} from the sandbox"), e).into())
        })
    }

    /// Do `op` in the sandbox's current state, serialised with its execs.
    fn file_op(
        &self,
        id_or_name: &str,
        op: FileOp,
        user: Option<&str>,
        stdio: RunStdio,
    ) -> Result<RunOutcome, ManagerError> {
        let record = self.get(id_or_name)?;
        let _lock = self.lock(&record.id)?;
        let opts = ExecOptions {
            argv: Argv::Direct(Vec::new()),
            user: user.map(str::to_string),
            ..ExecOptions::default()
        };
        let spec = self.run_spec(&record, &opts)?;
        let control = RunControl {
            cgroup: self.live_cgroup(&record)?,
            v1_cgroups: self.live_v1_cgroups(&record),
            ..RunControl::default()
        };
        let outcome = self.launcher.run_file_op(&spec, op, stdio, &control)?;
        match &outcome.failure {
            None if outcome.exit_code == 0 => Ok(outcome),
            None => Err(ManagerError::File {
                id: record.id,
                message: format!("file operation ended with exit code {}", outcome.exit_code),
                not_found: false,
            }),
            Some(f) => Err(ManagerError::File {
                id: record.id,
                message: f.message().to_string(),
                not_found: f.exit_code() == 127,
            }),
        }
    }
}
