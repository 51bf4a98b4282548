//! `cairn sandbox create|exec|commit|ls|rm` (and what `run` shares with them).

use crate::exit::{classify, open_store, CliError};
use crate::security_args::SecurityArgs;
use cairn::layer::Compression;
use cairn::sandbox::manager::{Argv, CreateOptions, ExecOptions, Resources, SandboxManager};
use cairn::sandbox::{Launcher, Network, RunOutcome};
use cairn::store::Store;
use clap::{Args, Subcommand};
use std::path::Path;
use std::time::Duration;

pub fn launcher() -> Result<Launcher, CliError> {
    prime_cpu_features();
    Launcher::current_exe().map_err(CliError::failed)
}

/// Run std's CPU-feature probe now, before a sandbox helper is forked. It
/// is cached per process, but nothing here asks for it before the fork, so
/// the helper's PID 1 probed on its way to the command's exec (memchr asks)
/// and this process again after: ~10 `cpuid`s of ~8 us each in a VM.
fn prime_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    let _ = std::arch::is_x86_feature_detected!("avx2");
}

/// Remove the sandboxes whose owner process is gone (for `prune`; `sandbox
/// ls` does the same through the listing). Returns their ids.
pub fn remove_dead(store: &Store) -> Result<Vec<String>, CliError> {
    SandboxManager::new(store, launcher()?)
        .remove_dead()
        .map_err(classify)
}

/// Say so when only the caller's own ID is mapped.
pub fn warn_single_id(manager: &SandboxManager) {
    if let Some(w) = manager.id_mapping().single_id_warning() {
        eprintln!("cairn: warning: {w}");
    }
}

/// The manager with the ID mapping `--userns` asks for.
pub fn with_userns<'s>(
    manager: SandboxManager<'s>,
    security: &SecurityArgs,
) -> Result<SandboxManager<'s>, CliError> {
    Ok(match security.id_mapping()? {
        Some(mapping) => manager.with_id_mapping(mapping),
        None => manager,
    })
}

// Options shared by `run` and `sandbox exec`.
#[derive(Args)]
pub struct ProcessArgs {
    /// Set an environment variable (KEY=VALUE), repeatable
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// User (name or uid, with optional :group) to run as
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the sandbox
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Kill the command and everything it started after this many seconds
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
}

impl ProcessArgs {
    pub fn exec_options(self, argv: Argv) -> Result<ExecOptions, CliError> {
        for e in &self.env {
            if !e.contains('=') || e.starts_with('=') {
                return Err(CliError::bad_input(format!(
                    "--env {e:?}: expected KEY=VALUE"
                )));
            }
        }
        let timeout = match self.timeout {
            Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(CliError::bad_input(format!(
                    "--timeout {t}: expected a positive number of seconds"
                )))
            }
            None => None,
        };
        Ok(ExecOptions {
            argv,
            env: self.env,
            user: self.user,
            workdir: self.workdir,
            timeout,
            ..ExecOptions::default()
        })
    }
}

/// Pass the command's exit code through, as Docker does.
pub fn finish(manager: &SandboxManager, outcome: RunOutcome) -> Result<(), CliError> {
    if let Some(failure) = &outcome.failure {
        eprintln!("cairn: {}", failure.message());
    }
    if outcome.timed_out {
        eprintln!("cairn: timed out; every process of the sandbox was killed");
    }
    if outcome.exit_code != 0 {
        if let Some(w) = manager.id_mapping().single_id_warning() {
            eprintln!("cairn: note: the command failed in a sandbox with a single ID: {w}");
        }
    }
    match outcome.exit_code {
        0 => Ok(()),
        code => Err(CliError::exit_code(code)),
    }
}

