//! `cairn`: the command-line face of the Cairn library.
//!
//! Each subcommand lives in its own module; `main` only parses flags,
//! installs the log subscriber, dispatches, and turns errors into the exit
//! codes of the CLI contract (0 ok, 1 the command failed, 2 bad input;
//! `run`: 125 for Cairn's own errors, else the command's code).

mod build_cmd;
mod docs_cmd;
mod exit;
mod info_cmd;
mod inspect_cmd;
mod logging;
mod parse;
mod registry_cmds;
mod run_cmd;
mod sandbox_cmds;
mod security_args;
mod snapshot_cmds;
mod store_cmds;
mod transfer_progress;
mod tree;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Daemonless, rootless OCI image builder and snapshot store",
    after_help = "Exit codes: 0 ok, 1 the command failed, 2 bad input; `run` exits 125 for \
                  Cairn's own errors and with the command's code otherwise."
)]
pub struct Cli {
    /// Store directory (default: $XDG_DATA_HOME/cairn, ~/.local/share/cairn, or /var/lib/cairn as root)
    #[arg(long, global = true, env = "CAIRN_STORE", value_name = "DIR")]
    store: Option<PathBuf>,

    /// Log level of the library's messages on stderr (RUST_LOG, when set, wins)
    #[arg(long, global = true, value_enum, default_value = "warn")]
    log_level: logging::Level,

    #[command(subcommand)]
    command: Command,
}

/// `defer`: a subcommand's flags are built only when it is the one parsed
/// (see `tree.rs`). A flattened `Args` struct's doc comment would then
/// replace the variant's about: keep those structs' comments plain (`//`).
#[derive(Subcommand)]
#[command(defer = true)]
enum Command {
    /// Build an image from a Dockerfile (or Containerfile) and a context
    Build(build_cmd::BuildArgs),
    /// Run a command in a new sandbox from an image
    Run(run_cmd::RunArgs),
    /// List images in the store
    Images(store_cmds::ImagesArgs),
    /// Pull an image from a registry into the store
    Pull(registry_cmds::PullArgs),
    /// Push a store image to a registry (or to the registries of regions)
    Push(registry_cmds::PushArgs),
    /// Give an image another name
    Tag(store_cmds::TagArgs),
    /// Remove image names (blobs are freed by prune)
    Rmi(store_cmds::RmiArgs),
    /// Show an image, sandbox or snapshot as JSON (or one field of it)
    Inspect(inspect_cmd::InspectArgs),
    /// Show the layers of an image and the steps that made them
    History(inspect_cmd::HistoryArgs),
    /// Write an image to oci:DIR, oci-archive:FILE or docker-archive:FILE
    Export(store_cmds::ExportArgs),
    /// Read images from oci:DIR, oci-archive:FILE or docker-archive:FILE
    Import(store_cmds::ImportArgs),
    /// Remove everything no name, snapshot, sandbox or kept cache entry reaches
    Prune(store_cmds::PruneArgs),
    /// Check every invariant of the store; exit 1 listing what is wrong
    Fsck(store_cmds::FsckArgs),
    /// Print what a detached (`run -d`) command wrote so far
    Logs(run_cmd::LogsArgs),
    /// Long-lived sandboxes: create, exec, commit, ls, rm
    #[command(subcommand)]
    Sandbox(sandbox_cmds::SandboxCommand),
    /// Snapshots: versioned images with a record, for sandboxes to start from
    Snapshot(snapshot_cmds::SnapshotArgs),
    /// Store credentials for a registry
    Login(registry_cmds::LoginArgs),
    /// Remove stored credentials for a registry (or all of them)
    Logout(registry_cmds::LogoutArgs),
    /// Parse a Dockerfile and print its syntax tree
    Parse(parse::ParseArgs),
    /// Show what this machine offers Cairn: store, IDs, cgroups, overlay, seccomp
    Info(info_cmd::InfoArgs),
    /// Show the version of cairn
    Version(info_cmd::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion(docs_cmd::CompletionArgs),
    /// The runner of a `run -d` command
    #[command(name = "__detached", hide = true)]
    Detached(run_cmd::DetachedArgs),
    /// Try a user namespace with an overlay mount (for `info`)
    #[command(name = "__probe", hide = true)]
    Probe(info_cmd::ProbeArgs),
    /// Write man pages, or print docs/cli.md (for packaging and CI)
    #[command(name = "__docs", hide = true)]
    Docs(docs_cmd::DocsArgs),
}

pub use tree::command;

/// `cairn snapshot list | head -1`: when the reader goes away, `println!`
/// panics with "failed printing to stdout: Broken pipe". SIGPIPE stays
/// ignored (the registry's sockets and the sandbox helper's pipes must get
/// EPIPE as an error, not kill the process), so the panic hook turns that
/// one panic into the quiet exit a shell tool gives: status 141 (128 +
/// SIGPIPE), nothing on stderr. Every other panic keeps the default report.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    // First, before any thread: this process may be a sandbox helper.
    cairn::init();
    quiet_broken_pipe();
    let parsed = command()
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0; usage errors go to stderr with 2.
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::SUCCESS;
            }
            return ExitCode::from(if invoked_run() { 125 } else { 2 });
        }
    };
    logging::install(cli.log_level);
    let root = cli.store.as_deref();
    let result = match cli.command {
        Command::Parse(args) => parse::run(args),
        Command::Images(args) => store_cmds::images(root, args),
        Command::Tag(args) => store_cmds::tag(root, args),
        Command::Rmi(args) => store_cmds::rmi(root, args),
        Command::Export(args) => store_cmds::export(root, args),
        Command::Import(args) => store_cmds::import(root, args),
        Command::Prune(args) => store_cmds::prune(root, args),
        Command::Fsck(args) => store_cmds::fsck(root, args),
        Command::Build(args) => build_cmd::run(root, args),
        Command::Run(args) => run_cmd::run(root, args).map_err(exit::CliError::into_run_error),
        Command::Sandbox(cmd) => sandbox_cmds::sandbox(root, cmd),
        Command::Snapshot(args) => snapshot_cmds::run(root, args),
        Command::Pull(args) => registry_cmds::pull(root, args),
        Command::Push(args) => registry_cmds::push(root, args),
        Command::Login(args) => registry_cmds::login(args),
        Command::Logout(args) => registry_cmds::logout(args),
        Command::Inspect(args) => inspect_cmd::inspect(root, args),
        Command::History(args) => inspect_cmd::history(root, args),
        Command::Info(args) => info_cmd::info(root, args),
        Command::Version(args) => info_cmd::version(args),
        Command::Completion(args) => docs_cmd::completion(args),
        Command::Docs(args) => docs_cmd::docs(args),
        Command::Probe(args) => info_cmd::probe_cmd(args),
        Command::Logs(args) => run_cmd::logs(root, args),
        Command::Detached(args) => run_cmd::detached(root, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// Whether the command line names `run` (for the exit code of a usage error,
/// which clap reports before any subcommand is known).
fn invoked_run() -> bool {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--store" | "--log-level" => {
                args.next();
            }
            s if s.starts_with('-') => {}
            s => return s == "run",
        }
    }
    false
}
