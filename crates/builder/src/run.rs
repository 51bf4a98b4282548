//! RUN: a sandbox over the stage's layers; its upper dir becomes the layer.

use crate::config::{History, Runtime};
use crate::config_apply::history_text;
use crate::context::Context;
use crate::events::{OutputStream, StepCtx};
use crate::image_write::StepCommit;
use crate::mounts::RunMount;
use crate::state::{LayerRef, StageState};
use crate::BuildError;
use crate::{BuildRequest, Builder, StepOutcome};
use cairn_dockerfile::typed::{CommandLine, NetworkMode, Run, SecurityMode};
use cairn_dockerfile::{Dockerfile, Instruction};
use cairn_sandbox::cgroup::{self, CgroupParent, Limits};
use cairn_sandbox::manager::{remove_mount_stubs, DEFAULT_PIDS_LIMIT};
use cairn_sandbox::{Network, ProcessSpec, RootfsSpec, RunControl, RunOutcome, RunSpec, RunStdio};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// What a RUN reads besides its stage: the typed instruction (and the
/// parsed one, for its history text), its Dockerfile, the build args it
/// sees, the context and earlier stages (for bind mounts), and its `--mount`s.
pub(crate) struct RunInputs<'a> {
    pub doc: &'a Dockerfile,
    pub inst: &'a Instruction,
    pub run: &'a Run,
    pub run_args: &'a BTreeMap<String, String>,
    pub context: &'a Context,
    pub done: &'a [Option<StageState>],
    pub mounts: Vec<RunMount>,
}

/// A RUN's changes that are bad input (a tree past the depth limit) are
/// the RUN's doing: the error gets the instruction's line, which the
/// commit (a task over the upper dir) does not know.
fn at_run_line(e: BuildError, req: &BuildRequest, inst: &Instruction) -> BuildError {
    if e.kind() != crate::ErrorKind::BadInput || e.position().is_some() {
        return e;
    }
    BuildError::input_at(
        crate::Position::line(req.dockerfile_name(), inst.line),
        format!("the RUN's changes: {e}"),
    )
}

