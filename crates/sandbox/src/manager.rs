//! Long-lived sandboxes over the store: create from an image, exec many
//! times into the same filesystem state, commit into an image, list, remove.
//!
//! A sandbox is a directory `sandboxes/<id>/` holding `sandbox.json` (its
//! record), `upper/` and `work/` (its overlay state), `merged/` (a mount point
//! seen only inside its mount namespace), the generated /etc files, and `lock`.
//! Each exec is one helper run over that state; execs of one sandbox are
//! serialised by an flock, since one upper dir must not back two overlay
//! mounts at once. The store keeps the sandbox's image alive through a GC
//! root ("sandbox", id) until the sandbox is removed.

use crate::cgroup::{self, CgroupParent, Limits};
use crate::idmap::IdMapping;
use crate::launch::{CancelToken, Launcher, RunControl, RunOutcome, RunStdio, UpperLayerWriter};
use crate::names;
use crate::protocol::Task;
use crate::spec::{BindFile, Network, ProcessSpec, RootfsSpec, RunSpec, Security};
use crate::SandboxError;
use cairn_layer::{Compression, Digest};
use cairn_store::image::{BlobRef, Image};
use cairn_store::image_config::{Field, History, RunConfig};
use cairn_store::layer_dirs::TreeRef;
use cairn_store::reference::ImageRef;
use cairn_store::{Store, StoreError};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod stream_extract;
mod teardown;
mod trash;
pub use stream_extract::{ExtractedDir, PendingExtract};
pub use trash::INLINE_ENV as RECLAIM_INLINE_ENV;

const ROOT_KIND: &str = "sandbox";

/// Processes a sandbox or RUN step may have unless told otherwise (podman's
/// default): enough for any build, too few for a fork bomb to hurt the host.
pub const DEFAULT_PIDS_LIMIT: u64 = 2048;

/// Errors of sandbox management.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("no sandbox {0:?}")]
    UnknownSandbox(String),
    #[error("image {image}: {reason}")]
    BadImage { image: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("sandbox record {path}: {source}")]
    Record {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("sandbox {id}: {message}")]
    Cgroup { id: String, message: String },
    #[error("resources: {0}")]
    BadResources(String),
    #[error("{value:?} cannot name a sandbox: {reason}")]
    BadName { value: String, reason: &'static str },
    /// `write_file`/`read_file` failed in the sandbox (`not_found`: the
    /// path or its directory does not exist).
    #[error("sandbox {id}: {message}")]
    File {
        id: String,
        message: String,
        not_found: bool,
    },
    #[error("sandbox {id} belongs to another organization")]
    OtherOrganization { id: String },
}

impl ManagerError {
    /// True when the caller named something that does not exist or is malformed.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ManagerError::UnknownSandbox(_)
            | ManagerError::BadImage { .. }
            | ManagerError::BadResources(_)
            | ManagerError::BadName { .. }
            | ManagerError::OtherOrganization { .. }
            | ManagerError::File { .. } => true,
            ManagerError::Store(e) => e.is_bad_input(),
            ManagerError::Sandbox(e) => e.is_bad_input(),
            _ => false,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ManagerError {
    let context = context.into();
    move |source| ManagerError::Io { context, source }
}

/// Resources asked of a sandbox, and which of them could not be applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    /// CPUs (cgroup v2 cpu.max).
    pub cpu: Option<f64>,
    /// Memory in GB of 2^30 bytes (cgroup v2 memory.max).
    pub memory_gb: Option<f64>,
    /// Processes (cgroup v2 pids.max, and RLIMIT_NPROC in every case).
    pub pids: Option<u64>,
    /// Limits asked for but not enforced on this machine, each as
    /// `LIMIT: reason` (e.g. `cpu=2: the cpu controller is bound to ...`).
    #[serde(default)]
    pub not_applied: Vec<String>,
}

