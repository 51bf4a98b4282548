//! `cairn parse`: print a Dockerfile's syntax tree.

use crate::exit::CliError;
use clap::Args;
use std::io::Read;
use std::path::PathBuf;

#[derive(Args)]
pub struct ParseArgs {
    /// The Dockerfile to read ("-" for standard input)
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: PathBuf,
    /// Output format (only "json")
    #[arg(long, default_value = "json", value_parser = ["json"])]
    pub format: String,
}

pub fn run(args: ParseArgs) -> Result<(), CliError> {
    let is_stdin = args.file.as_os_str() == "-";
    let name = if is_stdin {
        "<stdin>".to_string()
    } else {
        args.file.display().to_string()
    };
    let bytes = if is_stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::bad_input(format!("{name}: {e}")))?;
        buf
    } else {
        std::fs::read(&args.file).map_err(|e| CliError::bad_input(format!("{name}: {e}")))?
    };
    // BuildKit reads Dockerfiles as bytes; invalid UTF-8 is replaced rather than refused.
    let text = String::from_utf8_lossy(&bytes);
    let doc =
        cairn::dockerfile::parse(&text).map_err(|e| CliError::bad_input(format!("{name}:{e}")))?;
    println!("{}", cairn::dockerfile::to_json(&doc));
    Ok(())
}
