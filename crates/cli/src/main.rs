//! `cairn`: the command-line face of the Cairn library.
//!
//! Each subcommand lives in its own module; `main` only parses flags,
//! dispatches, and turns errors into the exit codes of the CLI contract
//! (0 ok, 1 the command failed, 2 bad input).

mod exit;
mod parse;

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
}

fn main() -> ExitCode {
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
