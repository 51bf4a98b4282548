//! What a sandbox run is asked to do; serialised to the helper process.

use crate::idmap::IdMapping;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Network of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Share the caller's network namespace (Docker's RUN default).
    #[default]
    Host,
    /// A namespace of its own with only loopback, up.
    None,
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(Network::Host),
            "none" => Ok(Network::None),
            other => Err(format!(
                "unknown network mode {other:?} (expected host or none)"
            )),
        }
    }
}

/// The filesystem a sandbox runs in: overlay of read-only layer dirs with a
/// writable upper dir whose contents are the sandbox's changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsSpec {
    /// Extracted layer dirs, lowest first (the image's layer order).
    pub layers: Vec<PathBuf>,
    /// Writable upper dir (must exist, empty for a fresh sandbox).
    pub upper: PathBuf,
    /// Overlay work dir on the same filesystem as `upper`.
    pub work: PathBuf,
    /// Where the merged tree is mounted (inside the sandbox's mount namespace only).
    pub merged: PathBuf,
}

/// The process to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// argv; argv[0] is looked up in the container's PATH when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Working directory inside the container ("/" when empty); created if missing.
    pub cwd: String,
    /// `user[:group]` by name or number, resolved in the image's /etc/passwd and /etc/group.
    pub user: String,
}

/// Everything the helper needs to set up and run one command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub rootfs: RootfsSpec,
    pub process: ProcessSpec,
    pub network: Network,
    pub hostname: String,
    /// Host files bind-mounted over container paths: the generated
    /// `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`. Being mounts, they
    /// never reach the upper dir and so never a layer.
    pub bind_files: Vec<BindFile>,
    /// Mounts a build step asks for (`RUN --mount`), set up after the
    /// rootfs and in this order. Mount points they need are created in the
    /// upper dir; the caller removes the empty ones afterwards.
    #[serde(default)]
    pub mounts: Vec<ExtraMount>,
    pub id_mapping: IdMapping,
    /// Cap on processes in the sandbox (RLIMIT_NPROC of the sandbox's users).
    pub pids_limit: Option<u64>,
}

/// A host file mounted over a path in the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindFile {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// A mount over a path in the container, beyond the rootfs and /etc files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraMount {
    /// Absolute path inside the container (symlinks resolve inside it).
    pub target: String,
    pub source: MountSource,
    pub read_only: bool,
}

/// What an [`ExtraMount`] puts at its target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountSource {
    /// A host file or directory, bound as it is: writes reach it (a cache
    /// mount's dir). With `owner`, the helper first gives it that container
    /// owner and mode, inside the user namespace where those IDs are its own.
    Host {
        path: PathBuf,
        owner: Option<Ownership>,
    },
    /// Lower dirs (lowest first) under a private upper dir, mounted at `at`,
    /// and `subpath` of that tree bound to the target: the process may write,
    /// but its writes land in `upper` and go when the caller drops it.
    Overlay {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        at: PathBuf,
        subpath: String,
    },
    /// A fresh tmpfs; `size` is passed to the kernel as is (bytes, or k/m/g).
    Tmpfs { size: Option<String> },
}

/// Container owner and permission bits for a mount's source.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}
