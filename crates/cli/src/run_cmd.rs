//! `cairn run [OPTIONS] IMAGE [COMMAND [ARG...]]`: a command in a new
//! sandbox, with `docker run`'s flags and exit codes (125 for Cairn's own
//! errors; 126/127 when the command cannot run; else the command's code).

mod detach;
pub(crate) mod options;
mod tty;

use crate::exit::{classify, open_store, CliError};
use crate::sandbox_cmds::{finish, launcher, warn_single_id, ProcessArgs};
use cairn::sandbox::idmap::IdMapping;
use cairn::sandbox::manager::{Argv, CreateOptions, Resources, SandboxManager};
use cairn::sandbox::{Network, RunStdio};
use cairn::store::image_config::{Field, RunConfig};
use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;

pub use detach::{detached, logs, DetachedArgs, LogsArgs};

// Limits and identity of the sandbox `run` creates. Flags that shape the
// sandbox (rather than the process) belong here.
#[derive(Args)]
pub struct SandboxOpts {
    /// Name the sandbox (for `sandbox exec|commit|rm` and `inspect`)
    #[arg(long)]
    name: Option<String>,
    /// Network: host (share the host's) or none (loopback only)
    #[arg(long, default_value = "host", value_parser = ["host", "none"])]
    network: String,
    /// CPU cores (cgroup v2 cpu.max; a warning says why when it cannot be applied)
    #[arg(long, value_name = "CPUS")]
    cpus: Option<f64>,
    /// Memory limit: a number of bytes with an optional unit b, k, m or g (e.g. 512m)
    #[arg(short = 'm', long, value_name = "BYTES")]
    memory: Option<String>,
    /// Maximum number of processes (cgroup v2 pids.max, and RLIMIT_NPROC)
    #[arg(long, value_name = "N")]
    pids_limit: Option<u64>,
}

// How the command is attached to this terminal.
#[derive(Args)]
pub struct AttachOpts {
    /// Run in the background: print the sandbox id and leave it for
    /// `sandbox exec|commit|rm` (output goes to `cairn logs ID`)
    #[arg(short = 'd', long, conflicts_with_all = ["interactive", "tty"])]
    detach: bool,
    /// Keep standard input open to the command (else it reads /dev/null)
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the command a pseudo-terminal (stdout and stderr both go to it)
    #[arg(short = 't', long)]
    tty: bool,
    /// Remove the sandbox when the command exits
    #[arg(long)]
    rm: bool,
}

