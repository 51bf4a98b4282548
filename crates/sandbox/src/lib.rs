//! Rootless sandboxes: a command in its own user, mount, PID, UTS and IPC
//! namespaces (and network, when asked), over an overlay of image layers.
//!
//! Binaries that use this crate must call [`init_hook`] first thing in
//! `main`: sandboxes are entered by re-executing the binary as a helper.

pub mod caps;
pub mod cgroup;
pub mod chmod;
mod console;
pub mod exec_io;
pub mod fileop;
pub mod fscopy;
pub mod helper;
pub mod idmap;
pub mod launch;
pub mod manager;
mod masks;
pub mod names;
mod netns;
pub mod owners;
pub mod protocol;
pub mod reap;
pub mod rootfs;
pub mod seccomp;
mod selfmap;
pub mod spawn;
pub mod spec;
pub mod subid;
mod tasks;
pub mod users;

pub use exec_io::{ExecOutput, StdStream};
pub use helper::init_hook;
pub use launch::{
    CancelToken, EarlyHelper, Extracted, Launcher, RunControl, RunOutcome, RunStdio, TaskRemover,
    UpperLayerWriter,
};
pub use protocol::{FileOp, Task};
pub use spec::{
    BindFile, ExtraMount, MountSource, Network, Ownership, ProcessSpec, RootfsSpec, RunSpec,
    Security,
};
pub use tasks::remove_empty;

/// Errors of the caller's side of a sandbox run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        source: nix::errno::Errno,
    },
    #[error("encoding the sandbox spec: {0}")]
    Spec(serde_json::Error),
    #[error("{tool} refused the ID mapping: {message} (check /etc/subuid and /etc/subgid)")]
    IdMap { tool: String, message: String },
    #[error("compiling the seccomp filter: {0}")]
    Seccomp(String),
    #[error("sandbox task failed: {0}")]
    TaskFailed(String),
    /// The helper is this very binary, and its `main` never called the init
    /// hook: the re-executed copy would run `main` again instead of the sandbox.
    #[error("{helper}: this binary is its own sandbox helper but never called cairn::init() (cairn_sandbox::init_hook) first thing in main; call it there, or point the launcher at a binary that does")]
    NotInitialised { helper: std::path::PathBuf },
    #[error("sandbox helper failed ({status}): {message}")]
    HelperFailed { status: String, message: String },
    #[error("moving the sandbox into cgroup {}: {source}", path.display())]
    Cgroup {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// An archive or layer broke an extraction limit, or a tree being
    /// committed the depth limit; nothing of it is kept.
    #[error("{archive}: {exceeded}")]
    ExtractLimit {
        archive: String,
        exceeded: cairn_layer::LimitExceeded,
    },
    /// `CAIRN_MAX_EXTRACT_SIZE` or `CAIRN_MAX_EXTRACT_ENTRIES` does not parse.
    #[error(transparent)]
    BadLimit(#[from] cairn_layer::limits::BadLimit),
    /// Storing what a task wrote (a committed layer's blob) failed.
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
}

impl SandboxError {
    /// True when the input is at fault (a bomb, a bad limit): exit code 2.
    pub fn is_bad_input(&self) -> bool {
        match self {
            SandboxError::Store(e) => e.is_bad_input(),
            _ => matches!(
                self,
                SandboxError::ExtractLimit { .. } | SandboxError::BadLimit(_)
            ),
        }
    }
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn sys(context: impl Into<String>, source: nix::errno::Errno) -> Self {
        SandboxError::Sys {
            context: context.into(),
            source,
        }
    }
}
