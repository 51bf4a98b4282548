//! The CLI's error type: a message plus the exit code the contract assigns.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

/// An error on its way out of the CLI.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
    /// Cairn's own failure (not a sandboxed command's exit code passed through).
    own: bool,
}

impl CliError {
    /// Bad input: unparsable file, bad flag value, unknown image (exit 2).
    pub fn bad_input(message: impl fmt::Display) -> Self {
        CliError {
            code: 2,
            message: message.to_string(),
            own: true,
        }
    }

    /// The message alone, for tests of what an error says.
    #[cfg(test)]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The command ran and failed (exit 1).
    pub fn failed(message: impl fmt::Display) -> Self {
        CliError {
            code: 1,
            message: message.to_string(),
            own: true,
        }
    }

    /// End with `code` and nothing more to say (the exit code of a command
    /// run in a sandbox, passed through as Docker does).
    pub fn exit_code(code: i32) -> Self {
        CliError {
            code: code.clamp(0, 255) as u8,
            message: String::new(),
            own: false,
        }
    }

    /// `cairn run`'s contract, as `docker run`'s: Cairn's own failures exit
    /// 125 so that a script can tell them from the command's own codes.
    pub fn into_run_error(mut self) -> Self {
        if self.own {
            self.code = 125;
        }
        self
    }

    /// Wrap an io error with what Cairn was doing.
    pub fn io(doing: impl fmt::Display, e: std::io::Error) -> Self {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => "not found",
            std::io::ErrorKind::PermissionDenied => "permission denied",
            _ => "",
        };
        let text = if hint.is_empty() {
            e.to_string()
        } else {
            hint.to_string()
        };
        CliError::bad_input(format!("{doing}: {text}"))
    }

    /// Print the message to stderr and give the exit code.
    pub fn report(&self) -> ExitCode {
        if !self.message.is_empty() {
            eprintln!("cairn: {}", self.message);
        }
        ExitCode::from(self.code)
    }
}

/// Library errors that know whether the caller's input was at fault.
pub trait InputFault: fmt::Display {
    fn is_bad_input(&self) -> bool;
}

macro_rules! input_fault {
    ($($t:ty),*) => {$(
        impl InputFault for $t {
            fn is_bad_input(&self) -> bool {
                <$t>::is_bad_input(self)
            }
        }
    )*};
}
input_fault!(
    cairn::store::StoreError,
    cairn::sandbox::manager::ManagerError,
    cairn::registry::RegistryError,
    cairn::snapshot::ServiceError,
    cairn::build::BuildError
);

/// Exit 2 when the input was at fault, else 1.
pub fn classify<E: InputFault>(e: E) -> CliError {
    if e.is_bad_input() {
        CliError::bad_input(e)
    } else {
        CliError::failed(e)
    }
}

/// The store at `--store` / `CAIRN_STORE` / the default root, opened shared.
pub fn open_store(root: Option<&Path>) -> Result<cairn::store::Store, CliError> {
    let root = cairn::store::layout::default_root(root);
    cairn::store::Store::open(&root)
        .map_err(|e| CliError::failed(format!("opening store {}: {e}", root.display())))
}
