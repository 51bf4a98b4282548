//! The caller's side: spawn the helper, give it its ID maps, wait for it.
//!
//! The caller may be multithreaded (platform services are), so it never
//! unshares anything itself: the helper is a fresh exec of a binary whose
//! `main` calls [`crate::init_hook`] first, and does all namespace work there.

use crate::helper::Start;
use crate::idmap::{IdMapping, IdRange};
use crate::protocol::{Exited, Failure, Request, Task, TaskReply, HELPER_ENV, MAPPED, UNSHARED};
use crate::spec::RunSpec;
use crate::SandboxError;
use nix::fcntl::OFlag;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod early;
pub use early::EarlyHelper;

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
    /// True when the run was killed through its [`CancelToken`].
    pub cancelled: bool,
    /// From the run call to the command's successful exec (PID 1's report);
    /// `None` when no command was exec'd or the report was lost.
    pub exec_after: Option<Duration>,
}

/// Cancels a running sandbox from any thread: the helper is killed, and with
/// it PID 1 (parent-death signal) and so every process of the sandbox.
/// Clones share one state; a token cancelled before the run starts stops it
/// from starting.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Ask every run watching this token to stop. Takes effect within
    /// [`CANCEL_LATENCY`].
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The longest a cancelled or timed-out run waits before it is killed.
pub const CANCEL_LATENCY: Duration = Duration::from_millis(10);

/// How a run is watched and placed: everything besides the spec and stdio.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Kill the whole sandbox after this long.
    pub timeout: Option<Duration>,
    /// Kill the whole sandbox when this token is cancelled.
    pub cancel: Option<CancelToken>,
    /// A cgroup v2 directory to put the sandbox in (its limits apply to
    /// every process of the sandbox): see [`crate::cgroup`].
    pub cgroup: Option<PathBuf>,
    /// cgroup v1 directories (one per controller) to put it in as well.
    pub v1_cgroups: Vec<PathBuf>,
}

/// Standard streams for the sandboxed command (inherited by default).
#[derive(Default)]
pub struct RunStdio {
    pub stdin: Option<Stdio>,
    pub stdout: Option<Stdio>,
    pub stderr: Option<Stdio>,
    /// `stdin` is a terminal (a pty's slave side) that the command takes as
    /// its controlling terminal, in a session of its own (`run -t`).
    pub terminal: bool,
}

/// What [`Launcher::extract_layer`] read.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// sha256 of the uncompressed stream, as text.
    pub diff_id: String,
    /// The extracted dir's tree digest, when asked for.
    pub tree: Option<cairn_layer::Digest>,
}

/// The store's [`cairn_store::LayerWriter`] for overlay upper dirs (build
/// steps, sandbox commits): a task in the user namespace with `mapping`
/// (the dir's files may belong to subordinate IDs) writes the layer to its
/// stdout, which goes straight into the store's blob writer; the blob is
/// hashed once, there. Used through [`cairn_store::Store::commit_layer`].
pub struct UpperLayerWriter<'a> {
    pub launcher: &'a Launcher,
    pub mapping: &'a IdMapping,
    pub compression: cairn_layer::Compression,
    /// Clamp mtimes (`--timestamp`); the task then also reports the dir's tree digest.
    pub timestamp: Option<i64>,
}

impl cairn_store::LayerWriter for UpperLayerWriter<'_> {
    type Error = SandboxError;

    fn write_layer(
        &self,
        dir: &Path,
        out: &mut cairn_store::BlobWriter,
    ) -> Result<cairn_store::LayerReport, SandboxError> {
        let task = Task::WriteLayer {
            upper: dir.to_path_buf(),
            compression: self.compression.to_string(),
            timestamp: self.timestamp,
        };
        let mut reply = self.launcher.run_task_to(self.mapping, task, out)?;
        limit_exceeded(&mut reply, &format!("the changes in {}", dir.display()))?;
        let malformed = || SandboxError::TaskFailed(format!("malformed layer report: {reply}"));
        let digest = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse().ok());
        let tree = match &reply["tree"] {
            serde_json::Value::Null => None,
            t => Some(digest(t).ok_or_else(malformed)?),
        };
        Ok(cairn_store::LayerReport {
            diff_id: digest(&reply["diff_id"]).ok_or_else(malformed)?,
            size: reply["size"].as_u64().ok_or_else(malformed)?,
            media_type: self.compression.media_type().to_string(),
            tree,
        })
    }
}

