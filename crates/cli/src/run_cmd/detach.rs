//! `run -d`: the command runs in a process of its own, started here and
//! left running (a new session, output to the sandbox's `log` file), in a
//! sandbox that outlives this process. `cairn logs` reads that file.
//!
//! The runner is this binary again (`cairn __detached JSON`), so that the
//! command is run and waited for by the same code as a foreground run.

use crate::exit::{classify, open_store, CliError};
use crate::sandbox_cmds::launcher;
use cairn::sandbox::manager::{Argv, ExecOptions, SandboxManager};
use cairn::sandbox::{ExtraMount, RunStdio};
use cairn::store::Store;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What the runner is to run: ExecOptions in a form that crosses exec.
#[derive(Serialize, Deserialize)]
struct Job {
    id: String,
    /// ("image" | "cmd" | "direct", args)
    argv: (String, Vec<String>),
    env: Vec<String>,
    user: Option<String>,
    workdir: Option<String>,
    timeout_secs: Option<f64>,
    mounts: Vec<ExtraMount>,
    rm: bool,
}

#[derive(Args)]
pub struct DetachedArgs {
    /// The job, as JSON
    job: String,
}

/// The sandbox's log file (the detached command's stdout and stderr).
fn log_path(store: &Store, id: &str) -> PathBuf {
    store.layout().sandboxes().join(id).join("log")
}

/// Start the runner for `opts` in sandbox `id`; return once it is started.
pub fn spawn(
    store: &Store,
    id: &str,
    opts: ExecOptions,
    rm: bool,
    _root: Option<&Path>,
) -> Result<(), CliError> {
    let argv = match opts.argv {
        Argv::ImageDefault => ("image".to_string(), vec![]),
        Argv::ReplaceCmd(a) => ("cmd".to_string(), a),
        Argv::Direct(a) => ("direct".to_string(), a),
    };
    let job = Job {
        id: id.to_string(),
        argv,
        env: opts.env,
        user: opts.user,
        workdir: opts.workdir,
        timeout_secs: opts.timeout.map(|t| t.as_secs_f64()),
        mounts: opts.mounts,
        rm,
    };
    let job = serde_json::to_string(&job).map_err(CliError::failed)?;
    let log = log_path(store, id);
    let out = std::fs::File::create(&log)
        .map_err(|e| CliError::io(format!("creating the log file {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| CliError::io(format!("opening the log file {}", log.display()), e))?;
    let exe =
        std::env::current_exe().map_err(|e| CliError::io("finding the cairn executable", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--store")
        .arg(store.layout().root())
        .arg("__detached")
        .arg(job)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; it detaches the runner from this
    // terminal's session, so a Ctrl-C or hangup here does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| CliError::io("starting the detached runner", e))?;
    Ok(())
}

/// The runner: run the job, record its exit code next to the log, and
/// remove the sandbox afterwards for `--rm`.
pub fn detached(root: Option<&Path>, args: DetachedArgs) -> Result<(), CliError> {
    let job: Job = serde_json::from_str(&args.job).map_err(CliError::bad_input)?;
    let store = open_store(root)?;
    let manager = SandboxManager::new(&store, launcher()?);
    let argv = match job.argv.0.as_str() {
        "image" => Argv::ImageDefault,
        "cmd" => Argv::ReplaceCmd(job.argv.1),
        _ => Argv::Direct(job.argv.1),
    };
    let opts = ExecOptions {
        argv,
        env: job.env,
        user: job.user,
        workdir: job.workdir,
        timeout: job.timeout_secs.map(Duration::from_secs_f64),
        mounts: job.mounts,
        stdio: RunStdio {
            stdin: Some(Stdio::null()),
            stdout: None,
            stderr: None,
            ..RunStdio::default()
        },
        ..ExecOptions::default()
    };
    let outcome = manager.exec(&job.id, opts).map_err(classify);
    let code = match &outcome {
        Ok(o) => o.exit_code,
        Err(_) => 125,
    };
    let code_file = store.layout().sandboxes().join(&job.id).join("exit-code");
    // The exit code is a convenience for `inspect`; the log already says
    // what happened, so a failed write loses nothing that matters.
    let _ = std::fs::write(code_file, format!("{code}\n"));
    if job.rm {
        manager.remove(&job.id).map_err(classify)?;
    }
    outcome.map(|_| ())
}

#[derive(Args)]
pub struct LogsArgs {
    /// Sandbox id, id prefix or name
    id: String,
}

/// `cairn logs ID`: what a detached command wrote so far.
pub fn logs(root: Option<&Path>, args: LogsArgs) -> Result<(), CliError> {
    let store = open_store(root)?;
    let manager = SandboxManager::new(&store, launcher()?);
    let record = manager.get(&args.id).map_err(classify)?;
    let path = log_path(&store, &record.id);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CliError::io(format!("reading {}", path.display()), e)),
    };
    std::io::copy(&mut file, &mut std::io::stdout().lock())
        .map_err(|e| CliError::io(format!("copying {}", path.display()), e))?;
    Ok(())
}