#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox from an image; prints its id alone on the last line
    Create(CreateArgs),
    /// Run a command in a sandbox's current filesystem
    Exec(ExecArgs),
    /// Commit a sandbox's changes as a new image
    Commit(CommitArgs),
    /// List sandboxes
    Ls(LsArgs),
    /// Remove sandboxes
    Rm(RmArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Image to start from (name, digest, or id prefix in the store)
    image: String,
    /// Name the sandbox (usable wherever an id is)
    #[arg(long)]
    name: Option<String>,
    /// CPU cores (cgroup v2 cpu.max; a warning says why when it cannot be applied)
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory in GB of 2^30 bytes (cgroup v2 memory.max; a warning says why when it cannot be applied)
    #[arg(long)]
    memory: Option<f64>,
    /// Maximum number of processes in the sandbox (cgroup v2 pids.max, and RLIMIT_NPROC)
    #[arg(long)]
    pids: Option<u64>,
    /// Network: host (share the host's) or none (loopback only)
    #[arg(long, default_value = "host", value_parser = ["host", "none"])]
    network: String,
    #[command(flatten)]
    security: SecurityArgs,
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    process: ProcessArgs,
    /// Sandbox id, id prefix or name
    id: String,
    /// Command and arguments (`--` before them is optional)
    #[arg(
        required = true,
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

#[derive(Args)]
pub struct CommitArgs {
    /// Sandbox id, id prefix or name
    id: String,
    /// NAME[:TAG] for the new image
    name: String,
    /// Layer compression
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
    compression: String,
}

#[derive(Args)]
pub struct LsArgs {
    /// Output format
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
    /// Print only the ids
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args)]
pub struct RmArgs {
    /// Sandbox ids, id prefixes or names
    #[arg(required = true)]
    ids: Vec<String>,
}

pub fn sandbox(root: Option<&Path>, cmd: SandboxCommand) -> Result<(), CliError> {
    let store = open_store(root)?;
    let manager = SandboxManager::new(&store, launcher()?);
    match cmd {
        SandboxCommand::Create(a) => {
            for (flag, v) in [("--cpu", a.cpu), ("--memory", a.memory)] {
                if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    return Err(CliError::bad_input(format!(
                        "{flag} must be a positive number"
                    )));
                }
            }
            let resources = Resources {
                cpu: a.cpu,
                memory_gb: a.memory,
                pids: a.pids,
                not_applied: vec![],
            };
            let opts = CreateOptions {
                name: a.name,
                network: a.network.parse::<Network>().map_err(CliError::bad_input)?,
                resources,
                ephemeral: false,
                security: a.security.security()?,
            };
            let manager = with_userns(manager, &a.security)?;
            let record = manager.create(&a.image, opts).map_err(classify)?;
            warn_single_id(&manager);
            println!("{}", record.id);
            Ok(())
        }
        SandboxCommand::Exec(a) => {
            let opts = a.process.exec_options(Argv::Direct(a.command))?;
            finish(&manager, manager.exec(&a.id, opts).map_err(classify)?)
        }
        SandboxCommand::Commit(a) => {
            let digest = manager
                .commit(
                    &a.id,
                    &a.name,
                    a.compression
                        .parse::<Compression>()
                        .map_err(CliError::bad_input)?,
                )
                .map_err(classify)?;
            println!("{digest}");
            Ok(())
        }
        SandboxCommand::Ls(a) => {
            let records = manager.list().map_err(classify)?;
            if a.quiet {
                records.iter().for_each(|r| println!("{}", r.id));
                return Ok(());
            }
            match a.format.as_str() {
                "json" => {
                    let text = serde_json::to_string_pretty(&records).map_err(CliError::failed)?;
                    println!("{text}");
                }
                "table" => {
                    println!(
                        "{:<14} {:<16} {:<32} {:<21}",
                        "ID", "NAME", "IMAGE", "CREATED"
                    );
                    for r in records {
                        let id: String = r.id.chars().take(12).collect();
                        println!(
                            "{id:<14} {:<16} {:<32} {:<21}",
                            r.name.unwrap_or_default(),
                            r.image,
                            r.created
                        );
                    }
                }
                other => {
                    return Err(CliError::bad_input(format!(
                        "--format {other:?}: expected table or json"
                    )))
                }
            }
            Ok(())
        }
        SandboxCommand::Rm(a) => {
            // Every argument must be able to name a sandbox before any goes.
            for id in &a.ids {
                if let Some(reason) = cairn::sandbox::names::problem(id) {
                    return Err(CliError::bad_input(format!(
                        "{id:?} cannot name a sandbox: {reason}"
                    )));
                }
            }
            for id in &a.ids {
                manager.remove(id).map_err(classify)?;
                println!("{id}");
            }
            Ok(())
        }
    }
}
