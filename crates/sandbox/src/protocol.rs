//! The little protocol between the caller and its helper process.
//!
//! The caller writes the length-prefixed JSON spec on the "down" pipe, then a
//! single byte once the ID maps are written. The helper writes on the "up"
//! pipe: `U` when it has unshared (maps can be written), then at most one
//! report line if setup or exec failed. EOF with no report means the command
//! itself ran; its status is the helper's exit status.

use serde::{Deserialize, Serialize};

/// Env var through which the helper learns it is one, and its pipe fds ("DOWN,UP").
pub const HELPER_ENV: &str = "_CAIRN_SANDBOX_HELPER";

/// Byte the helper sends once it is in its new namespaces.
pub const UNSHARED: u8 = b'U';
/// Byte the caller sends once the ID maps are in place.
pub const MAPPED: u8 = b'M';

/// Why a sandbox could not run its command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Failure {
    /// Setting up the sandbox failed (Docker's 125).
    Setup(String),
    /// The command was found but could not be executed (Docker's 126).
    CannotExec(String),
    /// The command was not found (Docker's 127).
    NotFound(String),
}

impl Failure {
    /// The exit code Docker gives the same failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Setup(_) => 125,
            Failure::CannotExec(_) => 126,
            Failure::NotFound(_) => 127,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Setup(m) | Failure::CannotExec(m) | Failure::NotFound(m) => m,
        }
    }
}
