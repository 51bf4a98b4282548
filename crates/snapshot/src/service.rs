//! What platform services call: snapshots made from Dockerfiles, registry
//! images, local images and live sandboxes; sandboxes started from them;
//! deletion; all with the record kept in step.
//!
//! Every snapshot's image is also tagged in the local store as
//! `localhost/snapshots/<org>/<name>:<version>` (its *local name*), and held
//! as a GC root of kind `snapshot`. With regions, it is pushed to each
//! region's registry, and `imageName` is the first region's reference.

use crate::context;
use crate::copies;
use crate::language::LanguageSnapshots;
use crate::record::{BuildInfo, Resources, Snapshot};
use crate::repo::{ListQuery, NewSnapshot, Page, SnapshotDb, SnapshotError, SnapshotRepo};
use crate::state::SnapshotState;
use crate::version;
use cairn_builder::{tenancy, BuildError, BuildEvent, BuildRequest, Builder};
use cairn_layer::Compression;
use cairn_registry::{Platform, Regions, Registry, RegistryError};
use cairn_sandbox::manager::{
    CreateOptions as SandboxOptions, ManagerError, SandboxManager, SandboxRecord,
};
use cairn_sandbox::{Launcher, Network};
use cairn_store::image::Image;
use cairn_store::image_config::Field;
use cairn_store::{Digest, ImageRef, Store, StoreError};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// GC-root kind under which snapshots hold their images.
pub const ROOT_KIND: &str = "snapshot";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Sandbox(#[from] ManagerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ServiceError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            ServiceError::Snapshot(e) => e.is_bad_input(),
            ServiceError::Build(e) => e.is_bad_input(),
            ServiceError::Registry(e) => e.is_bad_input(),
            ServiceError::Sandbox(e) => e.is_bad_input(),
            ServiceError::Store(e) => e.is_bad_input(),
            ServiceError::Invalid(_) => true,
            ServiceError::Io { .. } => false,
        }
    }
}

type Result<T> = std::result::Result<T, ServiceError>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let context = context.into();
    move |source| ServiceError::Io { context, source }
}

/// Where a new snapshot's image comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Build this Dockerfile; `contexts` as `--context` (empty: derived
    /// from its COPY/ADD sources).
    Dockerfile {
        path: PathBuf,
        contexts: Vec<PathBuf>,
        build_args: BTreeMap<String, String>,
    },
    /// Build this Dockerfile text with `context` as the build context (the
    /// seed's `build_info={"dockerfile": TEXT, "context": PATH}`).
    DockerfileText {
        dockerfile: String,
        context: PathBuf,
        build_args: BTreeMap<String, String>,
    },
    /// Pull this registry reference.
    Image(String),
    /// A store image (`snapshot push`): pushed to the snapshot registry.
    LocalImage(String),
    /// Commit this live sandbox.
    Sandbox(String),
}

impl Source {
    fn kind(&self) -> &'static str {
        match self {
            Source::Dockerfile { .. } | Source::DockerfileText { .. } => "dockerfile",
            Source::Image(_) => "image",
            Source::LocalImage(_) => "local_image",
            Source::Sandbox(_) => "sandbox",
        }
    }

    /// The state a snapshot is in while its image is being made.
    fn work_state(&self) -> SnapshotState {
        match self {
            Source::Dockerfile { .. } | Source::DockerfileText { .. } | Source::Sandbox(_) => {
                SnapshotState::Building
            }
            Source::Image(_) | Source::LocalImage(_) => SnapshotState::Pulling,
        }
    }
}

/// The rest of a create request.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// `name` or `name:version` (no version: `latest`).
    pub name: String,
    /// Overrides the image's ENTRYPOINT (not with a Dockerfile source).
    pub entrypoint: Option<Vec<String>>,
    pub resources: Resources,
    /// Region ids; empty: the regions file's default region, if any.
    pub regions: Vec<String>,
    pub general: bool,
    /// Network of the build's RUN steps (a Dockerfile source). Default:
    /// `Network::Host`, as Docker's RUN; `None` isolates, and a Dockerfile's
    /// `RUN --network=host` cannot widen it.
    pub network: Network,
}

/// The snapshot operations over one store.
pub struct SnapshotService<'s> {
    store: &'s Store,
    /// The records, embedded or shared (behind a mutex: the service is
    /// shared by threads, and a lease renewer runs beside each build).
    repo: Mutex<SnapshotRepo>,
    /// This store's name among the runners sharing the records.
    runner: String,
    launcher: Launcher,
    registry: &'s Registry,
    regions: Regions,
    /// Active snapshots unused this long become inactive.
    idle_after: std::time::Duration,
    /// Which general snapshot a sandbox asked for by language starts from.
    languages: LanguageSnapshots,
}