impl Resources {
    /// Refuse limits no cgroup could take: cpu and memory must be positive
    /// numbers, pids at least 1.
    pub fn check(&self) -> Result<(), ManagerError> {
        for (name, v) in [("cpu", self.cpu), ("memory", self.memory_gb)] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(ManagerError::BadResources(format!(
                    "{name} {v}: expected a positive number"
                )));
            }
        }
        if self.pids == Some(0) {
            return Err(ManagerError::BadResources(
                "pids 0: expected at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The cgroup limits these resources ask for.
    pub fn limits(&self) -> Limits {
        Limits {
            cpu: self.cpu,
            memory_bytes: self.memory_gb.map(Limits::gb_to_bytes),
            pids: self.pids,
        }
    }
}

/// What the store and the caller know of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: Option<String>,
    /// The image as the caller named it.
    pub image: String,
    /// The manifest the sandbox's layers come from (the last commit's, after one).
    pub manifest: Digest,
    /// Layer diff ids, lowest first.
    pub layers: Vec<Digest>,
    /// The image config's `config` object (Env, Cmd, Entrypoint, User, ...);
    /// null when the image has none.
    #[serde(default)]
    pub config: Field<RunConfig>,
    pub network: Network,
    pub resources: Resources,
    /// RFC 3339.
    pub created: String,
    /// The process that owns an ephemeral sandbox: when it is gone, the next
    /// listing removes the sandbox. None for sandboxes that outlive their creator.
    pub owner: Option<Owner>,
    /// The sandbox's cgroup v2 directory, when limits are applied through one.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// Capabilities, seccomp and no_new_privs of every exec (records of
    /// older versions get the defaults).
    #[serde(default)]
    pub security: Security,
    /// cgroup v1 dirs (root on hybrid or legacy hosts), one per controller.
    #[serde(default)]
    pub v1_cgroups: Vec<PathBuf>,
    /// The organization that created the sandbox through a scoped manager
    /// ([`SandboxManager::for_organization`]); only such a manager of the
    /// same organization (or an unscoped, operator one) can use it.
    #[serde(default)]
    pub organization: Option<String>,
}

/// A process identity that survives PID reuse: pid plus its start time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Owner {
    /// The calling process.
    pub fn current() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    fn is_alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }
}

/// Field 22 of /proc/PID/stat (after the parenthesised command name).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(19)?.parse().ok()
}

/// How to create a sandbox.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: Option<String>,
    pub network: Network,
    pub resources: Resources,
    /// Remove the sandbox once the creating process is gone.
    pub ephemeral: bool,
    /// Capabilities, seccomp, no_new_privs (Docker's defaults by default).
    pub security: Security,
}

/// Which command an exec runs.
#[derive(Debug, Clone)]
pub enum Argv {
    /// The image's ENTRYPOINT + CMD (`docker run IMAGE`).
    ImageDefault,
    /// ENTRYPOINT + these args in place of CMD (`docker run IMAGE ARGS...`).
    ReplaceCmd(Vec<String>),
    /// Exactly this argv (`docker exec ID ARGS...`).
    Direct(Vec<String>),
}

/// One command to run in a sandbox.
pub struct ExecOptions {
    pub argv: Argv,
    /// `KEY=VALUE` entries added to (and overriding) the image's Env.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub stdio: RunStdio,
    /// Kill the command and everything it started after this long.
    pub timeout: Option<Duration>,
    /// Kill the command and everything it started when this is cancelled
    /// (from any thread).
    pub cancel: Option<CancelToken>,
    /// Host paths bound into the sandbox for this command only (`run -v`).
    pub mounts: Vec<crate::spec::ExtraMount>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            argv: Argv::ImageDefault,
            env: Vec::new(),
            user: None,
            workdir: None,
            stdio: RunStdio::default(),
            timeout: None,
            cancel: None,
            mounts: Vec::new(),
        }
    }
}

/// Creates, runs, commits and removes sandboxes in one store.
pub struct SandboxManager<'s> {
    store: &'s Store,
    pub(crate) launcher: Launcher,
    mapping: IdMapping,
    /// Where sandbox cgroups go; detected at the first create with limits.
    cgroup_parent: Option<CgroupParent>,
    /// Caps for extracting layers; `None`: defaults plus the environment.
    extract_limits: Option<cairn_layer::ExtractLimits>,
    /// The organization this manager acts for: it creates sandboxes owned by
    /// it and sees no other organization's. None: the operator, who sees all.
    organization: Option<String>,
    /// Ephemeral sandboxes get no GC root: this process's hold on
    /// `store.lock` keeps GC out for their whole life (see
    /// [`SandboxManager::ephemeral_kept_by_store_lock`]).
    lock_keeps_ephemeral: bool,
}

impl<'s> SandboxManager<'s> {
    pub fn new(store: &'s Store, launcher: Launcher) -> Self {
        SandboxManager {
            store,
            launcher,
            mapping: IdMapping::for_current_user(),
            cgroup_parent: None,
            extract_limits: None,
            organization: None,
            lock_keeps_ephemeral: false,
        }
    }

    /// Create ephemeral sandboxes without a GC root when the store handle
    /// holds `store.lock` for its whole life ([`Store::open`]): no GC can run
    /// while this process holds it, so the root would only cost two SQLite
    /// commits per `run --rm`. The caller promises to remove (or die with)
    /// every ephemeral sandbox before it drops the handle, as `cairn run
    /// --rm` does; a killed owner's sandbox is removed by the next sweep,
    /// before any GC. A per-operation handle (a service) keeps the roots.
    pub fn ephemeral_kept_by_store_lock(mut self) -> Self {
        self.lock_keeps_ephemeral = self.store.lock_mode() != cairn_store::LockMode::PerOperation;
        self
    }

