//! The little protocol between the caller and its helper process.
//!
//! The caller writes a length-prefixed JSON [`Request`] on the "down" pipe
//! (unless the helper is a fork of the caller, which has it already), then a
//! single byte once the ID maps are written. The helper writes on the "up"
//! pipe: `U` when it has unshared (maps can be written), then at most one
//! JSON message ending in a newline: for a run, a [`Failure`] if setup or
//! exec failed, or, once the command has ended and every process of the
//! sandbox is reaped, PID 1's [`Exited`] with its exit code (so the caller
//! need not wait for the namespaces' teardown, which the helper's own exit
//! waits for); EOF with no message means PID 1 died (its status is then the
//! helper's exit status). For a task, its [`TaskReply`].

use crate::idmap::IdMapping;
use crate::spec::RunSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

/// PID 1's last word: the command ended with `code` (its own exit code, or
/// 128+N when signal N killed it) and no process of the sandbox is left.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exited {
    pub code: i32,
    /// CLOCK_MONOTONIC (ns) when the command's exec had succeeded (or the
    /// file operation started): the caller's measure of its start latency.
    #[serde(default)]
    pub exec_ns: u64,
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for the caller and the
/// sandbox (no time namespace is made).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// What the helper is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Run a command in a full sandbox; with `terminal`, its stdin is a
    /// terminal it takes as its controlling one (see `console.rs`).
    Run { spec: Box<RunSpec>, terminal: bool },
    /// Set up the sandbox as for a run, then, as the run's user, do one
    /// file operation instead of executing a command (no shell needed).
    FileOp { spec: Box<RunSpec>, op: FileOp },
    /// Do a filesystem task as root of a user namespace with this mapping:
    /// the way an unprivileged caller handles files owned by its subordinate IDs.
    Task { id_mapping: IdMapping, task: Task },
}

impl Request {
    pub fn id_mapping(&self) -> &IdMapping {
        match self {
            Request::Run { spec, .. } | Request::FileOp { spec, .. } => &spec.id_mapping,
            Request::Task { id_mapping, .. } => id_mapping,
        }
    }
}

/// A file operation inside a sandbox, done by its PID 1's child as the
/// run's user after the rootfs is entered. Paths resolve inside the
/// sandbox's root (`openat2(RESOLVE_IN_ROOT)`): no symlink or `..` leads
/// out of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum FileOp {
    /// Write stdin into `path` (created, or truncated), with `mode`.
    Write { path: String, mode: u32 },
    /// Copy the regular file `path` to stdout.
    Read { path: String },
}

/// Filesystem work that needs the sandbox's ID mapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Task {
    /// Delete a directory tree whose files may belong to subordinate IDs.
    RemoveTree(PathBuf),
    /// Remove each path, in order, if it is an empty directory or an empty
    /// file (mount points a run needed); anything else stays.
    RemoveEmpty(Vec<PathBuf>),
    /// Extract a layer blob into `dest` in overlay form (a lowerdir), owners
    /// as the namespace sees them: container IDs land on the mapped host IDs.
    /// Replies with the diff id read from the stream, or with
    /// `limit_exceeded` when the blob breaks one of `limits`. The launcher
    /// opens `blob` and hands it to the helper as stdin.
    ExtractLayer {
        blob: PathBuf,
        dest: PathBuf,
        #[serde(default)]
        limits: cairn_layer::ExtractLimits,
        /// Also reply with `tree`, the digest of the extracted dir's
        /// deterministic tar (what `fsck --full` compares with later).
        #[serde(default)]
        tree_digest: bool,
    },
    /// Reply with `tree`: the digest of the deterministic, uncompressed tar
    /// of a layer dir in overlay form (`fsck --full`).
    TreeDigest(PathBuf),
    /// Write the diff in an overlay upper dir as a layer to the helper's
    /// stdout. Replies with the layer's digests and sizes.
    WriteLayer {
        upper: PathBuf,
        compression: String,
        timestamp: Option<i64>,
    },
    /// Copy paths out of a stack of layer dirs (read-only overlay at
    /// `mountpoint`, so whiteouts and opaque dirs hold) into `dest`, keeping
    /// owners unless `owner` is given (`COPY --from`). A dir source copies its
    /// contents into `dest`; a file goes to `dest/NAME` when `dest_is_dir`.
    CopyFromLayers {
        layers: Vec<PathBuf>,
        mountpoint: PathBuf,
        sources: Vec<String>,
        dest: PathBuf,
        dest_is_dir: bool,
        owner: Option<(u32, u32)>,
        chmod: Option<crate::chmod::Chmod>,
    },
}

/// The outcome of a [`Task`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TaskReply {
    Done(serde_json::Value),
    Failed(String),
}
