//! `cairn parse`: print a Dockerfile's syntax tree.

use crate::exit::CliError;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ParseArgs {
    /// The Dockerfile to read ("-" for standard input)
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: PathBuf,
    /// Output format
    #[arg(long, default_value = "json")]
    pub format: String,
}

pub fn run(args: ParseArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::bad_input(format!("{}: {e}", args.file.display())))?;
    let _ = text;
    Err(CliError::failed("parse: not implemented yet"))
}
