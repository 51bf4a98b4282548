//! The caller's side: spawn the helper, give it its ID maps, wait for it.
//!
//! The caller may be multithreaded (platform services are), so it never
//! unshares anything itself: the helper is a fresh exec of a binary whose
//! `main` calls [`crate::init_hook`] first, and does all namespace work there.

use crate::idmap::{IdMapping, IdRange};
use crate::protocol::{Failure, Request, Task, TaskReply, HELPER_ENV, MAPPED, UNSHARED};
use crate::spec::RunSpec;
use crate::SandboxError;
use nix::fcntl::OFlag;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

/// How a sandboxed command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Exit code as Docker reports it: the command's code, 128+N for signal
    /// N, 125/126/127 for setup / cannot-exec / not-found failures.
    pub exit_code: i32,
    /// Set when the sandbox, not the command, decided the exit code.
    pub failure: Option<Failure>,
    /// True when the run was killed because its timeout passed.
    pub timed_out: bool,
}

/// Standard streams for the sandboxed command (inherited by default).
#[derive(Default)]
pub struct RunStdio {
    pub stdin: Option<Stdio>,
    pub stdout: Option<Stdio>,
    pub stderr: Option<Stdio>,
}

/// Runs specs in sandboxes by re-executing a helper binary.
#[derive(Debug, Clone)]
pub struct Launcher {
    helper: PathBuf,
}

impl Launcher {
    /// A launcher whose helper is the current executable (whose `main` must
    /// call [`crate::init_hook`] first).
    pub fn current_exe() -> Result<Launcher, SandboxError> {
        let helper = std::env::current_exe()
            .map_err(|e| SandboxError::io("finding the current executable", e))?;
        Ok(Launcher { helper })
    }

    /// A launcher that uses another binary as the helper.
    pub fn with_helper(helper: impl Into<PathBuf>) -> Launcher {
        Launcher {
            helper: helper.into(),
        }
    }

    /// Run `spec` to completion, killing the whole sandbox after `timeout`.
    pub fn run(
        &self,
        spec: &RunSpec,
        stdio: RunStdio,
        timeout: Option<Duration>,
    ) -> Result<RunOutcome, SandboxError> {
        let started = Instant::now();
        let mut helper = self.start(&Request::Run(Box::new(spec.clone())), stdio)?;
        let result = (|| {
            // The up pipe stays open until the command is exec'd or a failure
            // report is written.
            let mut report = Vec::new();
            let _ = helper.up.read_to_end(&mut report);
            let failure: Option<Failure> = serde_json::from_slice(&report).ok();
            let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
            let (status, timed_out) = wait_with_timeout(&mut helper.child, left)?;
            let exit_code = match (&failure, status.code(), status.signal()) {
                (Some(f), _, _) => f.exit_code(),
                (None, Some(c), _) => c,
                (None, None, Some(sig)) => 128 + sig,
                (None, None, None) => 125,
            };
            Ok(RunOutcome {
                exit_code,
                failure,
                timed_out,
            })
        })();
        helper.finish_on_error(result)
    }

    /// Do `task` as root of a user namespace with `mapping`.
    pub fn run_task(
        &self,
        mapping: &IdMapping,
        task: Task,
    ) -> Result<serde_json::Value, SandboxError> {
        self.run_task_to(mapping, task, &mut std::io::sink())
    }

    /// Do `task`, copying what it writes on its stdout (a layer blob, say) to
    /// `out` as it comes.
    pub fn run_task_to(
        &self,
        mapping: &IdMapping,
        task: Task,
        out: &mut dyn Write,
    ) -> Result<serde_json::Value, SandboxError> {
        let request = Request::Task {
            id_mapping: mapping.clone(),
            task,
        };
        let stdio = RunStdio {
            stdin: Some(Stdio::null()),
            stdout: Some(Stdio::piped()),
            stderr: None,
        };
        let mut helper = self.start(&request, stdio)?;
        let result = (|| {
            if let Some(mut stdout) = helper.child.stdout.take() {
                std::io::copy(&mut stdout, out)
                    .map_err(|e| SandboxError::io("copying the task's output", e))?;
            }
            let mut reply = Vec::new();
            let _ = helper.up.read_to_end(&mut reply);
            let status = helper
                .child
                .wait()
                .map_err(|e| SandboxError::io("waiting for the helper", e))?;
            match serde_json::from_slice::<TaskReply>(&reply) {
                Ok(TaskReply::Done(value)) => Ok(value),
                Ok(TaskReply::Failed(message)) => Err(SandboxError::TaskFailed(message)),
                Err(_) => Err(SandboxError::HelperFailed {
                    status: status.to_string(),
                    message: String::from_utf8_lossy(&reply).trim().to_string(),
                }),
            }
        })();
        helper.finish_on_error(result)
    }

