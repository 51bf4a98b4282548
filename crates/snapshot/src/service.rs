//! What platform services call: snapshots made from Dockerfiles, registry
//! images, local images and live sandboxes; sandboxes started from them;
//! deletion; all with the record kept in step.
//!
//! Every snapshot's image is also tagged in the local store as
//! `localhost/snapshots/<org>/<name>:<version>` (its *local name*), and held
//! as a GC root of kind `snapshot`. With regions, it is pushed to each
//! region's registry, and `imageName` is the first region's reference.

use crate::context;
use crate::record::{BuildInfo, Resources, Snapshot};
use crate::repo::{ListQuery, NewSnapshot, Page, SnapshotError, SnapshotRepo};
use crate::state::SnapshotState;
use crate::version;
use cairn_build::{BuildError, BuildEvent, BuildRequest, Builder};
use cairn_layer::Compression;
use cairn_registry::{LayerSink, Regions, Registry, RegistryError};
use cairn_sandbox::manager::{
    CreateOptions as SandboxOptions, ManagerError, SandboxManager, SandboxRecord,
};
use cairn_sandbox::{Launcher, Network};
use cairn_store::{Digest, ImageRef, Store, StoreError};
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

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
            Source::Dockerfile { .. } => "dockerfile",
            Source::Image(_) => "image",
            Source::LocalImage(_) => "local_image",
            Source::Sandbox(_) => "sandbox",
        }
    }

    /// The state a snapshot is in while its image is being made.
    fn work_state(&self) -> SnapshotState {
        match self {
            Source::Dockerfile { .. } | Source::Sandbox(_) => SnapshotState::Building,
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
    repo: RefCell<SnapshotRepo>,
    launcher: Launcher,
    registry: &'s Registry,
    regions: Regions,
    /// Active snapshots unused this long become inactive.
    idle_after: std::time::Duration,
}

/// The default idle threshold: two weeks without a sandbox.
pub const DEFAULT_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// A pull's [`LayerSink`] that extracts each layer into the store's layer
/// dirs as it lands (rootless: in a helper task), so a sandbox from the
/// image starts without waiting for extraction.
pub struct Extractor<'a>(pub SandboxManager<'a>);
impl LayerSink for Extractor<'_> {
    fn layer_ready(&self, blob: &Digest, diff_id: &Digest) -> std::result::Result<(), String> {
        self.0
            .extract_layers(&[(*blob, *diff_id)])
            .map_err(|e| e.to_string())
    }
}

/// `org` made safe for an image path component.
fn org_component(org: &str) -> String {
    let s: String = org
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "org".into()
    } else {
        s
    }
}

/// The store name of snapshot `name:version` of `org`.
pub fn local_name(org: &str, name: &str) -> Result<ImageRef> {
    let (base, ver) = version::split_name(name);
    let full = format!(
        "localhost/snapshots/{}/{}:{}",
        org_component(org),
        base,
        ver.unwrap_or("latest")
    );
    ImageRef::parse(&full).map_err(|e| {
        ServiceError::Invalid(format!(
            "snapshot name {name:?}: {e} (names are lowercase letters, digits and . _ -, versions up to 128 of [A-Za-z0-9_.-])"
        ))
    })
}