/// The typed error of a task's `limit_exceeded` answer (a blob or a tree
/// past a limit), naming `what`.
fn limit_exceeded(reply: &mut serde_json::Value, what: &str) -> Result<(), SandboxError> {
    let Some(v) = reply.get_mut("limit_exceeded") else {
        return Ok(());
    };
    let exceeded = serde_json::from_value(v.take())
        .map_err(|e| SandboxError::TaskFailed(format!("malformed limit report for {what}: {e}")))?;
    Err(SandboxError::ExtractLimit {
        archive: what.to_string(),
        exceeded,
    })
}

/// Removes trees through [`Task::RemoveTree`] in a user namespace with
/// `mapping`: the store's [`cairn_store::layer_dirs::TreeRemover`] for
/// dirs holding subordinate-owned files (GC, failed extractions).
pub struct TaskRemover<'a> {
    pub launcher: &'a Launcher,
    pub mapping: &'a IdMapping,
}

impl cairn_store::layer_dirs::TreeRemover for TaskRemover<'_> {
    fn remove_tree(&self, path: &std::path::Path) -> Result<(), String> {
        match std::fs::symlink_metadata(path) {
            Err(_) => return Ok(()),
            Ok(m) if !m.is_dir() => {
                return std::fs::remove_file(path)
                    .map_err(|e| format!("removing {}: {e}", path.display()))
            }
            Ok(_) => {}
        }
        // Most trees are the caller's own (as root, always): no helper needed.
        // What that cannot remove (subordinate-owned files) the task does.
        if std::fs::remove_dir_all(path).is_ok() {
            return Ok(());
        }
        self.launcher
            .run_task(self.mapping, Task::RemoveTree(path.to_path_buf()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Runs specs in sandboxes by re-executing a helper binary.
#[derive(Debug, Clone)]
pub struct Launcher {
    helper: PathBuf,
    /// The helper is this process's own binary ([`Launcher::current_exe`]):
    /// only usable if this process called [`crate::init_hook`].
    own_binary: bool,
}

impl Launcher {
    /// A launcher whose helper is the current executable (whose `main` must
    /// call [`crate::init_hook`] first).
    pub fn current_exe() -> Result<Launcher, SandboxError> {
        let helper = std::env::current_exe()
            .map_err(|e| SandboxError::io("finding the current executable", e))?;
        Ok(Launcher {
            helper,
            own_binary: true,
        })
    }

    /// Fail unless a helper started now would act as one: a launcher of
    /// this very binary needs [`crate::init_hook`] to have been called.
    /// Checked before any run or task, so a forgotten init leaves nothing.
    pub fn check_ready(&self) -> Result<(), SandboxError> {
        if self.own_binary && !crate::helper::initialised() {
            return Err(SandboxError::NotInitialised {
                helper: self.helper.clone(),
            });
        }
        Ok(())
    }

    /// A launcher that uses another binary as the helper.
    pub fn with_helper(helper: impl Into<PathBuf>) -> Launcher {
        Launcher {
            helper: helper.into(),
            own_binary: false,
        }
    }

    /// Run `spec` to completion, killing the whole sandbox after `timeout`.
    pub fn run(
        &self,
        spec: &RunSpec,
        stdio: RunStdio,
        timeout: Option<Duration>,
    ) -> Result<RunOutcome, SandboxError> {
        let control = RunControl {
            timeout,
            ..RunControl::default()
        };
        self.run_with(spec, stdio, &control)
    }

    /// Run `spec` to completion under `control`: a timeout, a cancel token,
    /// a cgroup.
    pub fn run_with(
        &self,
        spec: &RunSpec,
        stdio: RunStdio,
        control: &RunControl,
    ) -> Result<RunOutcome, SandboxError> {
        self.run_request(spec, None, stdio, control, None, None)
    }

    /// [`Launcher::run_with`], keeping `hold` (a sandbox's exec lock) until
    /// the sandbox's namespaces are gone, which may be after this returns.
    /// With `early` (started by [`Launcher::start_early`] for the spec's
    /// ID mapping), the run uses that helper, and its stdio, not `stdio`.
    pub(crate) fn run_holding(
        &self,
        spec: &RunSpec,
        stdio: RunStdio,
        control: &RunControl,
        hold: Box<dyn Send>,
        early: Option<EarlyHelper>,
    ) -> Result<RunOutcome, SandboxError> {
        self.run_request(spec, None, stdio, control, Some(hold), early)
    }

    /// Set the sandbox of `spec` up as for a run, then do `op` as the
    /// spec's user instead of running its command (see [`crate::fileop`]).
    /// A failed operation is the outcome's `failure` (127: not found).
    pub fn run_file_op(
        &self,
        spec: &RunSpec,
        op: crate::protocol::FileOp,
        stdio: RunStdio,
        control: &RunControl,
    ) -> Result<RunOutcome, SandboxError> {
        self.run_request(spec, Some(op), stdio, control, None, None)
    }

    /// A run (or file operation): returns once PID 1 reports the command's
    /// end; the helper is reaped in the background (`reap.rs`), and `hold`
    /// dropped once it is gone.
    fn run_request(
        &self,
        spec: &RunSpec,
        op: Option<crate::protocol::FileOp>,
        stdio: RunStdio,
        control: &RunControl,
        hold: Option<Box<dyn Send>>,
        early: Option<EarlyHelper>,
    ) -> Result<RunOutcome, SandboxError> {
        let started = Instant::now();
        let started_ns = crate::protocol::monotonic_ns();
        let cancel = control.cancel.as_ref();
        if cancel.is_some_and(CancelToken::is_cancelled) {
            return Ok(RunOutcome {
                exit_code: 128 + libc::SIGKILL,
                failure: None,
                timed_out: false,
                cancelled: true,
                exec_after: None,
            });
        }
        let span = cairn_layer::timing::span("sandbox.prepare_spec");
        prepare_run_dirs(spec)?;
        let mut spec = spec.clone();
        if spec.security.seccomp && spec.security.programs.is_empty() {
            let programs = crate::seccomp::default_programs().map_err(SandboxError::Seccomp)?;
            spec.security.programs = programs.to_vec();
        }
        let request = match op {
            None => Request::Run {
                spec: Box::new(spec),
                terminal: stdio.terminal,
            },
            Some(op) => Request::FileOp {
                spec: Box::new(spec),
                op,
            },
        };
        drop(span);
        let cgroups: Vec<&Path> = control
            .cgroup
            .iter()
            .chain(&control.v1_cgroups)
            .map(PathBuf::as_path)
            .collect();
        let span = cairn_layer::timing::span("sandbox.helper_start");
        let mut helper = match early {
            Some(e) if e.id_mapping() == request.id_mapping() => e.finish(&request, &cgroups)?,
            other => {
                drop(other); // started for another mapping: killed
                self.start(&request, stdio, &cgroups)?
            }
        };
        drop(span);
        let span = cairn_layer::timing::span("sandbox.mapped_to_report");
        let deadline = control.timeout.map(|t| started + t);
        let (report, stop) = match read_report(&mut helper.up, deadline, cancel) {
            Ok(read) => read,
            Err(e) => return helper.finish_on_error(Err(e)),
        };
        drop(span);
        let exited = serde_json::from_slice::<Exited>(&report).ok();
        let failure: Option<Failure> = serde_json::from_slice(&report).ok();
        let exit_code = match (stop, exited) {
            // The command ended and nothing of the sandbox runs any more:
            // the helper's exit (the namespaces' teardown) is not waited for,
            // unless a cgroup must be empty before its owner removes it.
            (None, Some(Exited { code, .. })) if cgroups.is_empty() => {
                crate::reap::reap_later(helper.child, hold);
                code
            }
            _ => {
                if stop.is_some() {
                    // Killing the helper kills PID 1 (parent-death signal),
                    // and with it every process of the PID namespace.
                    let _ = helper.child.kill();
                }
                let status = helper
                    .child
                    .wait()
                    .map_err(|e| SandboxError::io("waiting for the sandbox", e))?;
                match (exited, &failure, status.code(), status.signal()) {
                    (Some(Exited { code, .. }), _, _, _) if stop.is_none() => code,
                    (_, Some(f), _, _) => f.exit_code(),
                    (_, None, Some(c), _) => c,
                    (_, None, None, Some(sig)) => 128 + sig,
                    (_, None, None, None) => 125,
                }
            }
        };
        let exec_after = exited
            .filter(|e| e.exec_ns >= started_ns)
            .map(|e| Duration::from_nanos(e.exec_ns - started_ns));
        if let Some(d) = exec_after {
            cairn_layer::timing::report("sandbox.start_to_exec", d);
        }
        Ok(RunOutcome {
            exit_code,
            failure,
            timed_out: stop == Some(Stop::Timeout),
            cancelled: stop == Some(Stop::Cancelled),
            exec_after,
        })
    }

    /// Do `task` as root of a user namespace with `mapping`.
    pub fn run_task(
        &self,
        mapping: &IdMapping,
        task: Task,
    ) -> Result<serde_json::Value, SandboxError> {
        self.run_task_to(mapping, task, &mut std::io::sink())
    }

    /// Extract the layer blob or tar archive `blob` into `dest` by a task in
    /// the user namespace. Breaking one of `limits` is
    /// [`SandboxError::ExtractLimit`] naming `what` (the layer or archive);
    /// `dest` then holds a partial tree, which the caller removes.
    pub fn extract_layer(
        &self,
        mapping: &IdMapping,
        blob: &std::path::Path,
        dest: &std::path::Path,
        limits: cairn_layer::ExtractLimits,
        what: &str,
        tree_digest: bool,
    ) -> Result<Extracted, SandboxError> {
        self.extract_layer_from(mapping, blob, None, dest, limits, what, tree_digest)
    }

    /// [`Launcher::extract_layer`] reading the blob from `stream` (e.g. the
    /// read end of a pipe a download feeds) instead of opening `blob`, which
    /// then only names it in messages. A stream that ends early or carries
    /// a broken archive is a task failure; the caller removes `dest`.
    #[allow(clippy::too_many_arguments)]
    pub fn extract_layer_from(
        &self,
        mapping: &IdMapping,
        blob: &std::path::Path,
        stream: Option<std::os::fd::OwnedFd>,
        dest: &std::path::Path,
        limits: cairn_layer::ExtractLimits,
        what: &str,
        tree_digest: bool,
    ) -> Result<Extracted, SandboxError> {
        let task = Task::ExtractLayer {
            blob: blob.to_path_buf(),
            dest: dest.to_path_buf(),
            limits,
            tree_digest,
        };
        let mut reply =
            self.run_task_io(mapping, task, stream.map(Stdio::from), &mut std::io::sink())?;
        limit_exceeded(&mut reply, what)?;
        Ok(Extracted {
            diff_id: reply["diff_id"].as_str().unwrap_or_default().to_string(),
            tree: reply["tree"].as_str().and_then(|t| t.parse().ok()),
        })
    }

    /// The digest of a layer dir's deterministic tar, read in the user
    /// namespace (its files may belong to subordinate IDs).
    pub fn tree_digest(
        &self,
        mapping: &IdMapping,
        dir: &std::path::Path,
    ) -> Result<cairn_layer::Digest, SandboxError> {
        let reply = self.run_task(mapping, Task::TreeDigest(dir.to_path_buf()))?;
        reply["tree"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| {
                SandboxError::TaskFailed(format!("malformed tree digest reply: {reply}"))
            })
    }

    /// Do `task`, copying what it writes on its stdout (a layer blob, say) to
    /// `out` as it comes.
    pub fn run_task_to(
        &self,
        mapping: &IdMapping,
        task: Task,
        out: &mut dyn Write,
    ) -> Result<serde_json::Value, SandboxError> {
        self.run_task_io(mapping, task, None, out)
    }

    /// [`Launcher::run_task_to`] with `stdin` for the helper (`None`: a
    /// layer task's blob file, else nothing).
    fn run_task_io(
        &self,
        mapping: &IdMapping,
        task: Task,
        stdin: Option<Stdio>,
        out: &mut dyn Write,
    ) -> Result<serde_json::Value, SandboxError> {
        if nix::unistd::geteuid().is_root() && matches!(task, Task::RemoveTree(_)) {
            // Real root may delete anything, and must: the tree may mix host
            // root's files (the generated /etc files) with container root's
            // under a shifted mapping, where neither side can remove both.
            return crate::tasks::perform(task).map_err(SandboxError::TaskFailed);
        }
        prepare_task_dirs(mapping, &task)?;
        // A layer blob is opened here and handed over as stdin: under real
        // root's shifted mapping, container root may not read the store's blobs.
        let stdin = match (&task, stdin) {
            (_, Some(given)) => given,
            (Task::ExtractLayer { blob, .. }, None) => {
                std::fs::File::open(blob).map(Stdio::from).map_err(|e| {
                    SandboxError::io(format!("opening layer blob {}", blob.display()), e)
                })?
            }
            (_, None) => Stdio::null(),
        };
        let request = Request::Task {
            id_mapping: mapping.clone(),
            task,
        };
        let stdio = RunStdio {
            stdin: Some(stdin),
            stdout: Some(Stdio::piped()),
            stderr: None,
            terminal: false,
        };
        let mut helper = self.start(&request, stdio, &[])?;
        let result = (|| {
            if let Some(mut stdout) = helper.child.stdout.take() {
                copy_task_output(&mut stdout, out)
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
    /// unshared (and, given a cgroup, move it there before it forks
    /// anything). Returns with the helper inside its namespaces.
    fn start(
        &self,
        request: &Request,
        stdio: RunStdio,
        cgroups: &[&Path],
    ) -> Result<Helper, SandboxError> {
        self.check_ready()?;
        // Held until the fork is done (spawn.rs).
        let fork_window = self.own_binary.then(crate::spawn::fork_window).flatten();
        let job = match fork_window {
            Some(_) => Start::Given(request.clone()),
            None => Start::Read,
        };
        let send = matches!(job, Start::Read);
        let mut helper = self.spawn_helper(stdio, job, fork_window)?;
        let handshake = helper.handshake(request, send, cgroups);
        helper.finish_on_error(handshake).map(|()| helper)
    }

    /// Start a helper for a run before its sandbox exists, so its start
    /// (the fork, `unshare`, the ID maps: for a subordinate range two
    /// setuid map tools, ~1.4 ms) overlaps the caller's own work (opening
    /// the store, creating the sandbox). Hand it to
    /// [`crate::manager::SandboxManager::exec_with`]; dropped unused, it
    /// is killed and reaped. `stdio` is the run's: it cannot change later.
    ///
    /// `None` when the helper cannot be a fork of this process now (see
    /// `spawn.rs`) or did not come up; the run then starts its helper as
    /// usual, which reports whatever went wrong.
    pub fn start_early(&self, mapping: &IdMapping, stdio: RunStdio) -> Option<EarlyHelper> {
        self.check_ready().ok()?;
        let fork_window = self.own_binary.then(crate::spawn::fork_window).flatten()?;
        let forking = Instant::now();
        // A subordinate range's map tools (~1.4 ms) the helper runs for
        // itself (`selfmap.rs`): started here, they would block this
        // process for their setuid execs. Maps written directly (real
        // root, a single ID) this process writes when the request is
        // ready, long after the helper has unshared.
        let self_mapped = maps_by_tools(mapping);
        let job = Start::Early(self_mapped.then(|| mapping.clone()));
        let helper = self.spawn_helper(stdio, job, Some(fork_window)).ok()?;
        // Reported only for a helper that started (tests look for it).
        cairn_layer::timing::report("sandbox.helper_early", forking.elapsed());
        Some(EarlyHelper {
            helper: Some(helper),
            mapping: mapping.clone(),
            self_mapped,
        })
    }

    /// Start the helper process (a fork of this process when
    /// `fork_window` is given, else an exec of the helper binary) with
    /// `stdio`, doing `job`.
    fn spawn_helper(
        &self,
        stdio: RunStdio,
        job: Start,
        fork_window: Option<cairn_layer::quiet::ForkWindow>,
    ) -> Result<Helper, SandboxError> {
        let (down_r, down_w) = cloexec_pipe()?;
        let (up_r, up_w) = cloexec_pipe()?;
        let mut cmd = Command::new(&self.helper);
        cmd.stdin(stdio.stdin.unwrap_or_else(Stdio::inherit));
        cmd.stdout(stdio.stdout.unwrap_or_else(Stdio::inherit));
        cmd.stderr(stdio.stderr.unwrap_or_else(Stdio::inherit));
        let keep = [down_r.as_raw_fd(), up_w.as_raw_fd()];
        let caller = std::process::id() as libc::pid_t;
        if fork_window.is_some() {
            crate::spawn::note_forked_helper();
            let mut job = Some(job);
            // SAFETY: this process is single-threaded but for the reaper
            // and quiet threads, which hold no lock (spawn.rs), so the child may do anything;
            // it never returns into std's spawn code (it _exits).
            unsafe {
                cmd.pre_exec(move || {
                    prepare_helper_process(caller, &keep)?;
                    // Every other descriptor is closed, std's exec-status pipe
                    // too: its EOF tells the caller's `spawn` we are running.
                    let (down, up) = (File::from_raw_fd(keep[0]), File::from_raw_fd(keep[1]));
                    let code = match job.take() {
                        Some(job) => crate::helper::serve(down, up, job),
                        None => 125,
                    };
                    libc::_exit(code)
                });
            }
        } else {
            cmd.env(
                HELPER_ENV,
                format!("{},{}", down_r.as_raw_fd(), up_w.as_raw_fd()),
            );
            // SAFETY: between fork and exec only async-signal-safe calls run
            // (close_range, fcntl, prctl, getppid, _exit).
            unsafe {
                cmd.pre_exec(move || {
                    // Nothing of the caller's but stdio and our pipes may
                    // reach the helper (and so the sandbox), even a
                    // descriptor someone opened without close-on-exec.
                    if libc::syscall(
                        libc::SYS_close_range,
                        3u32,
                        u32::MAX,
                        libc::CLOSE_RANGE_CLOEXEC,
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    for fd in keep {
                        if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    die_with_caller(caller)
                });
            }
        }
        let child = cmd.spawn().map_err(|e| {
            SandboxError::io(format!("starting helper {}", self.helper.display()), e)
        })?;
        drop(fork_window);
        drop(down_r);
        drop(up_w);
        Ok(Helper {
            child,
            child_path: self.helper.clone(),
            down: down_w.into(),
            up: up_r.into(),
        })
    }
}

/// In the helper, before anything else: die with the caller, and keep of
/// the caller's descriptors only stdio and the two pipes in `keep` (a fork
/// inherits all of them; an exec'd helper would have had only these).
fn prepare_helper_process(caller: libc::pid_t, keep: &[RawFd; 2]) -> std::io::Result<()> {
    die_with_caller(caller)?;
    let (low, high) = (keep[0].min(keep[1]) as u32, keep[0].max(keep[1]) as u32);
    let ranges = [
        (3, low.wrapping_sub(1)),
        (low + 1, high - 1),
        (high + 1, u32::MAX),
    ];
    for (first, last) in ranges.into_iter().filter(|(f, l)| f <= l) {
        // SAFETY: close_range on descriptors nothing in this process uses
        // any more (the caller's copies live on in the caller).
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The helper dies with the thread that started it (which waits for its
/// report in the same call), and so, through PID 1's own parent-death
/// signal, does the sandbox: a caller that crashes leaves no sandbox
/// processes behind. Async-signal-safe.
fn die_with_caller(caller: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments; getppid; _exit.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        // The caller died before the signal was armed.
        if libc::getppid() != caller {
            libc::_exit(125);
        }
    }
    Ok(())
}

/// A running helper process and its two pipes.
struct Helper {
    child: Child,
    /// The helper binary, for messages.
    child_path: PathBuf,
    down: std::fs::File,
    up: std::fs::File,
}

impl Helper {
    /// Send `request` (unless the helper, a fork, has it), wait for it to
    /// unshare, write its ID maps, place it in `cgroups`, let it go on.
    fn handshake(
        &mut self,
        request: &Request,
        send: bool,
        cgroups: &[&Path],
    ) -> Result<(), SandboxError> {
        if send {
            self.send_request(request)?;
        }
        self.await_unshared()?;
        write_id_maps(self.child.id(), request.id_mapping())?;
        self.release(cgroups)
    }

    fn send_request(&mut self, request: &Request) -> Result<(), SandboxError> {
        let body = serde_json::to_vec(request).map_err(SandboxError::Spec)?;
        let mut msg = (body.len() as u64).to_le_bytes().to_vec();
        msg.extend_from_slice(&body);
        self.down
            .write_all(&msg)
            .map_err(|e| SandboxError::io("sending the request to the helper", e))
    }

    /// Wait for the helper's word that it is in its namespaces; if it died
    /// or reported a failure instead, collect why.
    fn await_unshared(&mut self) -> Result<(), SandboxError> {
        let mut byte = [0u8; 1];
        match self.up.read(&mut byte) {
            Ok(1) if byte[0] == UNSHARED => Ok(()),
            read => {
                // The helper died or reported before unsharing: collect why
                // (the byte read is the report's first).
                let mut rest = match read {
                    Ok(1) => vec![byte[0]],
                    _ => Vec::new(),
                };
                let _ = self.up.read_to_end(&mut rest);
                let status = self
                    .child
                    .wait()
                    .map_err(|e| SandboxError::io("waiting for the helper", e))?;
                let message = match serde_json::from_slice::<Failure>(&rest) {
                    Ok(f) => f.message().to_string(),
                    // A clean exit without a word: the binary ran its own
                    // `main` instead of acting as the helper.
                    Err(_) if rest.is_empty() && status.success() => format!(
                        "{} exited without acting as the sandbox helper: its main must call cairn::init() (cairn_sandbox::init_hook) first",
                        self.child_path.display()
                    ),
                    Err(_) => String::from_utf8_lossy(&rest).trim().to_string(),
                };
                Err(SandboxError::HelperFailed {
                    status: status.to_string(),
                    message,
                })
            }
        }
    }

    /// With the ID maps written: place the helper in `cgroups` and let it
    /// go on (it forks PID 1 only after this, so the whole sandbox is born
    /// inside the cgroups).
    fn release(&mut self, cgroups: &[&Path]) -> Result<(), SandboxError> {
        for dir in cgroups {
            crate::cgroup::add_process(dir, self.child.id()).map_err(|source| {
                SandboxError::Cgroup {
                    path: dir.to_path_buf(),
                    source,
                }
            })?;
        }
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

/// Under real root's shifted mapping, hand what the sandbox writes (its
/// run dir, upper and work dirs, overlay mounts' dirs, host paths it must
/// give an owner) to container root; the caller made them as host root.
fn prepare_run_dirs(spec: &crate::spec::RunSpec) -> Result<(), SandboxError> {
    let m = &spec.id_mapping;
    if m.is_identity() || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let r = &spec.rootfs;
    let mut paths: Vec<&Path> = r.upper.parent().into_iter().collect();
    paths.extend([r.upper.as_path(), r.work.as_path()]);
    for mount in &spec.mounts {
        match &mount.source {
            crate::spec::MountSource::Host {
                path,
                owner: Some(_),
            } => paths.push(path),
            crate::spec::MountSource::Overlay {
                upper, work, at, ..
            } => paths.extend([upper.as_path(), work.as_path(), at.as_path()]),
            _ => {}
        }
    }
    for path in paths {
        crate::owners::give_to_container_root(m, path).map_err(|e| {
            SandboxError::io(format!("giving {} to container root", path.display()), e)
        })?;
    }
    Ok(())
}

/// Under real root's shifted mapping, hand the dirs a task writes into to
/// container root (the caller made them as host root).
fn prepare_task_dirs(mapping: &IdMapping, task: &Task) -> Result<(), SandboxError> {
    let dirs: Vec<&Path> = match task {
        Task::ExtractLayer { dest, .. } => vec![dest],
        Task::CopyFromLayers {
            mountpoint, dest, ..
        } => vec![mountpoint, dest],
        _ => vec![],
    };
    for dir in dirs.into_iter().filter(|d| d.exists()) {
        crate::owners::give_to_container_root(mapping, dir).map_err(|e| {
            SandboxError::io(format!("giving {} to container root", dir.display()), e)
        })?;
    }
    Ok(())
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SandboxError::sys("creating a pipe", e))
}

/// Why a run was stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancelled,
}

/// Read the helper's report: one line (a failure, or PID 1's [`Exited`]),
/// or whatever came before EOF (PID 1 died without a word). Stops early at
/// `deadline` or when `cancel` fires, noticed within [`CANCEL_LATENCY`].
fn read_report(
    up: &mut File,
    deadline: Option<Instant>,
    cancel: Option<&CancelToken>,
) -> Result<(Vec<u8>, Option<Stop>), SandboxError> {
    let read_err = |e| SandboxError::io("reading the sandbox's report", e);
    let watched = deadline.is_some() || cancel.is_some();
    let mut report = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if watched && !readable_within(up, deadline).map_err(read_err)? {
            if cancel.is_some_and(CancelToken::is_cancelled) {
                return Ok((report, Some(Stop::Cancelled)));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((report, Some(Stop::Timeout)));
            }
            continue;
        }
        match up.read(&mut buf) {
            Ok(0) => return Ok((report, None)),
            Ok(n) => {
                report.extend_from_slice(&buf[..n]);
                if buf[..n].contains(&b'\n') {
                    return Ok((report, None));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
}

/// Whether `up` has something to read (or EOF) within [`CANCEL_LATENCY`],
/// or before `deadline` if that comes first.
fn readable_within(up: &File, deadline: Option<Instant>) -> std::io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut wait = CANCEL_LATENCY;
    if let Some(d) = deadline {
        wait = wait.min(d.saturating_duration_since(Instant::now()));
    }
    // Round up: a deadline 0.3 ms away must not become a busy loop.
    let ms = wait.as_micros().div_ceil(1000) as u16;
    let mut fds = [PollFd::new(up.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether `m` is written by newuidmap/newgidmap (a subordinate range of
/// an unprivileged caller), not directly.
fn maps_by_tools(m: &IdMapping) -> bool {
    !(nix::unistd::geteuid().is_root() || m.single_id)
}

/// Write the helper's uid_map and gid_map: through newuidmap/newgidmap for a
/// subordinate range, directly for real root or a single mapped ID.
fn write_id_maps(pid: u32, m: &IdMapping) -> Result<(), SandboxError> {
    let as_root = nix::unistd::geteuid().is_root();
    if !maps_by_tools(m) {
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
    // Both tools at once: they write different files of the helper, and
    // each is an exec of a setuid binary (~1.5 ms of a rootless start).
    let uid = spawn_map_tool("newuidmap", pid, &m.map.uids)?;
    let gid = spawn_map_tool("newgidmap", pid, &m.map.gids);
    let uid_done = finish_map_tool("newuidmap", uid);
    let gid_done = gid.and_then(|child| finish_map_tool("newgidmap", child));
    uid_done.and(gid_done)
}

fn write_proc(path: &Path, text: &str) -> Result<(), SandboxError> {
    std::fs::write(path, text)
        .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))
}

fn spawn_map_tool(tool: &str, pid: u32, ranges: &[IdRange]) -> Result<Child, SandboxError> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.container.to_string(),
            r.host.to_string(),
            r.len.to_string(),
        ]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SandboxError::io(format!("running {tool} (install the uidmap package)"), e))
}

fn finish_map_tool(tool: &str, child: Child) -> Result<(), SandboxError> {
    let out = child
        .wait_with_output()
        .map_err(|e| SandboxError::io(format!("waiting for {tool}"), e))?;
    if !out.status.success() {
        return Err(SandboxError::IdMap {
            tool: tool.to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Copy a task's output (a layer being written: up to GiBs) into `out`.
/// `std::io::copy` moves 8 KiB at a time through the default 64 KiB pipe;
/// a 1 MiB pipe and buffer cut the round trips between helper and caller
/// by two orders of magnitude.
fn copy_task_output(
    from: &mut std::process::ChildStdout,
    out: &mut dyn Write,
) -> std::io::Result<u64> {
    const CHUNK: usize = 1 << 20;
    // SAFETY: F_SETPIPE_SZ only resizes the pipe behind a descriptor we own;
    // failure (a lower pipe-max-size) just keeps the default size.
    let _ = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(from),
            libc::F_SETPIPE_SZ,
            CHUNK as libc::c_int,
        )
    };
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}