/// The default idle threshold: two weeks without a sandbox.
pub const DEFAULT_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// A pull's `cairn_registry::LayerSink` that extracts each layer into the store's layer
/// dirs as it downloads (one implementation, the build engine's).
pub use cairn_builder::layer_sink::Extractor;

/// The store name of snapshot `name:version` of `org` (its namespace is
/// the injective encoding of the id: `acme` and `ACME` never share it).
pub fn local_name(org: &str, name: &str) -> Result<ImageRef> {
    name_in(&tenancy::namespace(org), name)
}

/// The store name of general snapshot `name:version`.
pub fn general_local_name(name: &str) -> Result<ImageRef> {
    name_in(tenancy::GENERAL, name)
}

/// The namespace component of a snapshot's images (general or its org's).
fn namespace_of(snap: &Snapshot) -> String {
    match snap.general {
        true => tenancy::GENERAL.to_string(),
        false => tenancy::namespace(&snap.organization_id),
    }
}

fn name_in(namespace: &str, name: &str) -> Result<ImageRef> {
    let (base, ver) = version::split_name(name);
    let full = format!(
        "{}/{namespace}/{}:{}",
        tenancy::SNAPSHOT_PREFIX,
        base,
        ver.unwrap_or("latest")
    );
    ImageRef::parse(&full).map_err(|e| {
        ServiceError::Invalid(format!(
            "snapshot name {name:?}: {e} (names are lowercase letters, digits and . _ -, versions up to 128 of [A-Za-z0-9_.-])"
        ))
    })
}

/// The store name of `snap`'s image.
fn snapshot_local_name(snap: &Snapshot) -> Result<ImageRef> {
    name_in(&namespace_of(snap), &snap.name)
}

/// What a Dockerfile snapshot is built from: its text, the path errors name,
/// the context dir and the build args.
struct DockerfileBuild<'a> {
    text: String,
    path: &'a Path,
    context: &'a Path,
    build_args: &'a BTreeMap<String, String>,
}

/// The environment variable naming this runner among those sharing records.
pub const RUNNER_ENV: &str = "CAIRN_RUNNER_ID";
/// The environment variable setting the work lease (humantime: `30s`).
pub const LEASE_ENV: &str = "CAIRN_SNAPSHOT_LEASE";

/// This runner's default name: the host name and the store's path.
fn default_runner(store: &Store) -> String {
    if let Ok(id) = std::env::var(RUNNER_ENV) {
        if !id.trim().is_empty() {
            return id.trim().to_string();
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), store.root().display())
}

impl<'s> SnapshotService<'s> {
    /// Open the service with the records where `CAIRN_SNAPSHOT_DB` says
    /// (default: the store's own SQLite file).
    pub fn open(
        store: &'s Store,
        launcher: Launcher,
        registry: &'s Registry,
        regions: Regions,
    ) -> Result<Self> {
        let db = SnapshotDb::from_env()?;
        Self::open_with_db(store, launcher, registry, regions, &db)
    }

    /// Open the service with the records in `db` (the library's choice of
    /// backend; docs/scale-out.md). `CAIRN_SNAPSHOT_LEASE` sets the work
    /// lease and `CAIRN_RUNNER_ID` this runner's name, when given.
    pub fn open_with_db(
        store: &'s Store,
        launcher: Launcher,
        registry: &'s Registry,
        regions: Regions,
        db: &SnapshotDb,
    ) -> Result<Self> {
        let repo = SnapshotRepo::connect(db, &store.layout().meta_db())?;
        Self::open_with_repo(store, launcher, registry, regions, repo)
    }