    /// Spawn the helper, send it `request`, and write its ID maps once it has
    /// unshared. Returns with the helper inside its namespaces.
    fn start(&self, request: &Request, stdio: RunStdio) -> Result<Helper, SandboxError> {
        let (down_r, down_w) = cloexec_pipe()?;
        let (up_r, up_w) = cloexec_pipe()?;
        let mut cmd = Command::new(&self.helper);
        cmd.env(
            HELPER_ENV,
            format!("{},{}", down_r.as_raw_fd(), up_w.as_raw_fd()),
        );
        cmd.stdin(stdio.stdin.unwrap_or_else(Stdio::inherit));
        cmd.stdout(stdio.stdout.unwrap_or_else(Stdio::inherit));
        cmd.stderr(stdio.stderr.unwrap_or_else(Stdio::inherit));
        let keep = [down_r.as_raw_fd(), up_w.as_raw_fd()];
        // SAFETY: between fork and exec only async-signal-safe fcntl calls run.
        unsafe {
            cmd.pre_exec(move || {
                for fd in keep {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            SandboxError::io(format!("starting helper {}", self.helper.display()), e)
        })?;
        drop(down_r);
        drop(up_w);
        let mut helper = Helper {
            child,
            down: down_w.into(),
            up: up_r.into(),
        };
        let handshake = helper.handshake(request);
        helper.finish_on_error(handshake).map(|()| helper)
    }
}

/// A running helper process and its two pipes.
struct Helper {
    child: Child,
    down: std::fs::File,
    up: std::fs::File,
}

impl Helper {
    fn handshake(&mut self, request: &Request) -> Result<(), SandboxError> {
        let body = serde_json::to_vec(request).map_err(SandboxError::Spec)?;
        let mut msg = (body.len() as u64).to_le_bytes().to_vec();
        msg.extend_from_slice(&body);
        self.down
            .write_all(&msg)
            .map_err(|e| SandboxError::io("sending the request to the helper", e))?;
        let mut byte = [0u8; 1];
        match self.up.read(&mut byte) {
            Ok(1) if byte[0] == UNSHARED => {}
            _ => {
                // The helper died or reported before unsharing: collect why.
                let mut rest = Vec::new();
                let _ = self.up.read_to_end(&mut rest);
                let status = self
                    .child
                    .wait()
                    .map_err(|e| SandboxError::io("waiting for the helper", e))?;
                let message = match serde_json::from_slice::<Failure>(&rest) {
                    Ok(f) => f.message().to_string(),
                    Err(_) => String::from_utf8_lossy(&rest).trim().to_string(),
                };
                return Err(SandboxError::HelperFailed {
                    status: status.to_string(),
                    message,
                });
            }
        }
        write_id_maps(self.child.id(), request.id_mapping())?;
        self.down
            .write_all(&[MAPPED])
            .map_err(|e| SandboxError::io("signalling the helper", e))
    }

    /// On error, make sure the helper (and so its namespaces) is gone.
    fn finish_on_error<T>(&mut self, result: Result<T, SandboxError>) -> Result<T, SandboxError> {
        if result.is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        result
    }
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SandboxError::sys("creating a pipe", e))
}

fn wait_with_timeout(
    child: &mut Child,
    timeout: Option<Duration>,
) -> Result<(std::process::ExitStatus, bool), SandboxError> {
    let Some(timeout) = timeout else {
        let status = child
            .wait()
            .map_err(|e| SandboxError::io("waiting for the sandbox", e))?;
        return Ok((status, false));
    };
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| SandboxError::io("waiting for the sandbox", e))?
        {
            return Ok((status, false));
        }
        if Instant::now() >= deadline {
            // Killing the helper kills PID 1 (parent-death signal), and with it
            // every process of the PID namespace.
            let _ = child.kill();
            let status = child
                .wait()
                .map_err(|e| SandboxError::io("waiting for the sandbox", e))?;
            return Ok((status, true));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Write the helper's uid_map and gid_map: through newuidmap/newgidmap for a
/// subordinate range, directly for real root or a single mapped ID.
fn write_id_maps(pid: u32, m: &IdMapping) -> Result<(), SandboxError> {
    let as_root = nix::unistd::geteuid().is_root();
    if as_root || m.single_id {
        let lines = |ranges: &[IdRange]| -> String {
            if ranges.is_empty() {
                return format!("0 0 {}\n", u32::MAX); // the identity
            }
            ranges
                .iter()
                .map(|r| format!("{} {} {}\n", r.container, r.host, r.len))
                .collect()
        };
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if !as_root {
            // An unprivileged process may map its own gid only after giving up setgroups.
            write_proc(&proc_dir.join("setgroups"), "deny")?;
        }
        write_proc(&proc_dir.join("uid_map"), &lines(&m.map.uids))?;
        write_proc(&proc_dir.join("gid_map"), &lines(&m.map.gids))?;
        return Ok(());
    }
    run_map_tool("newuidmap", pid, &m.map.uids)?;
    run_map_tool("newgidmap", pid, &m.map.gids)
}

fn write_proc(path: &Path, text: &str) -> Result<(), SandboxError> {
    std::fs::write(path, text)
        .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))
}

fn run_map_tool(tool: &str, pid: u32, ranges: &[IdRange]) -> Result<(), SandboxError> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.container.to_string(),
            r.host.to_string(),
            r.len.to_string(),
        ]);
    }
    let out = cmd
        .output()
        .map_err(|e| SandboxError::io(format!("running {tool} (install the uidmap package)"), e))?;
    if !out.status.success() {
        return Err(SandboxError::IdMap {
            tool: tool.to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