    /// Act for organization `org`: sandboxes it creates record `org`, and
    /// get/exec/commit/remove refuse those of any other organization (and
    /// those made by an unscoped manager). The caller validates `org`.
    pub fn for_organization(mut self, org: &str) -> Self {
        self.organization = Some(org.to_string());
        self
    }

    /// Make sandbox cgroups under `parent` instead of the detected one
    /// (`CAIRN_CGROUP_PARENT`, else the caller's own cgroup).
    pub fn with_cgroup_parent(mut self, parent: CgroupParent) -> Self {
        self.cgroup_parent = Some(parent);
        self
    }

    /// The generated /etc files (hosts, resolv.conf, hostname) for a run whose
    /// private files live in `dir`.
    pub fn etc_files(&self, dir: &Path, hostname: &str) -> Result<Vec<BindFile>, ManagerError> {
        self.write_etc_files(dir, hostname)
    }

    /// Use `mapping` instead of the caller's default (e.g.
    /// [`IdMapping::host_identity`] for `--userns=host`).
    pub fn with_id_mapping(mut self, mapping: IdMapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// The ID mapping sandboxes get (a single ID when the user has no range).
    pub fn id_mapping(&self) -> &IdMapping {
        &self.mapping
    }

    /// The directory of sandbox `id`; callers pass only ids taken from a
    /// record or checked by [`names::is_id`].
    fn dir(&self, id: &str) -> PathBuf {
        self.store.layout().sandboxes().join(id)
    }

    /// Refuse what cannot name a sandbox (`..`, `/tmp/x`, ...).
    fn check_name(value: &str) -> Result<(), ManagerError> {
        match names::problem(value) {
            Some(reason) => Err(ManagerError::BadName {
                value: value.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Whether this manager may use `record` (its organization's, or any for
    /// an unscoped manager).
    fn may_use(&self, record: &SandboxRecord) -> bool {
        self.organization.is_none() || self.organization == record.organization
    }

    /// Create a sandbox from an image in the store. Its layers are extracted
    /// once into the store's layer dirs (reused by every later sandbox).
    pub fn create(&self, image: &str, opts: CreateOptions) -> Result<SandboxRecord, ManagerError> {
        // Before anything is made: a binary without the init hook must
        // leave no sandbox dir behind.
        self.launcher.check_ready()?;
        opts.resources.check()?;
        if let Some(name) = &opts.name {
            Self::check_name(name)?;
            let taken = self
                .list_records()?
                .into_iter()
                .any(|r| r.name.as_ref() == Some(name) && r.organization == self.organization);
            if taken {
                return Err(ManagerError::BadName {
                    value: name.clone(),
                    reason: "a sandbox of that name exists",
                });
            }
        }
        let manifest = self.store.resolve(image)?;
        let parts = self.image_parts(image, &manifest)?;
        let layers = parts.diff_ids();
        // The image already holds the manifest's blobs; `extract_layers`
        // checks the layer dirs' owners first.
        let pairs: Vec<(Digest, Digest)> = parts
            .layers
            .iter()
            .map(|l| (l.blob.digest, l.diff_id))
            .collect();
        self.extract_layers(&pairs)?;

        let id = new_id()?;
        let dir = self.dir(&id);
        std::fs::create_dir_all(dir.join("merged"))
            .map_err(io(format!("creating {}", dir.display())))?;
        self.make_overlay_dirs(&dir)?;
        let mut resources = opts.resources;
        // The default pids limit is RLIMIT_NPROC only (see run_spec): a v1
        // cgroup for it alone costs ~15 ms per start (joining a v1 cgroup
        // waits for an RCU grace period). Limits asked for get a cgroup.
        let limits = resources.limits();
        let applied = if limits.is_empty() {
            cgroup::Applied::default()
        } else {
            let parent = self
                .cgroup_parent
                .clone()
                .unwrap_or_else(CgroupParent::detect);
            cgroup::create(&parent, &cgroup_name(&id), &limits)
        };
        resources.not_applied = applied
            .not_applied
            .into_iter()
            .map(|note| match note.starts_with("pids=") {
                true => format!("{note} (RLIMIT_NPROC still caps each user of the sandbox)"),
                false => note,
            })
            .collect();
        for note in &resources.not_applied {
            tracing::warn!(sandbox = %id, "limit not applied: {note}");
        }
        let record = SandboxRecord {
            id: id.clone(),
            name: opts.name,
            image: image.to_string(),
            manifest,
            layers,
            config: parts.config.config,
            network: opts.network,
            resources,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            owner: if opts.ephemeral {
                Owner::current()
            } else {
                None
            },
            cgroup: applied.dir,
            security: opts.security,
            v1_cgroups: applied.v1_dirs,
            organization: self.organization.clone(),
        };
        // An ephemeral sandbox dies with its owner: its root need not
        // survive a power loss (saves an fsync per `run --rm`), and it needs
        // none at all while its owner's hold on `store.lock` keeps GC out.
        let rooted = match (opts.ephemeral, self.lock_keeps_ephemeral) {
            (true, true) => Ok(()),
            (true, false) => self.store.add_volatile_root(ROOT_KIND, &id, &manifest),
            (false, _) => self.store.add_root(ROOT_KIND, &id, &manifest),
        };
        let saved = rooted
            .map_err(ManagerError::from)
            .and_then(|()| self.write_record(&record));
        if let Err(e) = saved {
            for dir in record.cgroup.iter().chain(&record.v1_cgroups) {
                let _ = cgroup::remove(dir);
            }
            let _ = self.remove(&id);
            return Err(e);
        }
        Ok(record)
    }

    /// The image `manifest` (its typed config and layers), with the
    /// store's errors about it naming `image` as the caller called it.
    fn image_parts(&self, image: &str, manifest: &Digest) -> Result<Image, ManagerError> {
        let bad = |reason: String| ManagerError::BadImage {
            image: image.to_string(),
            reason,
        };
        self.store.image(manifest).map_err(|e| match e {
            StoreError::NotAnImage(_) => bad("is an index; name a single-platform image".into()),
            e @ (StoreError::BadImageConfig { .. } | StoreError::DiffIds { .. }) => {
                bad(e.to_string())
            }
            e => e.into(),
        })
    }

    /// Extract the layer blobs `(blob digest, diff id)` that have no extracted
    /// dir yet, each once, in a user namespace with the sandboxes' mapping,
    /// under the extraction limits (`CAIRN_MAX_EXTRACT_SIZE`, or
    /// [`SandboxManager::with_extract_limits`]). A refused or failed layer
    /// leaves nothing behind: its temp dir is removed in the namespace too.
    pub fn extract_layers(&self, pairs: &[(Digest, Digest)]) -> Result<(), ManagerError> {
        crate::owners::adopt_layer_dirs(self.store, &self.mapping)
            .map_err(io("checking the owners of the store's layer dirs"))?;
        let limits = match self.extract_limits {
            Some(l) => l,
            None => cairn_layer::ExtractLimits::from_env().map_err(SandboxError::from)?,
        };
        let remover = crate::TaskRemover {
            launcher: &self.launcher,
            mapping: &self.mapping,
        };
        for (blob_digest, diff_id) in pairs {
            if self.store.has_layer_dir(diff_id) {
                continue;
            }
            let blob_path = self.store.blob_path(blob_digest);
            let what = format!("layer {blob_digest}");
            self.store
                .ensure_layer_dir_with(diff_id, &remover, |tmp| {
                    let got = self.launcher.extract_layer(
                        &self.mapping,
                        &blob_path,
                        tmp,
                        limits,
                        &what,
                        false,
                    )?;
                    if got.diff_id != diff_id.to_string() {
                        return Err(SandboxError::TaskFailed(format!(
                            "layer {blob_digest} has diff id {}, the config says {diff_id}",
                            got.diff_id
                        )));
                    }
                    // The blob is verified in the store: it is the dir's
                    // reference, so the new dir is not read back.
                    Ok(TreeRef::Blob(*blob_digest))
                })
                .map_err(|e| match e {
                    cairn_store::layer_dirs::EnsureLayerError::Store(s) => ManagerError::Store(s),
                    cairn_store::layer_dirs::EnsureLayerError::Fill(f) => ManagerError::Sandbox(f),
                })?;
        }
        Ok(())
    }

    /// Extraction limits for the layers this manager extracts, instead of
    /// the defaults with `CAIRN_MAX_EXTRACT_SIZE`/`_ENTRIES` applied.
    pub fn with_extract_limits(mut self, limits: cairn_layer::ExtractLimits) -> Self {
        self.extract_limits = Some(limits);
        self
    }

    /// The sandbox's empty upper and work dirs, container root's.
    fn make_overlay_dirs(&self, dir: &Path) -> Result<(), ManagerError> {
        for sub in ["upper", "work"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?;
            crate::owners::give_to_container_root(&self.mapping, &path)
                .map_err(io(format!("giving {} to container root", path.display())))?;
        }
        Ok(())
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("sandbox.json")
    }

    fn write_record(&self, record: &SandboxRecord) -> Result<(), ManagerError> {
        let path = self.record_path(&record.id);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(record).map_err(|source| ManagerError::Record {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, body).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("renaming {}", path.display())))
    }

    /// The record of a sandbox, by id, unique id prefix, or name: looked up
    /// in the records, never used as a path. A sandbox of another
    /// organization than this manager's is refused.
    pub fn get(&self, id_or_name: &str) -> Result<SandboxRecord, ManagerError> {
        Self::check_name(id_or_name)?;
        if names::is_id(id_or_name) {
            // A full id: its own record, without reading every other one.
            if let Ok(r) = self.read_record(&self.record_path(id_or_name)) {
                if r.id == id_or_name {
                    return match self.may_use(&r) {
                        true => Ok(r),
                        false => Err(ManagerError::OtherOrganization { id: r.id }),
                    };
                }
            }
        }
        let records = self.list_records()?;
        if let Some(r) = records.iter().find(|r| r.id == id_or_name) {
            return match self.may_use(r) {
                true => Ok(r.clone()),
                false => Err(ManagerError::OtherOrganization { id: r.id.clone() }),
            };
        }
        // Names and id prefixes select among the sandboxes this manager sees.
        let visible = || records.iter().filter(|r| self.may_use(r));
        let mut named = visible().filter(|r| r.name.as_deref() == Some(id_or_name));
        let mut prefixed = visible().filter(|r| r.id.starts_with(id_or_name));
        match (named.next(), named.next(), prefixed.next(), prefixed.next()) {
            (Some(r), None, _, _) | (None, None, Some(r), None) => Ok(r.clone()),
            _ => Err(ManagerError::UnknownSandbox(id_or_name.to_string())),
        }
    }

    fn read_record(&self, path: &Path) -> Result<SandboxRecord, ManagerError> {
        let bytes = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|source| ManagerError::Record {
            path: path.to_path_buf(),
            source,
        })
    }

    fn list_records(&self) -> Result<Vec<SandboxRecord>, ManagerError> {
        let root = self.store.layout().sandboxes();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("listing {}", root.display()))(e)),
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join("sandbox.json");
            match self.read_record(&path) {
                // A record is believed only in the directory of its own id.
                Ok(record) if entry.file_name().to_str() == Some(record.id.as_str()) => {
                    records.push(record)
                }
                _ => {}
            }
        }
        records.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(records)
    }

    /// Every sandbox, oldest first. Ephemeral sandboxes whose owner died are
    /// removed on the way ([`Self::remove_dead`]).
    pub fn list(&self) -> Result<Vec<SandboxRecord>, ManagerError> {
        let mut alive = self.sweep()?.0;
        alive.retain(|r| self.may_use(r));
        Ok(alive)
    }

    /// Remove the ephemeral sandboxes whose owner process is gone (`cairn
    /// run --rm` killed before it could clean up); returns their ids.
    pub fn remove_dead(&self) -> Result<Vec<String>, ManagerError> {
        Ok(self.sweep()?.1)
    }

    /// (live records, ids of the dead ones just removed). Also drops the
    /// roots of sandboxes that are gone.
    fn sweep(&self) -> Result<(Vec<SandboxRecord>, Vec<String>), ManagerError> {
        self.drop_orphan_roots()?;
        let remover = crate::TaskRemover {
            launcher: &self.launcher,
            mapping: &self.mapping,
        };
        trash::reclaim_leftovers(self.store, &remover);
        let mut alive = Vec::new();
        let mut dead = Vec::new();
        for record in self.list_records()? {
            match record.owner {
                Some(owner) if !owner.is_alive() && self.may_use(&record) => {
                    tracing::info!(sandbox = %record.id, "removing sandbox whose owner is gone");
                    self.remove(&record.id)?;
                    dead.push(record.id);
                }
                _ => alive.push(record),
            }
        }
        Ok((alive, dead))
    }

    pub(crate) fn lock(&self, id: &str) -> Result<Flock<std::fs::File>, ManagerError> {
        let (path, file) = self.lock_file(id)?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io(format!("locking {}", path.display()))(e.into()))
    }

