//! The CLI's error type: a message plus the exit code the contract assigns.

use std::fmt;
use std::process::ExitCode;

/// An error on its way out of the CLI.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    /// Bad input: unparsable file, bad flag value, unknown image (exit 2).
    pub fn bad_input(message: impl fmt::Display) -> Self {
        CliError {
            code: 2,
            message: message.to_string(),
        }
    }

    /// Print the message to stderr and give the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("cairn: {}", self.message);
        ExitCode::from(self.code)
    }
}