impl Builder<'_> {
    /// Run one RUN instruction (or reuse its cached layer). Says whether it ran or came from the cache.
    pub(crate) fn run_step(
        &self,
        req: &BuildRequest,
        state: &mut StageState,
        key: &str,
        step: &StepCtx,
        inputs: &RunInputs,
    ) -> Result<StepOutcome, BuildError> {
        let inst = inputs.inst;
        let created_by = run_history(inputs.run, inst, state);
        if let Some((layer, created)) = self.cached_layer(req, key)? {
            self.reuse_layer(state, layer, &created_by, created);
            return Ok(StepOutcome::Cached);
        }
        if self.dry_run {
            return Ok(StepOutcome::WouldRun);
        }
        self.ensure_extracted(state)?;
        let dir = self.scratch_dir("run")?;
        let commit = StepCommit {
            key,
            created_by: &created_by,
        };
        let result = self.run_in(req, state, &dir, step, inputs).and_then(|()| {
            self.commit_upper(req, &dir.join("upper"), &commit, None)
                .map_err(|e| at_run_line(e, req, inst))
        });
        let _ = self.tasks.remove_tree(&dir);
        self.add_layer(state, result?, &created_by);
        Ok(StepOutcome::Ran)
    }

    /// Put a layer (cached or just committed) on top of the stage: its
    /// diff id, its history entry and its time.
    pub(crate) fn reuse_layer(
        &self,
        state: &mut StageState,
        layer: LayerRef,
        created_by: &str,
        created: String,
    ) {
        state.config.push_diff_id(&layer.diff_id);
        state
            .config
            .push_history(History::new(&created, created_by, false));
        state.created = created;
        state.layers.push(layer);
    }

    /// A private scratch dir in the store's tmp/ (same filesystem as layers/).
    pub(crate) fn scratch_dir(&self, what: &str) -> Result<PathBuf, BuildError> {
        let tmp = self.store.layout().tmp();
        let dir = tempfile::Builder::new()
            .prefix(&format!("build-{what}-"))
            .tempdir_in(&tmp)
            .map_err(BuildError::io(&tmp))?
            .keep();
        for sub in ["upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(BuildError::io(&dir))?;
        }
        // Under real root's shifted mapping the sandbox's root must reach
        // and write these (see cairn_sandbox::owners).
        for path in [dir.clone(), dir.join("upper"), dir.join("work")] {
            cairn_sandbox::owners::give_to_container_root(&self.mapping, &path)
                .map_err(BuildError::io(&path))?;
        }
        Ok(dir)
    }

    fn run_in(
        &self,
        req: &BuildRequest,
        state: &StageState,
        dir: &Path,
        step: &StepCtx,
        inputs: &RunInputs,
    ) -> Result<(), BuildError> {
        let (doc, inst, run_args) = (inputs.doc, inputs.inst, inputs.run_args);
        let cfg = &state.config;
        let mut env = cfg.env_list();
        for (k, v) in run_args {
            if !env.iter().any(|e| e.split('=').next() == Some(k)) {
                env.push(format!("{k}={v}"));
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            // runc (under BuildKit) sets HOME from the user's passwd entry, "/" without one.
            let view = crate::view::LayerView::new(self, state);
            let home = cairn_sandbox::users::resolve_user(
                &cfg.user(),
                &view.read_to_string("etc/passwd"),
                &view.read_to_string("etc/group"),
            )
            .map(|u| u.home)
            .unwrap_or_else(|_| "/".into());
            env.push(format!("HOME={home}"));
        }
        let network = match inputs.run.network {
            None | Some(NetworkMode::Default) => req.network,
            Some(NetworkMode::None) => Network::None,
            Some(NetworkMode::Host) => {
                let policy = &req.run_policy;
                if req.network == Network::None && !policy.allow_network_host {
                    return Err(BuildError::input_at(
                        crate::Position::line(req.dockerfile_name(), inst.line),
                        "RUN --network=host is not allowed: the build's network is none \
                         and the network.host entitlement was not granted (RunPolicy.allow_network_host)",
                    ));
                }
                Network::Host
            }
        };
        if inputs.run.security == Some(SecurityMode::Insecure) {
            return Err(BuildError::unsupported_at(
                crate::Position::line(req.dockerfile_name(), inst.line),
                "RUN --security=insecure: rootless sandboxes have no host privileges to give",
            ));
        }
        let mounts =
            self.setup_mounts(&inputs.mounts, doc, inputs.context, inputs.done, state, dir)?;
        env.extend(mounts.env.iter().cloned());
        let layer_dirs = self.layer_dirs(state);
        let spec = RunSpec {
            rootfs: RootfsSpec {
                layers: layer_dirs.clone(),
                upper: dir.join("upper"),
                work: dir.join("work"),
                merged: dir.join("merged"),
                // The commit syncs the upper dir it adopts; a failed step's is deleted.
                volatile: true,
            },
            process: ProcessSpec {
                args: run_argv(inputs.run, &cfg.shell()),
                env,
                cwd: cfg.working_dir(),
                user: cfg.user(),
            },
            network,
            hostname: "buildkitsandbox".into(),
            // The sandbox's own /etc files, written into `dir` by the task.
            bind_files: Vec::new(),
            mounts: mounts.mounts.clone(),
            id_mapping: self.mapping.clone(),
            pids_limit: Some(req.run_policy.pids.unwrap_or(DEFAULT_PIDS_LIMIT)),
            security: Default::default(),
        };
        let run_span = cairn_layer::timing::span("build.run_sandbox_and_command");
        let outcome = self.run_limited(req, dir, &spec, step)?;
        drop(run_span);
        if outcome.timed_out {
            return Err(BuildError::input_at(
                crate::Position::line(req.dockerfile_name(), inst.line),
                format!(
                    "RUN timed out after {:?} (the build's RUN timeout); every process of the step was killed",
                    req.run_policy.timeout.unwrap_or_default()
                ),
            ));
        }
        if outcome.cancelled {
            return Err(BuildError::Cancelled);
        }
        if outcome.exit_code != 0 && self.cancelled_meanwhile(outcome.exit_code, step) {
            return Err(BuildError::Cancelled);
        }
        if outcome.exit_code != 0 {
            if let Some(f) = &outcome.failure {
                step.output(OutputStream::Stderr, f.message().to_string());
            }
            return Err(BuildError::RunFailed {
                file: req.dockerfile_name(),
                line: inst.line,
                command: spec.process.args.join(" "),
                code: outcome.exit_code,
            });
        }
        remove_mount_stubs(&dir.join("upper"), &layer_dirs);
        self.remove_stubs(&dir.join("upper"), &mounts.stubs)
    }

    /// A RUN that died of SIGINT or SIGTERM (exit 130 or 143) was most
    /// likely hit by the same Ctrl-C as the caller (a terminal signals the
    /// whole process group), and may have died before the caller's cancel
    /// reached the build: wait a moment for that cancel, so the build
    /// reports a cancel rather than a failed RUN.
    fn cancelled_meanwhile(&self, exit_code: i32, step: &StepCtx) -> bool {
        if exit_code != 130 && exit_code != 143 {
            return false;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        loop {
            let user = self.cancel.as_ref().is_some_and(|c| c.is_cancelled());
            if user || step.cancel.is_cancelled() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Run `spec` with its stdout and stderr through pipes, each line sent
    /// as an output event; killed when the step's token is cancelled.
    /// Run `spec` in a cgroup with the build's limits (and the default pids
    /// limit); limits that cannot be applied are reported as warnings.
    fn run_limited(
        &self,
        req: &BuildRequest,
        dir: &Path,
        spec: &RunSpec,
        step: &StepCtx,
    ) -> Result<RunOutcome, BuildError> {
        let policy = &req.run_policy;
        let limits = Limits {
            cpu: policy.cpus,
            memory_bytes: policy.memory_bytes,
            pids: Some(policy.pids.unwrap_or(DEFAULT_PIDS_LIMIT)),
        };
        let name = format!("cairn-build-{}-{}", std::process::id(), step_serial());
        let applied = cgroup::create(&CgroupParent::detect(), &name, &limits);
        for note in &applied.not_applied {
            // The default pids limit still holds through RLIMIT_NPROC.
            if note.starts_with("pids=") && policy.pids.is_none() {
                continue;
            }
            step.emit(crate::events::BuildEvent::Warning {
                message: format!("RUN limit not applied: {note}"),
            });
        }
        let control = RunControl {
            cancel: Some(step.cancel.clone()),
            timeout: policy.timeout,
            cgroup: applied.dir.clone(),
            v1_cgroups: applied.v1_dirs.clone(),
        };
        let result = self.run_captured(dir, spec, step, &control);
        for dir in applied.dirs() {
            let _ = cgroup::remove(&dir);
        }
        result
    }

    fn run_captured(
        &self,
        dir: &Path,
        spec: &RunSpec,
        step: &StepCtx,
        control: &RunControl,
    ) -> Result<RunOutcome, BuildError> {
        // Close-on-exec: helpers of other stages, spawned meanwhile, must
        // not hold these pipes open.
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| BuildError::Io {
                path: PathBuf::from("(a pipe for RUN output)"),
                source: e.into(),
            })
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdio = RunStdio {
            stdin: Some(Stdio::null()),
            stdout: Some(Stdio::from(out_w)),
            stderr: Some(Stdio::from(err_w)),
            ..RunStdio::default()
        };
        std::thread::scope(|scope| {
            // The write ends live in the helper's Command, closed once it is
            // spawned: the readers end when the sandbox's processes are gone.
            scope.spawn(|| forward_lines(out_r, OutputStream::Stdout, step));
            scope.spawn(|| forward_lines(err_r, OutputStream::Stderr, step));
            self.tasks.run(dir, spec, stdio, control)
        })
    }
}

/// Send each line read from `pipe` as an output event.
fn forward_lines(pipe: std::os::fd::OwnedFd, stream: OutputStream, step: &StepCtx) {
    let mut reader = std::io::BufReader::new(std::fs::File::from(pipe));
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                step.output(stream, String::from_utf8_lossy(&line).into_owned());
            }
        }
    }
}