    /// Sandbox `id`'s lock file, opened (created if missing), not locked.
    fn lock_file(&self, id: &str) -> Result<(PathBuf, std::fs::File), ManagerError> {
        let path = self.dir(id).join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        Ok((path, file))
    }

    /// The lock for removing sandbox `id`: none needed while this process's
    /// own last exec of it is only being torn down (nothing runs in it).
    fn lock_for_removal(&self, id: &str) -> Result<Option<Flock<std::fs::File>>, ManagerError> {
        let (_, file) = self.lock_file(id)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err(_) if teardown::is_pending(&self.dir(id)) => Ok(None),
            Err(_) => self.lock(id).map(Some),
        }
    }

    /// Run a command in the sandbox's current filesystem state.
    /// Returns when the command has ended; the sandbox's mount goes away
    /// after, and its lock is held until then (`manager/teardown.rs`).
    pub fn exec(&self, id_or_name: &str, opts: ExecOptions) -> Result<RunOutcome, ManagerError> {
        self.exec_with(id_or_name, opts, None)
    }

    /// [`Self::exec`] through `early`, a helper started before the sandbox
    /// was created ([`crate::Launcher::start_early`] with this manager's
    /// ID mapping and the run's stdio, which replaces `opts.stdio`). An
    /// early helper of another mapping is dropped (killed) and a fresh one
    /// started.
    pub fn exec_with(
        &self,
        id_or_name: &str,
        opts: ExecOptions,
        early: Option<crate::launch::EarlyHelper>,
    ) -> Result<RunOutcome, ManagerError> {
        let record = self.get(id_or_name)?;
        let lock = self.lock(&record.id)?;
        let spec = self.run_spec(&record, &opts)?;
        let control = RunControl {
            timeout: opts.timeout,
            cancel: opts.cancel,
            cgroup: self.live_cgroup(&record)?,
            v1_cgroups: self.live_v1_cgroups(&record),
        };
        let hold = Box::new(teardown::Teardown::new(self.dir(&record.id), lock));
        Ok(self
            .launcher
            .run_holding(&spec, opts.stdio, &control, hold, early)?)
    }

    /// The sandbox's cgroup, made again if it is gone (cgroups do not survive
    /// a reboot; sandbox directories do).
    pub(crate) fn live_cgroup(
        &self,
        record: &SandboxRecord,
    ) -> Result<Option<PathBuf>, ManagerError> {
        let Some(dir) = &record.cgroup else {
            return Ok(None);
        };
        if dir.is_dir() {
            return Ok(Some(dir.clone()));
        }
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Err(ManagerError::Cgroup {
                id: record.id.clone(),
                message: format!("malformed cgroup path {}", dir.display()),
            });
        };
        let parent = CgroupParent::Dir(parent.to_path_buf());
        let applied = cgroup::create(&parent, &name.to_string_lossy(), &record.resources.limits());
        match applied.dir {
            Some(d) => Ok(Some(d)),
            None => Err(ManagerError::Cgroup {
                id: record.id.clone(),
                message: format!(
                    "its cgroup {} is gone and cannot be made again: {}",
                    dir.display(),
                    applied.not_applied.join("; ")
                ),
            }),
        }
    }

    /// The sandbox's v1 cgroups, made again if they are gone (after a reboot).
    pub(crate) fn live_v1_cgroups(&self, record: &SandboxRecord) -> Vec<PathBuf> {
        if record.v1_cgroups.iter().all(|d| d.is_dir()) {
            return record.v1_cgroups.clone();
        }
        let limits = record.resources.limits();
        let parent = CgroupParent::Unavailable("v1 only".into());
        cgroup::create(&parent, &cgroup_name(&record.id), &limits).v1_dirs
    }

    pub(crate) fn run_spec(
        &self,
        record: &SandboxRecord,
        opts: &ExecOptions,
    ) -> Result<RunSpec, ManagerError> {
        let dir = self.dir(&record.id);
        let cfg = record.config.or_default();
        let args = match &opts.argv {
            Argv::Direct(argv) => argv.clone(),
            Argv::ReplaceCmd(cmd) => [cfg.entrypoint.or_default(), cmd.clone()].concat(),
            Argv::ImageDefault => [cfg.entrypoint.or_default(), cfg.cmd.or_default()].concat(),
        };
        let env = merge_env(cfg.env.or_default(), &opts.env);
        let hostname: String = record.id.chars().take(12).collect();
        let bind_files = self.write_etc_files(&dir, &hostname)?;
        Ok(RunSpec {
            rootfs: RootfsSpec {
                layers: record
                    .layers
                    .iter()
                    .map(|d| self.store.layer_dir(d))
                    .collect(),
                upper: dir.join("upper"),
                work: dir.join("work"),
                merged: dir.join("merged"),
                // An ephemeral sandbox's state is thrown away with it.
                volatile: record.owner.is_some(),
            },
            process: ProcessSpec {
                args,
                env,
                cwd: opts
                    .workdir
                    .clone()
                    .or_else(|| cfg.working_dir.get().cloned())
                    .unwrap_or_default(),
                user: opts
                    .user
                    .clone()
                    .or_else(|| cfg.user.get().cloned())
                    .unwrap_or_default(),
            },
            network: record.network,
            hostname,
            bind_files,
            mounts: opts.mounts.clone(),
            id_mapping: self.mapping.clone(),
            pids_limit: record.resources.pids.or(Some(DEFAULT_PIDS_LIMIT)),
            security: record.security.clone(),
        })
    }

    /// Generate /etc/hosts, /etc/resolv.conf and /etc/hostname for a run.
    fn write_etc_files(&self, dir: &Path, hostname: &str) -> Result<Vec<BindFile>, ManagerError> {
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let files = [
            ("hosts", "/etc/hosts", format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")),
            ("resolv.conf", "/etc/resolv.conf", resolv),
            ("hostname", "/etc/hostname", format!("{hostname}\n")),
        ];
        let mut binds = Vec::new();
        for (name, target, content) in files {
            let source = dir.join(name);
            std::fs::write(&source, content)
                .map_err(io(format!("writing {}", source.display())))?;
            binds.push(BindFile {
                source,
                target: target.to_string(),
                read_only: false,
            });
        }
        Ok(binds)
    }

    /// Commit the sandbox's changes as a new layer on its image, tagged `name`.
    /// The sandbox carries on from the new image with an empty upper dir; the
    /// old upper dir becomes the new layer's extracted dir (nothing re-extracted).
    pub fn commit(
        &self,
        id_or_name: &str,
        name: &str,
        compression: Compression,
    ) -> Result<Digest, ManagerError> {
        let tag = ImageRef::parse(name)?;
        let mut record = self.get(id_or_name)?;
        let _lock = self.lock(&record.id)?;
        let dir = self.dir(&record.id);
        let upper = dir.join("upper");
        remove_mount_stubs(
            &upper,
            &record
                .layers
                .iter()
                .map(|d| self.store.layer_dir(d))
                .collect::<Vec<_>>(),
        );

        let writer = UpperLayerWriter {
            launcher: &self.launcher,
            mapping: &self.mapping,
            compression,
            timestamp: None,
        };
        // The upper dir is the new layer in overlay form: adopted as its
        // extracted dir (its tar, with no timestamp clamp, is exactly the
        // layer: tree = diff id), so nothing is re-extracted.
        let layer = self.store.commit_layer(&writer, &upper, None)?;
        if !layer.adopted {
            self.launcher
                .run_task(&self.mapping, Task::RemoveTree(upper.clone()))?;
        }
        self.launcher
            .run_task(&self.mapping, Task::RemoveTree(dir.join("work")))?;
        self.make_overlay_dirs(&dir)?;
        // From here the sandbox runs over the new layer whatever happens next.
        let base = record.manifest;
        record.layers.push(layer.diff_id);
        let named = self
            .write_committed_image(&record, &base, &layer)
            .and_then(|manifest| Ok(self.store.tag(&tag, &manifest).map(|()| manifest)?));
        let manifest = match named {
            Ok(manifest) => manifest,
            Err(e) => {
                // Keep the layer the sandbox now stands on (best effort:
                // the commit's own error is the one to report).
                let _ = self.store.add_root(ROOT_KIND, &record.id, &layer.diff_id);
                let _ = self.store.add_root(ROOT_KIND, &record.id, &layer.digest);
                let _ = self.write_record(&record);
                return Err(e);
            }
        };
        self.store.remove_roots(ROOT_KIND, &record.id)?;
        self.store.add_root(ROOT_KIND, &record.id, &manifest)?;
        record.manifest = manifest;
        self.write_record(&record)?;
        Ok(manifest)
    }

    /// Config and manifest of the committed image: the sandbox's image
    /// (`base`) with the sandbox's config and one more layer.
    fn write_committed_image(
        &self,
        record: &SandboxRecord,
        base: &Digest,
        layer: &cairn_store::CommittedLayer,
    ) -> Result<Digest, ManagerError> {
        let mut image = self.image_parts(&record.image, base)?;
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let config = &mut image.config;
        config.created = Field::Set(now.clone());
        config.config = match &record.config {
            Field::Set(c) => Field::Set(c.clone()),
            _ => Field::Null,
        };
        config.push_diff_id(&layer.diff_id);
        config.push_history(History::new(&now, "cairn sandbox commit", false));
        let mut layers = image.blobs();
        layers.push(BlobRef {
            digest: layer.digest,
            media_type: layer.media_type.clone(),
            size: layer.size,
        });
        Ok(self.store.record_image(&image.config, &layers)?)
    }

    /// Remove a sandbox: its record, its directory (moved into the store's
    /// `tmp/` at once, then deleted, through a task when files in it belong
    /// to subordinate IDs: detached from a single-threaded caller, see
    /// `manager/trash.rs`) and its GC root. When this returns the sandbox
    /// is gone from listings and its id and name are free.
    pub fn remove(&self, id_or_name: &str) -> Result<(), ManagerError> {
        let (id, cgroup_dirs, ephemeral) = match self.get(id_or_name) {
            Ok(r) => {
                let dirs: Vec<PathBuf> = r.cgroup.iter().chain(&r.v1_cgroups).cloned().collect();
                (r.id, dirs, r.owner.is_some())
            }
            // The directory of a create that died before its record was
            // written goes too; only an operator can name it, and only by
            // its full generated id.
            Err(ManagerError::UnknownSandbox(_))
                if self.organization.is_none()
                    && names::is_id(id_or_name)
                    && self.dir(id_or_name).is_dir() =>
            {
                (id_or_name.to_string(), vec![], false)
            }
            Err(e) => return Err(e),
        };
        let dir = self.dir(&id);
        {
            let _lock = self.lock_for_removal(&id)?;
            for cg in &cgroup_dirs {
                // Kills anything left inside, then removes it. Kept before the
                // record goes, so a failure here can be retried.
                cgroup::remove(cg).map_err(io(format!("removing cgroup {}", cg.display())))?;
            }
            // Drop the record first: a half-removed sandbox is then just garbage.
            let _ = std::fs::remove_file(self.record_path(&id));
        }
        // One rename takes the sandbox out of `sandboxes/`; its files are
        // reclaimed after (`manager/trash.rs` has the contract).
        let trash = trash::path(self.store, &id);
        let moved = trash::move_aside(&dir, &trash).map_err(io(format!(
            "moving {} to {}",
            dir.display(),
            trash.display()
        )))?;
        {
            let _span = cairn_layer::timing::span("sandbox.remove_root");
            // An ephemeral sandbox made nothing durable, and its removal need
            // not be either: a root a power loss brings back is swept with the
            // other roots of missing sandboxes (`sweep`). After the move, so
            // a root never outlives its dir; before the reclaimer's fork, so
            // this process's work after the fork (copy-on-write faults) is
            // only its exit.
            match ephemeral {
                true => self.store.remove_volatile_roots(ROOT_KIND, &id)?,
                false => self.store.remove_roots(ROOT_KIND, &id)?,
            };
        }
        if moved {
            let _span = cairn_layer::timing::span("sandbox.remove_reclaim");
            let remover = crate::TaskRemover {
                launcher: &self.launcher,
                mapping: &self.mapping,
            };
            trash::reclaim(self.store, &remover, &trash).map_err(SandboxError::TaskFailed)?;
        }
        Ok(())
    }

    /// Drop the GC roots of sandboxes whose directory is gone (a removal
    /// whose last, relaxed commit a power loss undid). A sandbox's dir is
    /// made before its root and removed before it, so a root without a dir
    /// is never one of a sandbox being created.
    fn drop_orphan_roots(&self) -> Result<(), ManagerError> {
        for id in self.store.root_ids(ROOT_KIND)? {
            if names::is_id(&id) && !self.dir(&id).exists() {
                tracing::info!(sandbox = %id, "dropping the GC root of a sandbox that is gone");
                self.store.remove_roots(ROOT_KIND, &id)?;
            }
        }
        Ok(())
    }
}