    /// Open the service over records already open: a long-lived caller's
    /// pooled connection ([`crate::repo::RepoPool::get`]), so a call does not
    /// connect anew. `CAIRN_SNAPSHOT_LEASE` and `CAIRN_RUNNER_ID` as in
    /// [`Self::open_with_db`].
    pub fn open_with_repo(
        store: &'s Store,
        launcher: Launcher,
        registry: &'s Registry,
        regions: Regions,
        mut repo: SnapshotRepo,
    ) -> Result<Self> {
        if let Ok(v) = std::env::var(LEASE_ENV) {
            let lease = humantime::parse_duration(v.trim())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ServiceError::Invalid(format!(
                        "{LEASE_ENV}={v:?}: expected a duration like 30s"
                    ))
                })?;
            repo.set_lease(lease);
        }
        Ok(SnapshotService {
            store,
            repo: Mutex::new(repo),
            runner: default_runner(store),
            launcher,
            registry,
            regions,
            idle_after: DEFAULT_IDLE_AFTER,
            languages: LanguageSnapshots::default(),
        })
    }

    /// Name this runner `id` among the runners sharing the records
    /// (default: `CAIRN_RUNNER_ID`, else host name and store path).
    pub fn with_runner_id(mut self, id: &str) -> Self {
        self.runner = id.to_string();
        self
    }

    /// Hold work leases this long (default 30 s; renewed every third).
    pub fn with_lease(self, lease: std::time::Duration) -> Self {
        self.repo().set_lease(lease);
        self
    }

    /// The records, locked for one call. A panic while they were held
    /// leaves nothing half-done in them (each change is a transaction), so
    /// a poisoned lock is taken over.
    fn repo(&self) -> MutexGuard<'_, SnapshotRepo> {
        self.repo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What this runner holds of snapshot `key`: `pulling` while it fetches
    /// the image, `active` once it has it, `error` if that failed, None if
    /// it never took it (docs/scale-out.md, "Per-runner state").
    pub fn local_state(&self, org: &str, key: &str) -> Result<Option<SnapshotState>> {
        let snap = self.get(org, key)?;
        Ok(self.repo().runner_state(&snap.id, &self.runner)?)
    }

    /// This runner's name among the runners sharing the records.
    pub fn runner_id(&self) -> &str {
        &self.runner
    }

    /// What this runner holds of each of `ids` (absent: never took it).
    pub fn local_states(&self, ids: &[String]) -> Result<HashMap<String, SnapshotState>> {
        Ok(self.repo().runner_states(ids, &self.runner)?)
    }

    /// Untag and unroot this store's copies (those `which` picks by id and
    /// local name) of snapshots whose record is gone or going: deleted on
    /// another runner. Only with shared records: with the store's own file,
    /// every delete already happened here. A local name a live snapshot
    /// held here now uses (deleted, then made again) keeps its tag.
    fn drop_deleted_copies(&self, which: &dyn Fn(&str, &str) -> bool) -> Result<()> {
        if !self.repo().is_shared() {
            return Ok(());
        }
        let held: Vec<(String, String)> = copies::all(self.store)?
            .into_iter()
            .filter(|(id, name)| which(id, name))
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
        let gone = self.repo().gone(&ids)?;
        for (id, name) in held.iter().filter(|(id, _)| gone.contains(id)) {
            let reused = held
                .iter()
                .any(|(other, n)| n == name && !gone.contains(other));
            if !reused {
                if let Ok(local) = ImageRef::parse(name) {
                    match self.store.untag(&local) {
                        Ok(_) | Err(StoreError::UnknownImage(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            self.store.remove_roots(ROOT_KIND, id)?;
            copies::forget(self.store, id)?;
            tracing::info!("snapshot {name} ({id}) was deleted on another runner: dropped here");
        }
        Ok(())
    }

    /// Use `table` to map languages to general snapshots
    /// ([`SnapshotService::start_sandbox_for_language`]).
    pub fn with_languages(mut self, table: LanguageSnapshots) -> Self {
        self.languages = table;
        self
    }

    /// The general snapshot the operator's table keeps for `language`.
    pub fn language_snapshot(&self, org: &str, language: &str) -> Result<Snapshot> {
        let name = self.languages.snapshot_for(language)?;
        let snap = self.get(org, name)?;
        if !snap.general {
            return Err(ServiceError::Invalid(format!(
                "snapshot {} for language {language:?} is not a general snapshot",
                snap.name
            )));
        }
        Ok(snap)
    }

    /// Start a sandbox from the general snapshot of `language` (the seed's
    /// `create(language="python")`).
    pub fn start_sandbox_for_language(
        &self,
        org: &str,
        language: &str,
        region: Option<&str>,
        opts: SandboxOptions,
    ) -> Result<(Snapshot, SandboxRecord)> {
        let snap = self.language_snapshot(org, language)?;
        self.start_sandbox(org, &snap.id, region, opts)
    }

    /// Use another idle threshold than [`DEFAULT_IDLE_AFTER`].
    pub fn with_idle_after(mut self, idle: std::time::Duration) -> Self {
        self.idle_after = idle;
        self
    }

    fn logs_dir(&self) -> PathBuf {
        self.store.root().join("snapshot-logs")
    }

    /// The kept log of a snapshot's creation (builds keep theirs on failure too).
    pub fn log(&self, org: &str, key: &str) -> Result<String> {
        let snap = self.get(org, key)?;
        let path = self.logs_dir().join(format!("{}.log", snap.id));
        std::fs::read_to_string(&path).map_err(io(format!("read build log {}", path.display())))
    }

    /// A snapshot `org` can see: its own, else a general one of that name.
    /// This store's copy of a snapshot of that name deleted on another
    /// runner is dropped first.
    pub fn get(&self, org: &str, key: &str) -> Result<Snapshot> {
        tenancy::check_org(org)?;
        check_key(key)?;
        let (base, _) = version::split_name(key);
        let repos: Vec<String> = [local_name(org, base), general_local_name(base)]
            .into_iter()
            .filter_map(|r| r.ok().map(|r| format!("{}:", r.name())))
            .collect();
        self.drop_deleted_copies(&|id, name| {
            id == key || repos.iter().any(|r| name.starts_with(r.as_str()))
        })?;
        let mut repo = self.repo();
        repo.mark_idle(self.idle_after)?;
        Ok(repo.get(org, key)?)
    }

    /// One page; snapshots idle past the threshold are shown inactive.
    /// This store's copies of snapshots deleted on other runners are
    /// dropped first.
    pub fn list(&self, q: &ListQuery) -> Result<Page> {
        tenancy::check_org(&q.organization_id)?;
        self.drop_deleted_copies(&|_, _| true)?;
        let mut repo = self.repo();
        repo.mark_idle(self.idle_after)?;
        Ok(repo.list(q)?)
    }

    /// Create a snapshot and make its image; returns it active, or the
    /// error after recording the snapshot as `build_failed`/`error` (with
    /// its log kept). `log` hears every line of progress as it happens.
    /// With `req.general` this is the operator's call: the snapshot is
    /// general (every organization sees and uses it, none changes it), made
    /// with `org`'s rights and named in the general namespace.
    pub fn create(
        &self,
        org: &str,
        source: Source,
        req: CreateRequest,
        log: &mut dyn FnMut(&str),
    ) -> Result<Snapshot> {
        if req.entrypoint.is_some()
            && matches!(
                source,
                Source::Dockerfile { .. } | Source::DockerfileText { .. }
            )
        {
            return Err(ServiceError::Invalid(
                "an entrypoint cannot be given with a Dockerfile source: put ENTRYPOINT in the Dockerfile".into(),
            ));
        }
        tenancy::check_org(org)?;
        // Refused before any record is made: nothing is left behind.
        if let Source::Image(image) | Source::LocalImage(image) = &source {
            self.check_readable(org, image)?;
            // A local image named by digest: not one only another
            // organization's snapshots hold (a remote one is the registry's).
            if let Ok(manifest) = self.store.resolve(image) {
                tenancy::check_pinned(self.store, Some(org), image, &manifest, "snapshot source")?;
            }
        }
        let regions = self.regions_for(&req.regions)?;
        let local = match req.general {
            true => general_local_name(&req.name)?,
            false => local_name(org, &req.name)?,
        };
        // The operator finishes what it started, general snapshots included.
        let actor = (!req.general).then_some(org);
        let snap = self.repo().create(
            NewSnapshot {
                name: req.name.clone(),
                organization_id: org.to_string(),
                general: req.general,
                image_name: local.to_string(),
                entrypoint: req.entrypoint.clone().unwrap_or_default(),
                resources: req.resources,
                build_info: None,
                region_ids: regions.clone(),
            },
            source.work_state(),
        )?;
        let log_path = self.logs_dir().join(format!("{}.log", snap.id));
        std::fs::create_dir_all(self.logs_dir()).map_err(io("create the snapshot log dir"))?;
        // 0600: a build log can hold what a tenant's build printed.
        let mut log_file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&log_path)
                .map_err(io(format!("create {}", log_path.display())))?
        };
        let mut tee = |line: &str| {
            let _ = writeln!(log_file, "{line}");
            log(line);
        };
        let made = self.under_lease(&snap.id, || {
            self.make_image(org, &snap, &source, &req, &local, &regions, &mut tee)
        });
        match made {
            Ok((manifest, info, image_name)) => {
                let size = self.compressed_size(&manifest)?;
                let entrypoint = self.image_entrypoint(&manifest)?;
                self.store.add_root(ROOT_KIND, &snap.id, &manifest)?;
                copies::record(self.store, &snap.id, &local.to_string())?;
                let work = source.work_state();
                let done = self.repo().update_as(actor, &snap.id, |s| {
                    // A worker that stalled past its lease was reported
                    // failed by another runner: it must not revive it.
                    if s.state != work {
                        return Err(SnapshotError::LeaseLost {
                            id: s.id.clone(),
                            state: s.state,
                        });
                    }
                    s.state = SnapshotState::Active;
                    s.size = size;
                    s.entrypoint = entrypoint;
                    s.build_info = Some(info);
                    s.image_name = image_name;
                    Ok(())
                })?;
                self.repo()
                    .set_runner_state(&done.id, &self.runner, SnapshotState::Active)?;
                tee(&format!("snapshot {} ({}) is active", done.name, done.id));
                Ok(done)
            }
            Err(e) => {
                tee(&format!("error: {e}"));
                let failed = match source.work_state() {
                    SnapshotState::Building => SnapshotState::BuildFailed,
                    _ => SnapshotState::Error,
                };
                let _ = self.store.untag(&local);
                // Best effort: if the record cannot be updated, the lease
                // expires and the others report the snapshot failed anyway.
                let _ = self.repo().update_as(actor, &snap.id, |s| {
                    if !s.state.is_work() {
                        return Ok(());
                    }
                    s.state = failed;
                    s.build_info = Some(BuildInfo {
                        source_kind: source.kind().into(),
                        ..BuildInfo::default()
                    });
                    Ok(())
                });
                Err(e)
            }
        }
    }

    fn regions_for(&self, asked: &[String]) -> Result<Vec<String>> {
        let ids: Vec<String> = if asked.is_empty() {
            self.regions
                .default_region()
                .map(str::to_string)
                .into_iter()
                .collect()
        } else {
            asked.to_vec()
        };
        for id in &ids {
            self.regions.prefix(id)?;
        }
        Ok(ids)
    }

    #[allow(clippy::too_many_arguments)]
    fn make_image(
        &self,
        org: &str,
        snap: &Snapshot,
        source: &Source,
        req: &CreateRequest,
        local: &ImageRef,
        regions: &[String],
        log: &mut dyn FnMut(&str),
    ) -> Result<(Digest, BuildInfo, String)> {
        let mut info = BuildInfo {
            source_kind: source.kind().into(),
            ..BuildInfo::default()
        };
        let mut manifest = match source {
            Source::Dockerfile {
                path,
                contexts,
                build_args,
            } => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ServiceError::Invalid(format!("{}: {e}", path.display())))?;
                let ctx = tempfile::Builder::new()
                    .prefix("snapshot-context-")
                    .tempdir_in(self.store.layout().tmp())
                    .map_err(io("create a build context dir"))?;
                let taken = context::assemble(path, &text, contexts, ctx.path())?;
                log(&format!(
                    "building {} from {} with context {}",
                    snap.name,
                    path.display(),
                    taken
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                info.context_digest = Some(tree_digest(ctx.path())?);
                info.context = taken.iter().map(|p| p.display().to_string()).collect();
                info.dockerfile = Some(text.clone());
                info.build_args = build_args.clone();
                let input = DockerfileBuild {
                    text,
                    path,
                    context: ctx.path(),
                    build_args,
                };
                self.build_dockerfile(org, req.network, input, local, log)?
            }
            Source::DockerfileText {
                dockerfile,
                context,
                build_args,
            } => {
                let dir = std::path::absolute(context)
                    .ok()
                    .filter(|d| d.is_dir())
                    .ok_or_else(|| {
                        ServiceError::Invalid(format!(
                            "build context {} is not a directory",
                            context.display()
                        ))
                    })?;
                log(&format!(
                    "building {} from the given Dockerfile with context {}",
                    snap.name,
                    dir.display()
                ));
                info.context_digest = Some(tree_digest(&dir)?);
                info.context = vec![dir.display().to_string()];
                info.dockerfile = Some(dockerfile.clone());
                info.build_args = build_args.clone();
                let path = dir.join("Dockerfile");
                let input = DockerfileBuild {
                    text: dockerfile.clone(),
                    path: &path,
                    context: &dir,
                    build_args,
                };
                self.build_dockerfile(org, req.network, input, local, log)?
            }
            Source::Image(reference) => {
                info.source = Some(reference.clone());
                // As `docker run`: a local copy is used, else it is pulled.
                let manifest = match self.store.resolve(reference) {
                    Ok(m) => m,
                    Err(StoreError::UnknownImage(_)) => {
                        log(&format!("pulling {reference}"));
                        let sink =
                            Extractor(SandboxManager::new(self.store, self.launcher.clone()));
                        let report = self.registry.pull_platform(
                            self.store,
                            reference,
                            &Platform::linux_amd64(),
                            Some(&sink),
                            None,
                        )?;
                        log(&format!(
                            "pulled {} ({} blobs fetched)",
                            report.manifest, report.blobs_fetched
                        ));
                        report.manifest
                    }
                    Err(e) => return Err(e.into()),
                };
                self.check_platform(reference, &manifest)?;
                self.store.tag(local, &manifest)?;
                manifest
            }
            Source::LocalImage(image) => {
                info.source = Some(image.clone());
                let manifest = self.store.resolve(image)?;
                self.check_platform(image, &manifest)?;
                self.store.tag(local, &manifest)?;
                manifest
            }
            Source::Sandbox(id) => {
                info.source = Some(id.clone());
                log(&format!("committing sandbox {id}"));
                let mgr =
                    SandboxManager::new(self.store, self.launcher.clone()).for_organization(org);
                mgr.commit(id, &local.to_string(), Compression::Gzip)?
            }
        };
        if let Some(ep) = &req.entrypoint {
            manifest = self.with_entrypoint(&manifest, ep)?;
            self.store.tag(local, &manifest)?;
        }
        let mut image_name = local.to_string();
        if !regions.is_empty() {
            let (base, ver) = version::split_name(&snap.name);
            let ver = ver.unwrap_or("latest");
            // `snapshot push` goes up under a timestamp-based tag, as the seed CLI does.
            let tag = match source {
                Source::LocalImage(_) => format!("{ver}-{}", unix_now()),
                _ => ver.to_string(),
            };
            let namespace = match req.general {
                true => tenancy::GENERAL.to_string(),
                false => tenancy::namespace(org),
            };
            let name = format!("{namespace}/{base}:{tag}");
            let dests = regions
                .iter()
                .map(|r| self.regions.destination(r, &name))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            log(&format!(
                "pushing to {}",
                dests
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for r in self
                .registry
                .push_many(self.store, &manifest.to_string(), &dests)?
            {
                let r = r?;
                log(&format!(
                    "pushed {} ({} blobs uploaded)",
                    r.destination, r.blobs_uploaded
                ));
            }
            image_name = dests[0].to_string();
        }
        Ok((manifest, info, image_name))
    }

    /// Build a snapshot's Dockerfile `text` in `context`, tagged `local`;
    /// for linux/amd64 whatever this machine is (the seed's rule).
    fn build_dockerfile(
        &self,
        org: &str,
        network: Network,
        input: DockerfileBuild<'_>,
        local: &ImageRef,
        log: &mut dyn FnMut(&str),
    ) -> Result<Digest> {
        let DockerfileBuild {
            text,
            path,
            context,
            build_args,
        } = input;
        let builder = Builder::new(self.store, self.launcher.clone())
            .with_registry(self.registry)
            .with_platform(Platform::linux_amd64());
        let request = BuildRequest {
            dockerfile: text,
            dockerfile_path: path.to_path_buf(),
            context: context.to_path_buf(),
            tags: vec![local.to_string()],
            build_args: build_args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
            target: None,
            no_cache: false,
            compression: Compression::Gzip,
            timestamp: None,
            network,
            run_policy: Default::default(),
            organization: Some(org.to_string()),
            cache_from: vec![],
            cache_to: vec![],
            cancel: None,
        };
        let result = builder.build_with_events(&request, &mut |event| match event {
            BuildEvent::StepStarted { text, .. } => {
                log(&format!("=> {}", text.lines().next().unwrap_or_default()))
            }
            BuildEvent::StepCached { .. } => log("   (cached)"),
            BuildEvent::Output { text, .. } => log(&format!("   | {text}")),
            BuildEvent::Warning { message } => log(&format!("warning: {message}")),
            _ => {}
        })?;
        Ok(result.manifest)
    }

    /// Snapshots run on linux/amd64 machines (the seed's rule).
    fn check_platform(&self, name: &str, manifest: &Digest) -> Result<()> {
        let config = self.image(manifest)?.config;
        let field = |f: &Field<String>, missing: &str| f.get().cloned().unwrap_or(missing.into());
        let (os, arch) = (
            field(&config.os, "linux"),
            field(&config.architecture, "amd64"),
        );
        if os != "linux" || arch != "amd64" {
            return Err(ServiceError::Invalid(format!(
                "image {name} is {os}/{arch}; snapshots must be linux/amd64"
            )));
        }
        Ok(())
    }

    /// The image `manifest` names (typed config, layers); a malformed one
    /// is the caller's bad input.
    fn image(&self, manifest: &Digest) -> Result<Image> {
        self.store.image(manifest).map_err(|e| match e {
            StoreError::NotAnImage(_)
            | StoreError::BadImageConfig { .. }
            | StoreError::DiffIds { .. } => ServiceError::Invalid(e.to_string()),
            e => e.into(),
        })
    }

    fn compressed_size(&self, manifest: &Digest) -> Result<u64> {
        let (_, parsed) = self.store.manifest(manifest)?;
        Ok(parsed.children.iter().map(|l| l.size).sum())
    }

    fn image_entrypoint(&self, manifest: &Digest) -> Result<Vec<String>> {
        let image = self.image(manifest)?;
        Ok(image
            .config
            .run()
            .map(|c| c.entrypoint.or_default())
            .unwrap_or_default())
    }

    /// The same image with ENTRYPOINT replaced (and CMD cleared, as setting
    /// ENTRYPOINT in a Dockerfile does).
    fn with_entrypoint(&self, manifest: &Digest, entrypoint: &[String]) -> Result<Digest> {
        let mut image = self.image(manifest)?;
        let run = image.config.run_mut();
        run.entrypoint = Field::Set(entrypoint.to_vec());
        run.cmd = Field::Absent;
        Ok(self.store.record_image(&image.config, &image.blobs())?)
    }

    /// Start a long-lived sandbox from a snapshot (by id, `name:version` or
    /// name = latest). With `region`, the snapshot is first made available
    /// there (pushed to that region's registry) if it is not yet.
    pub fn start_sandbox(
        &self,
        org: &str,
        key: &str,
        region: Option<&str>,
        opts: SandboxOptions,
    ) -> Result<(Snapshot, SandboxRecord)> {
        let snap = self.get(org, key)?;
        if !snap.state.is_usable() {
            return Err(SnapshotError::Invalid(format!(
                "snapshot {} is {}: no sandbox can start from it",
                snap.name, snap.state
            ))
            .into());
        }
        let local = snapshot_local_name(&snap)?;
        if self.store.lookup_tag(&local)?.is_none() {
            self.pull_here(&snap, &local)?;
        }
        let mut snap = snap;
        if let Some(region) = region {
            if !snap.region_ids.iter().any(|r| r == region) {
                let (base, ver) = version::split_name(&snap.name);
                let dest = self.regions.destination(
                    region,
                    &format!("{}/{base}:{}", namespace_of(&snap), ver.unwrap_or("latest")),
                )?;
                let r = self
                    .registry
                    .push(self.store, &local.to_string(), &dest.to_string())?;
                tracing::info!(
                    "snapshot {} pushed to region {region}: {}",
                    snap.name,
                    r.destination
                );
                let region = region.to_string();
                snap = self.repo().update(org, &snap.id, |s| {
                    s.region_ids.push(region);
                    Ok(())
                })?;
            }
        }
        let mut opts = opts;
        // The snapshot's cpu and mem are the sandbox's limits unless the
        // caller set its own; the network is the caller's (opts.network).
        let r = &mut opts.resources;
        if r.cpu.is_none() && snap.cpu > 0 {
            r.cpu = Some(f64::from(snap.cpu));
        }
        if r.memory_gb.is_none() && snap.mem > 0 {
            r.memory_gb = Some(f64::from(snap.mem));
        }
        // The shared last use, row-locked: a snapshot deleted meanwhile (on
        // any runner) refuses here, before a sandbox exists.
        let snap = self.repo().touch(org, &snap.id)?;
        let mgr = SandboxManager::new(self.store, self.launcher.clone()).for_organization(org);
        let sandbox = mgr.create(&local.to_string(), opts)?;
        Ok((snap, sandbox))
    }

    /// Fetch a snapshot made elsewhere (another runner, its region's
    /// registry) into this store, recording this runner's state as
    /// `pulling`, then `active` (or `error`).
    fn pull_here(&self, snap: &Snapshot, local: &ImageRef) -> Result<()> {
        let set = |state| self.repo().set_runner_state(&snap.id, &self.runner, state);
        set(SnapshotState::Pulling)?;
        // The pull tags the image under its registry name too; the store's
        // name for the copy is `local`, so that tag goes again afterwards
        // (unless it was there before: someone pulled it on purpose).
        let remote = ImageRef::parse(&snap.image_name).ok();
        let remote_was_tagged = match &remote {
            Some(r) => self.store.lookup_tag(r)?.is_some(),
            None => true,
        };
        let pulled = self.registry.pull_platform(
            self.store,
            &snap.image_name,
            &Platform::linux_amd64(),
            Some(&Extractor(SandboxManager::new(
                self.store,
                self.launcher.clone(),
            ))),
            None,
        );
        let report = match pulled {
            Ok(report) => report,
            Err(e) => {
                // The pull's error is the one to report; a record that cannot
                // take `error` (deleted meanwhile) changes nothing for it.
                let _ = set(SnapshotState::Error);
                return Err(e.into());
            }
        };
        self.store.tag(local, &report.manifest)?;
        if let (Some(remote), false) = (&remote, remote_was_tagged) {
            if remote != local {
                match self.store.untag(remote) {
                    Ok(_) | Err(StoreError::UnknownImage(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // Held like a copy made here: prune keeps it, a delete elsewhere
        // drops it (`drop_deleted_copies`).
        self.store.add_root(ROOT_KIND, &snap.id, &report.manifest)?;
        copies::record(self.store, &snap.id, &local.to_string())?;
        set(SnapshotState::Active)?;
        Ok(())
    }

    /// Run `work` while a thread renews this process's lease on snapshot
    /// `id` every third of the lease, so other runners see it alive; if
    /// this process dies, the lease expires and they report it failed.
    fn under_lease<T>(&self, id: &str, work: impl FnOnce() -> T) -> T {
        let repo = &self.repo;
        let lock = || {
            repo.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let every = lock().lease_duration() / 3;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    match lock().renew_lease(id) {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                "snapshot {id}: lease lost; another runner reported it failed"
                            );
                            break;
                        }
                        // A database hiccup: try again next time round.
                        Err(e) => tracing::warn!("snapshot {id}: renewing the lease: {e}"),
                    }
                }
            });
            let out = work();
            drop(stop);
            out
        })
    }

    /// Delete a snapshot of `org`. Sandboxes already running from it keep
    /// their layers (they hold their own GC roots); new ones are refused.
    pub fn delete(&self, org: &str, key: &str) -> Result<Snapshot> {
        let snap = self.get(org, key)?;
        let removing = self.repo().begin_delete(org, &snap.id)?;
        self.finish_delete(&snap)?;
        Ok(removing)
    }

    /// Delete general snapshot `key` (by id or name): the operator's call,
    /// the only way a general snapshot goes.
    pub fn delete_general(&self, key: &str) -> Result<Snapshot> {
        check_key(key)?;
        let mut repo = self.repo();
        let snap = repo.get_general(key)?;
        let removing = repo.begin_delete_as_operator(&snap.id)?;
        drop(repo);
        self.finish_delete(&snap)?;
        Ok(removing)
    }

    /// Untag, drop the GC root, the record and the log of a snapshot in `removing`.
    fn finish_delete(&self, snap: &Snapshot) -> Result<()> {
        if let Ok(local) = snapshot_local_name(snap) {
            match self.store.untag(&local) {
                Ok(_) | Err(StoreError::UnknownImage(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.store.remove_roots(ROOT_KIND, &snap.id)?;
        copies::forget(self.store, &snap.id)?;
        self.repo().remove_record(&snap.id)?;
        // The log may never have been written: nothing to remove then.
        let _ = std::fs::remove_file(self.logs_dir().join(format!("{}.log", snap.id)));
        Ok(())
    }

    /// Refuse a source image of another organization's snapshots, in the
    /// store or in a region's registry.
    fn check_readable(&self, org: &str, reference: &str) -> Result<()> {
        tenancy::check_readable(Some(org), reference, "snapshot source")?;
        let named = ImageRef::parse(reference).ok().map(|r| r.name());
        for id in self.regions.ids() {
            let Ok(prefix) = self.regions.prefix(id) else {
                continue;
            };
            let rest = named
                .as_deref()
                .and_then(|n| n.strip_prefix(prefix.trim_end_matches('/')))
                .and_then(|r| r.strip_prefix('/'));
            let ns = rest.and_then(|r| r.split('/').next());
            if let Some(ns) = ns.filter(|n| rest.is_some_and(|r| r.len() > n.len())) {
                if ns != tenancy::GENERAL && ns != tenancy::namespace(org) {
                    return Err(ServiceError::Invalid(format!(
                        "snapshot source {reference}: a snapshot image of another organization in region {id}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Delete every snapshot `org` owns (general ones are not its to delete).
    pub fn delete_all(&self, org: &str) -> Result<Vec<Snapshot>> {
        let mut q = ListQuery::new(org);
        q.limit = 1000;
        let mut gone = Vec::new();
        loop {
            let page = self.list(&q)?;
            let mine: Vec<Snapshot> = page
                .items
                .into_iter()
                .filter(|s| s.organization_id == org && !s.general)
                .collect();
            if mine.is_empty() {
                break;
            }
            for s in mine {
                gone.push(self.delete(org, &s.id)?);
            }
        }
        Ok(gone)
    }
}

/// A snapshot key (id, `name` or `name:version`) is looked up in the
/// records, never used as a path; still, refuse what no snapshot can be
/// called: empty, over 256 bytes, or outside `[A-Za-z0-9_.:/-]`.
fn check_key(key: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-');
    if key.is_empty() || key.len() > 256 || !key.chars().all(ok_char) {
        return Err(ServiceError::Invalid(format!(
            "{key:?} cannot name a snapshot (1 to 256 of letters, digits and _ . : / -)"
        )));
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A digest of a context tree: relative paths, kinds, modes and contents.
fn tree_digest(root: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for entry in walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .follow_links(false)
    {
        let entry = entry.map_err(|e| ServiceError::Invalid(format!("reading context: {e}")))?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let meta = entry
            .metadata()
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        use std::os::unix::fs::PermissionsExt;
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(meta.permissions().mode().to_le_bytes());
        if entry.file_type().is_file() {
            let mut f = std::fs::File::open(entry.path())
                .map_err(io(format!("read {}", entry.path().display())))?;
            std::io::copy(&mut f, &mut HashWrite(&mut h))
                .map_err(io(format!("read {}", entry.path().display())))?;
        } else if entry.file_type().is_symlink() {
            let l = std::fs::read_link(entry.path())
                .map_err(io(format!("read {}", entry.path().display())))?;
            h.update(l.as_os_str().as_encoded_bytes());
        }
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

struct HashWrite<'a>(&'a mut Sha256);
impl Write for HashWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Platform services (and the library's owned handle) share one service
    /// between threads: the records sit behind a mutex for that.
    #[test]
    fn the_service_can_be_shared_by_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<super::SnapshotService<'static>>();
    }
}