/// The argv of a RUN: exec form as is; shell form and heredocs through the
/// stage's SHELL (default /bin/sh -c).
fn run_argv(run: &Run, shell: &[String]) -> Vec<String> {
    let shell: Vec<String> = if shell.is_empty() {
        vec!["/bin/sh".into(), "-c".into()]
    } else {
        shell.to_vec()
    };
    let command = match &run.command {
        CommandLine::Exec(args) if run.heredocs.is_empty() => return args.clone(),
        CommandLine::Exec(args) => args.join(" "),
        CommandLine::Shell(text) => text.clone(),
    };
    let script = match run.heredocs.as_slice() {
        // `RUN <<EOF` alone (`<<  EOF` too, dockerfile 1.16+): the body is
        // the script (BuildKit).
        [only]
            if command
                .trim()
                .trim_start_matches("<<")
                .trim_start_matches('-')
                .trim_start()
                .trim_matches(['"', '\''])
                == only.delimiter =>
        {
            only.body.clone()
        }
        // Otherwise the shell sees the command with its heredocs, as written.
        docs => {
            let mut s = command;
            for h in docs {
                s.push('\n');
                s.push_str(&h.body);
                s.push_str(&h.delimiter);
            }
            s
        }
    };
    [shell, vec![script]].concat()
}

/// History text of a RUN as BuildKit writes it.
fn run_history(run: &Run, inst: &Instruction, state: &StageState) -> String {
    match &run.command {
        CommandLine::Exec(_) => history_text(inst),
        CommandLine::Shell(text) => {
            let shell = state.config.shell();
            let shell = if shell.is_empty() {
                "/bin/sh -c".to_string()
            } else {
                shell.join(" ")
            };
            format!("RUN {shell} {text}")
        }
    }
}

/// A number no other RUN of this process has, for cgroup names.
fn step_serial() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