#[derive(Args)]
#[command(
    override_usage = "cairn run [OPTIONS] IMAGE [COMMAND [ARG...]]",
    after_help = "Options go before IMAGE; everything after IMAGE is the command. \
                  `--` before the command is accepted too."
)]
pub struct RunArgs {
    #[command(flatten)]
    attach: AttachOpts,
    #[command(flatten)]
    sandbox: SandboxOpts,
    #[command(flatten)]
    process: ProcessArgs,
    #[command(flatten)]
    security: crate::security_args::SecurityArgs,
    /// Replace the image's ENTRYPOINT with this executable ("" clears it)
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Read environment variables from a file of KEY=VALUE lines (repeatable)
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// Bind a host path: /HOST/PATH:/CONTAINER/PATH[:ro|rw] (repeatable)
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:OPTS]")]
    volumes: Vec<String>,
    /// Image to run (name, digest, or id prefix in the store)
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Command and arguments (replace the image's CMD; ENTRYPOINT still applies)
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

pub fn run(root: Option<&Path>, args: RunArgs) -> Result<(), CliError> {
    let env = options::read_env_files(&args.env_files)?;
    let mounts = args
        .volumes
        .iter()
        .map(|v| options::parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let resources = Resources {
        cpu: args.sandbox.cpus,
        memory_gb: args
            .sandbox
            .memory
            .as_deref()
            .map(options::parse_memory)
            .transpose()?,
        pids: args.sandbox.pids_limit,
        not_applied: vec![],
    };
    let network: Network = args.sandbox.network.parse().map_err(CliError::bad_input)?;
    if args.attach.tty && args.attach.interactive && !std::io::stdin().is_terminal() {
        // As docker: a terminal's input must come from a terminal (a pipe's
        // end would never reach the command as an end of input).
        return Err(CliError::bad_input(
            "the input device is not a TTY: -i -t needs a terminal on stdin; drop -t to pipe input",
        ));
    }
    // This process exits once the command has ended (and its sandbox is
    // removed): the helper's exit is left to init, not to a reaper thread.
    cairn::sandbox::reap::leave_to_exit();
    let launcher = launcher()?;
    let mapping = match args.security.id_mapping()? {
        Some(mapping) => mapping,
        None => IdMapping::for_current_user(),
    };
    // A plain attached run's helper starts now, before the store is opened:
    // its fork, `unshare` and ID maps overlap the sandbox's creation, and it
    // takes the request once the sandbox exists (a detached run's runner
    // starts its own; a terminal's stdio is made after the create). On any
    // error before the exec it is dropped: killed and reaped.
    let early = match args.attach.detach || args.attach.tty {
        true => None,
        false => launcher.start_early(&mapping, plain_stdio(args.attach.interactive)),
    };
    let span = cairn::layer::timing::span("run.open_store");
    let store = open_store(root)?;
    drop(span);
    // This process holds `store.lock` until it exits: GC cannot run while
    // its `--rm` sandbox lives, so that sandbox needs no GC root.
    let manager = SandboxManager::new(&store, launcher)
        .ephemeral_kept_by_store_lock()
        .with_id_mapping(mapping);
    if let Some(name) = &args.sandbox.name {
        if manager.get(name).is_ok() {
            return Err(CliError::bad_input(format!(
                "the name {name:?} is already in use by a sandbox"
            )));
        }
    }
    let create = CreateOptions {
        name: args.sandbox.name.clone(),
        network,
        resources,
        // A detached sandbox outlives this process; its runner removes it for --rm.
        ephemeral: args.attach.rm && !args.attach.detach,
        security: args.security.security()?,
    };
    // Limits not applied are told by the library's warning (see logging).
    let span = cairn::layer::timing::span("run.create");
    let record = manager.create(&args.image, create).map_err(classify)?;
    drop(span);
    warn_single_id(&manager);
    let argv = argv(&record.config, args.entrypoint.as_deref(), args.command);
    let mut opts = args.process.exec_options(argv)?;
    // -e after --env-file: the later setting wins, as in docker.
    opts.env = [env, std::mem::take(&mut opts.env)].concat();
    opts.mounts = mounts;
    if args.attach.detach {
        let started = detach::spawn(&store, &record.id, opts, args.attach.rm, root);
        if started.is_err() {
            // Nothing runs in it: do not leave it behind.
            let _ = manager.remove(&record.id);
        }
        started?;
        println!("{}", record.id);
        return Ok(());
    }
    let mut tty = None;
    opts.stdio = if args.attach.tty {
        let t = tty::Tty::open(args.attach.interactive)?;
        let stdio = t.stdio()?;
        tty = Some(t);
        stdio
    } else {
        plain_stdio(args.attach.interactive)
    };
    let span = cairn::layer::timing::span("run.exec");
    let result = manager.exec_with(&record.id, opts, early).map_err(classify);
    drop(span);
    if let Some(t) = tty {
        t.finish();
    }
    if args.attach.rm {
        let _span = cairn::layer::timing::span("run.remove");
        manager.remove(&record.id).map_err(classify)?;
    }
    finish(&manager, result?)
}

/// The stdio of a run without a terminal: this process's stdout and
/// stderr; stdin too with `-i`, else /dev/null.
fn plain_stdio(interactive: bool) -> RunStdio {
    RunStdio {
        stdin: Some(match interactive {
            true => Stdio::inherit(),
            false => Stdio::null(),
        }),
        stdout: None,
        stderr: None,
        ..RunStdio::default()
    }
}

/// What to run, as `docker run` decides: `--entrypoint` replaces the
/// image's ENTRYPOINT and drops its CMD; COMMAND replaces CMD.
fn argv(config: &Field<RunConfig>, entrypoint: Option<&str>, command: Vec<String>) -> Argv {
    match entrypoint {
        None if command.is_empty() => Argv::ImageDefault,
        None => Argv::ReplaceCmd(command),
        Some("") if command.is_empty() => Argv::Direct(config.or_default().cmd.or_default()),
        Some("") => Argv::Direct(command),
        Some(e) => Argv::Direct([vec![e.to_string()], command].concat()),
    }
}