impl<'s> SnapshotService<'s> {
    pub fn open(
        store: &'s Store,
        launcher: Launcher,
        registry: &'s Registry,
        regions: Regions,
    ) -> Result<Self> {
        let repo = SnapshotRepo::open(&store.layout().meta_db())?;
        Ok(SnapshotService {
            store,
            repo: RefCell::new(repo),
            launcher,
            registry,
            regions,
            idle_after: DEFAULT_IDLE_AFTER,
        })
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

    pub fn get(&self, org: &str, key: &str) -> Result<Snapshot> {
        let mut repo = self.repo.borrow_mut();
        repo.mark_idle(self.idle_after)?;
        Ok(repo.get(org, key)?)
    }

    /// One page; snapshots idle past the threshold are shown inactive.
    pub fn list(&self, q: &ListQuery) -> Result<Page> {
        let mut repo = self.repo.borrow_mut();
        repo.mark_idle(self.idle_after)?;
        Ok(repo.list(q)?)
    }

    /// Create a snapshot and make its image; returns it active, or the
    /// error after recording the snapshot as `build_failed`/`error` (with
    /// its log kept). `log` hears every line of progress as it happens.
    pub fn create(
        &self,
        org: &str,
        source: Source,
        req: CreateRequest,
        log: &mut dyn FnMut(&str),
    ) -> Result<Snapshot> {
        if req.entrypoint.is_some() && matches!(source, Source::Dockerfile { .. }) {
            return Err(ServiceError::Invalid(
                "--entrypoint cannot be used with --dockerfile or --context: put ENTRYPOINT in the Dockerfile".into(),
            ));
        }
        let regions = self.regions_for(&req.regions)?;
        let local = local_name(org, &req.name)?;
        let snap = self.repo.borrow_mut().create(
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
        let mut log_file = std::fs::File::create(&log_path)
            .map_err(io(format!("create {}", log_path.display())))?;
        let mut tee = |line: &str| {
            let _ = writeln!(log_file, "{line}");
            log(line);
        };
        match self.make_image(org, &snap, &source, &req, &local, &regions, &mut tee) {
            Ok((manifest, info, image_name)) => {
                let size = self.compressed_size(&manifest)?;
                let entrypoint = self.image_entrypoint(&manifest)?;
                self.store.add_root(ROOT_KIND, &snap.id, &manifest)?;
                let done = self.repo.borrow_mut().update(org, &snap.id, |s| {
                    s.state = SnapshotState::Active;
                    s.size = size;
                    s.entrypoint = entrypoint;
                    s.build_info = Some(info);
                    s.image_name = image_name;
                    Ok(())
                })?;
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
                let _ = self.repo.borrow_mut().update(org, &snap.id, |s| {
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
                info.dockerfile = Some(text.clone());
                info.build_args = build_args.clone();
                let builder =
                    Builder::new(self.store, self.launcher.clone()).with_registry(self.registry);
                let request = BuildRequest {
                    dockerfile: text,
                    dockerfile_path: path.clone(),
                    context: ctx.path().to_path_buf(),
                    tags: vec![local.to_string()],
                    build_args: build_args
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<HashMap<_, _>>(),
                    target: None,
                    no_cache: false,
                    compression: Compression::Gzip,
                    timestamp: None,
                    network: req.network,
                    run_policy: Default::default(),
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
                result.manifest
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
                        let report = self.registry.pull(self.store, reference, Some(&sink))?;
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
                let mgr = SandboxManager::new(self.store, self.launcher.clone());
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
            let name = format!("{}/{base}:{tag}", org_component(org));
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

    /// Snapshots run on linux/amd64 machines (the seed's rule).
    fn check_platform(&self, name: &str, manifest: &Digest) -> Result<()> {
        let config = self.config(manifest)?;
        let (os, arch) = (
            config["os"].as_str().unwrap_or("linux"),
            config["architecture"].as_str().unwrap_or("amd64"),
        );
        if os != "linux" || arch != "amd64" {
            return Err(ServiceError::Invalid(format!(
                "image {name} is {os}/{arch}; snapshots must be linux/amd64"
            )));
        }
        Ok(())
    }

    fn config(&self, manifest: &Digest) -> Result<serde_json::Value> {
        let (_, parsed) = self.store.manifest(manifest)?;
        let config = parsed
            .config
            .ok_or_else(|| ServiceError::Invalid(format!("image {manifest} has no config")))?;
        serde_json::from_slice(&self.store.read_blob_bytes(&config.digest)?).map_err(|e| {
            ServiceError::Invalid(format!("image {manifest}: config is not JSON: {e}"))
        })
    }

    fn compressed_size(&self, manifest: &Digest) -> Result<u64> {
        let (_, parsed) = self.store.manifest(manifest)?;
        Ok(parsed.children.iter().map(|l| l.size).sum())
    }

    fn image_entrypoint(&self, manifest: &Digest) -> Result<Vec<String>> {
        let config = self.config(manifest)?;
        Ok(config["config"]["Entrypoint"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The same image with ENTRYPOINT replaced (and CMD cleared, as setting
    /// ENTRYPOINT in a Dockerfile does).
    fn with_entrypoint(&self, manifest: &Digest, entrypoint: &[String]) -> Result<Digest> {
        let mut config = self.config(manifest)?;
        config["config"]["Entrypoint"] = entrypoint
            .iter()
            .map(|s| serde_json::Value::from(s.as_str()))
            .collect();
        if let Some(c) = config["config"].as_object_mut() {
            c.remove("Cmd");
        }
        let (_, parsed) = self.store.manifest(manifest)?;
        let bytes =
            serde_json::to_vec(&config).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        Ok(self.store.record_oci_image(&bytes, &parsed.children)?)
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
        let local = local_name(&snap.organization_id, &snap.name)?;
        if self.store.lookup_tag(&local)?.is_none() {
            // Not on this machine: fetch it from where it lives.
            let report = self.registry.pull(
                self.store,
                &snap.image_name,
                Some(&Extractor(SandboxManager::new(
                    self.store,
                    self.launcher.clone(),
                ))),
            )?;
            self.store.tag(&local, &report.manifest)?;
        }
        let mut snap = snap;
        if let Some(region) = region {
            if !snap.region_ids.iter().any(|r| r == region) {
                let (base, ver) = version::split_name(&snap.name);
                let dest = self.regions.destination(
                    region,
                    &format!(
                        "{}/{base}:{}",
                        org_component(&snap.organization_id),
                        ver.unwrap_or("latest")
                    ),
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
                snap = self.repo.borrow_mut().update(org, &snap.id, |s| {
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
        let mgr = SandboxManager::new(self.store, self.launcher.clone());
        let sandbox = mgr.create(&local.to_string(), opts)?;
        let snap = self.repo.borrow_mut().touch(org, &snap.id)?;
        Ok((snap, sandbox))
    }

    /// Delete a snapshot of `org`. Sandboxes already running from it keep
    /// their layers (they hold their own GC roots); new ones are refused.
    pub fn delete(&self, org: &str, key: &str) -> Result<Snapshot> {
        let snap = self.get(org, key)?;
        let removing = self.repo.borrow_mut().begin_delete(org, &snap.id)?;
        if let Ok(local) = local_name(&snap.organization_id, &snap.name) {
            match self.store.untag(&local) {
                Ok(_) | Err(StoreError::UnknownImage(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.store.remove_roots(ROOT_KIND, &snap.id)?;
        self.repo.borrow_mut().remove_record(&snap.id)?;
        let _ = std::fs::remove_file(self.logs_dir().join(format!("{}.log", snap.id)));
        Ok(removing)
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
