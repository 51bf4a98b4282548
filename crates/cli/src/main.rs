//! `cairn`: the command-line face of the Cairn library.
//!
//! Each subcommand lives in its own module; `main` only parses flags,
//! dispatches, and turns errors into the exit codes of the CLI contract
//! (0 ok, 1 the command failed, 2 bad input).

mod build_cmd;
mod exit;
mod parse;
mod registry_cmds;
mod sandbox_cmds;
mod security_args;
mod snapshot_cmds;
mod store_cmds;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Daemonless, rootless OCI image builder and snapshot store"
)]
struct Cli {
    /// Store directory (default: $XDG_DATA_HOME/cairn, ~/.local/share/cairn, or /var/lib/cairn as root)
    #[arg(long, global = true, env = "CAIRN_STORE")]
    store: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse a Dockerfile and print its syntax tree
    Parse(parse::ParseArgs),
    /// List images in the store
    Images(store_cmds::ImagesArgs),
    /// Give an image another name
    Tag(store_cmds::TagArgs),
    /// Remove image names (blobs are freed by prune)
    Rmi(store_cmds::RmiArgs),
    /// Write an image to oci:DIR, oci-archive:FILE or docker-archive:FILE
    Export(store_cmds::ExportArgs),
    /// Read images from oci:DIR, oci-archive:FILE or docker-archive:FILE
    Import(store_cmds::ImportArgs),
    /// Remove everything no name, snapshot, sandbox or kept cache entry reaches
    Prune(store_cmds::PruneArgs),
    /// Check every invariant of the store; exit 1 listing what is wrong
    Fsck(store_cmds::FsckArgs),
    /// Build an image from a Dockerfile and a context
    Build(build_cmd::BuildArgs),
    /// Run a command in a new sandbox from an image
    Run(sandbox_cmds::RunArgs),
    /// Snapshots: versioned images with a record, for sandboxes to start from
    Snapshot(snapshot_cmds::SnapshotArgs),
    /// Pull an image from a registry into the store
    Pull(registry_cmds::PullArgs),
    /// Push a store image to a registry (or to the registries of regions)
    Push(registry_cmds::PushArgs),
    /// Store credentials for a registry
    Login(registry_cmds::LoginArgs),
    /// Remove stored credentials for a registry
    Logout(registry_cmds::LogoutArgs),
    /// Long-lived sandboxes: create, exec, commit, ls, rm
    #[command(subcommand)]
    Sandbox(sandbox_cmds::SandboxCommand),
}

fn main() -> ExitCode {
    // First, before any thread: this process may be a sandbox helper.
    cairn::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0; usage errors go to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let _ = &cli.store;
    let result = match cli.command {
        Command::Parse(args) => parse::run(args),
        Command::Images(args) => store_cmds::images(cli.store.as_deref(), args),
        Command::Tag(args) => store_cmds::tag(cli.store.as_deref(), args),
        Command::Rmi(args) => store_cmds::rmi(cli.store.as_deref(), args),
        Command::Export(args) => store_cmds::export(cli.store.as_deref(), args),
        Command::Import(args) => store_cmds::import(cli.store.as_deref(), args),
        Command::Prune(args) => store_cmds::prune(cli.store.as_deref(), args),
        Command::Fsck(args) => store_cmds::fsck(cli.store.as_deref(), args),
        Command::Build(args) => build_cmd::run(cli.store.as_deref(), args),
        Command::Run(args) => sandbox_cmds::run(cli.store.as_deref(), args),
        Command::Sandbox(cmd) => sandbox_cmds::sandbox(cli.store.as_deref(), cmd),
        Command::Snapshot(args) => snapshot_cmds::run(cli.store.as_deref(), args),
        Command::Pull(args) => registry_cmds::pull(cli.store.as_deref(), args),
        Command::Push(args) => registry_cmds::push(cli.store.as_deref(), args),
        Command::Login(args) => registry_cmds::login(args),
        Command::Logout(args) => registry_cmds::logout(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