/// The image's Env with `extra` entries added, replacing same-named ones.
fn merge_env(mut env: Vec<String>, extra: &[String]) -> Vec<String> {
    for entry in extra {
        let key = entry.split('=').next().unwrap_or(entry);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(entry.clone());
    }
    env
}

/// The cgroup of sandbox `id`.
fn cgroup_name(id: &str) -> String {
    format!("cairn-{id}")
}

/// Mount points the sandbox created in the upper dir because the image
/// lacked them. Like BuildKit, drop them before a commit when they are still
/// the empty stubs we made and no lower layer has them.
pub fn remove_mount_stubs(upper: &Path, lowers: &[PathBuf]) {
    const STUBS: [&str; 6] = [
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "proc",
        "dev",
        "sys",
    ];
    for stub in STUBS {
        let path = upper.join(stub);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let in_lower = lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(stub)).is_ok());
        if in_lower {
            continue;
        }
        if meta.is_file() && meta.len() == 0 {
            let _ = std::fs::remove_file(&path);
        } else if meta.is_dir() {
            let _ = std::fs::remove_dir(&path); // only if empty
        }
    }
    let etc = upper.join("etc");
    if !lowers.iter().any(|l| l.join("etc").exists()) {
        let _ = std::fs::remove_dir(etc); // only if the stubs were all it held
    }
}

/// 12 random bytes as hex: ids as long and as random as Docker's short ones need.
fn new_id() -> Result<String, ManagerError> {
    use std::io::Read;
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_replace_by_key() {
        let env = merge_env(
            vec!["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(env, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn resources_must_be_positive() {
        let ok = Resources {
            cpu: Some(0.5),
            memory_gb: Some(2.0),
            pids: Some(1),
            ..Resources::default()
        };
        assert!(ok.check().is_ok());
        for bad in [
            Resources {
                cpu: Some(0.0),
                ..Resources::default()
            },
            Resources {
                memory_gb: Some(f64::NAN),
                ..Resources::default()
            },
            Resources {
                pids: Some(0),
                ..Resources::default()
            },
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.is_bad_input(), "{e}");
        }
    }

    #[test]
    fn start_ticks_of_self_is_stable() {
        let me = Owner::current().expect("own stat");
        assert!(me.is_alive());
        let ghost = Owner {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        assert!(!ghost.is_alive());
    }
}
