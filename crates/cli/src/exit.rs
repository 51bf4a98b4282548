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

    /// The command ran and failed (exit 1).
    pub fn failed(message: impl fmt::Display) -> Self {
        CliError {
            code: 1,
            message: message.to_string(),
        }
    }

    /// End with `code` and nothing more to say (the exit code of a command
    /// run in a sandbox, passed through as Docker does).
    pub fn exit_code(code: i32) -> Self {
        CliError {
            code: code.clamp(0, 255) as u8,
            message: String::new(),
        }
    }

    /// Print the message to stderr and give the exit code.
    pub fn report(&self) -> ExitCode {
        if !self.message.is_empty() {
            eprintln!("cairn: {}", self.message);
        }
        ExitCode::from(self.code)
    }
}
