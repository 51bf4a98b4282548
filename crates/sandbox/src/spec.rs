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
    /// The upper dir is thrown away after the run (`run --rm`) or made
    /// durable by whoever keeps it (a build step's commit syncs the layer
    /// dir it adopts): mount the overlay `volatile`, so its unmount does not
    /// sync the whole host filesystem.
    #[serde(default)]
    pub volatile: bool,
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
    /// Capabilities, syscall filter and no_new_privs of the command.
    #[serde(default)]
    pub security: Security,
}

/// What the command may do to the kernel: see docs/security.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// Capability bit mask of the command (bounding set; permitted and
    /// effective for container root). Docker's default 14 unless changed:
    /// [`Security::with_caps`].
    pub capabilities: u64,
    /// Install the default seccomp filter (`--security-opt
    /// seccomp=unconfined` turns it off).
    pub seccomp: bool,
    /// Set no_new_privs, so setuid binaries and file capabilities grant
    /// nothing (`--security-opt no-new-privileges`). Off by default, as in Docker.
    pub no_new_privileges: bool,
    /// The compiled filter, filled in by the launcher (compiled once per
    /// process); never set by callers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) programs: Vec<crate::seccomp::Program>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            capabilities: crate::caps::default_mask(),
            seccomp: true,
            no_new_privileges: false,
            programs: Vec::new(),
        }
    }
}

impl Security {
    /// Docker's default capabilities with `add` and `drop` applied
    /// (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`).
    pub fn with_caps(mut self, add: &[String], drop: &[String]) -> Result<Self, String> {
        self.capabilities = crate::caps::resolve(add, drop)?;
        Ok(self)
    }

    /// Apply one `--security-opt` value: `seccomp=unconfined`,
    /// `no-new-privileges[=true|false]`.
    pub fn apply_opt(&mut self, opt: &str) -> Result<(), String> {
        let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt, ""));
        match (key, value) {
            ("seccomp", "unconfined") => self.seccomp = false,
            ("seccomp", other) => {
                return Err(format!(
                    "security option seccomp={other}: only `unconfined` is supported (custom profiles are not)"
                ))
            }
            ("no-new-privileges", "" | "true") => self.no_new_privileges = true,
            ("no-new-privileges", "false") => self.no_new_privileges = false,
            _ => {
                return Err(format!(
                    "unsupported security option {opt:?} (expected seccomp=unconfined or no-new-privileges)"
                ))
            }
        }
        Ok(())
    }
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
