//! Snapshots through the handle: create (from a Dockerfile, an image, a
//! sandbox), get, list, delete, start sandboxes from them, read their logs.
//! A `SnapshotService` is made per call over the handle's store.

use crate::error::Result;
use crate::handle::Cairn;
use crate::sandboxes::SandboxOptions;
use cairn_sandbox::manager::SandboxRecord;
use cairn_sandbox::Network;
use cairn_snapshot::record::Resources;
use cairn_snapshot::repo::{ListQuery, Page};
use cairn_snapshot::service::{CreateRequest, SnapshotService, Source};
use cairn_snapshot::Snapshot;

/// What a new snapshot is and where its image comes from.
///
/// ```
/// use cairn::snapshot::service::Source;
/// let req = cairn::SnapshotRequest::new("py:3.12", Source::Image("python:3.12".into()));
/// assert_eq!(req.resources.cpu, 1); // the platform's defaults: 1 cpu, 1 GB, 3 GB disk
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SnapshotRequest {
    /// `name` or `name:version`.
    pub name: String,
    /// A Dockerfile (text or path), a registry image, a store image, a sandbox.
    pub source: Source,
    /// Overrides the image's ENTRYPOINT (not with a Dockerfile).
    pub entrypoint: Option<Vec<String>>,
    /// Defaults of sandboxes started from it (cpu and memory are applied as limits).
    pub resources: Resources,
    /// Region ids to push it to.
    pub regions: Vec<String>,
    /// A general snapshot (the operator's: every organization may use it).
    pub general: bool,
    /// Network of the build's RUN steps.
    pub network: Network,
}

impl SnapshotRequest {
    /// Snapshot `name` from `source`, with the platform's default resources.
    ///
    /// ```
    /// use cairn::snapshot::service::Source;
    /// let req = cairn::SnapshotRequest::new("app", Source::Sandbox("dev".into()));
    /// assert_eq!(req.name, "app");
    /// ```
    pub fn new(name: impl Into<String>, source: Source) -> Self {
        SnapshotRequest {
            name: name.into(),
            source,
            entrypoint: None,
            resources: Resources::default(),
            regions: Vec::new(),
            general: false,
            network: Network::default(),
        }
    }

    /// A snapshot built from Dockerfile `text` with `context` as its build context.
    ///
    /// ```
    /// let req = cairn::SnapshotRequest::dockerfile("app:1", "FROM busybox:fixture\n", "/srv/ctx");
    /// assert!(matches!(req.source, cairn::snapshot::service::Source::DockerfileText { .. }));
    /// ```
    pub fn dockerfile(
        name: impl Into<String>,
        text: impl Into<String>,
        context: impl Into<std::path::PathBuf>,
    ) -> Self {
        SnapshotRequest::new(
            name,
            Source::DockerfileText {
                dockerfile: text.into(),
                context: context.into(),
                build_args: Default::default(),
            },
        )
    }
}

impl Cairn {
    /// A snapshot service over this handle's store, for one call, over a
    /// connection from the handle's pool (returned when the call ends).
    fn with_snapshots<T>(&self, f: impl FnOnce(&SnapshotService<'_>) -> Result<T>) -> Result<T> {
        let registry = self.registry()?;
        let repo = self.snapshot_repos()?.get()?;
        let service = SnapshotService::open_with_repo(
            self.store(),
            self.inner.launcher.clone(),
            &registry,
            self.regions()?,
            repo,
        )?;
        f(&service)
    }

    /// Create snapshot `req` for organization `org` and make its image;
    /// `log` hears each line of progress. Returns it active.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// let ctx = tempfile::tempdir()?;
    /// let req = cairn::SnapshotRequest::dockerfile("app:1", "FROM busybox:fixture\nRUN echo hi > /hi\n", ctx.path());
    /// let snap = cairn.create_snapshot("acme", &req, &mut |line| println!("{line}"))?;
    /// assert_eq!(snap.name, "app:1");
    /// assert_eq!(cairn.snapshot("acme", "app:1")?.id, snap.id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_snapshot(
        &self,
        org: &str,
        req: &SnapshotRequest,
        log: &mut dyn FnMut(&str),
    ) -> Result<Snapshot> {
        Cairn::check_org(org)?;
        if matches!(
            req.source,
            Source::Dockerfile { .. } | Source::DockerfileText { .. } | Source::Sandbox(_)
        ) {
            self.check_ready()?;
        }
        let _lease = self.store().lease()?;
        let create = CreateRequest {
            name: req.name.clone(),
            entrypoint: req.entrypoint.clone(),
            resources: req.resources,
            regions: req.regions.clone(),
            general: req.general,
            network: req.network,
        };
        self.with_snapshots(|s| Ok(s.create(org, req.source.clone(), create, log)?))
    }

    /// Snapshot `key` (id, `name:version`, or name = latest) as `org` sees it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// assert_eq!(cairn.snapshot("acme", "nope").unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self, org: &str, key: &str) -> Result<Snapshot> {
        self.with_snapshots(|s| Ok(s.get(org, key)?))
    }

    /// One page of `org`'s snapshots (and the general ones).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// let page = cairn.snapshots(&cairn::snapshot::repo::ListQuery::new("acme"))?;
    /// assert_eq!(page.total, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshots(&self, query: &ListQuery) -> Result<Page> {
        self.with_snapshots(|s| Ok(s.list(query)?))
    }

    /// Delete `org`'s snapshot `key`; running sandboxes from it keep running.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// assert_eq!(cairn.delete_snapshot("acme", "nope").unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_snapshot(&self, org: &str, key: &str) -> Result<Snapshot> {
        let _lease = self.store().lease()?;
        self.with_snapshots(|s| Ok(s.delete(org, key)?))
    }

    /// The kept log of snapshot `key`'s creation.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// assert_eq!(cairn.snapshot_log("acme", "nope").unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot_log(&self, org: &str, key: &str) -> Result<String> {
        self.with_snapshots(|s| Ok(s.log(org, key)?))
    }

    /// Start a sandbox for `org` from snapshot `key`. The snapshot's cpu and
    /// memory are the sandbox's limits unless `opts` sets its own; with
    /// strict resources ([`crate::CairnOptions::with_strict_resources`]) a
    /// limit this machine cannot apply fails the call.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// # let ctx = tempfile::tempdir()?;
    /// # cairn.create_snapshot("acme", &cairn::SnapshotRequest::dockerfile("app:1", "FROM busybox:fixture\n", ctx.path()), &mut |_| {})?;
    /// let sb = cairn.start_sandbox("acme", "app:1", &Default::default())?;
    /// assert_eq!(sb.resources.cpu, Some(1.0)); // the snapshot's default
    /// # cairn.remove_sandbox(&sb.id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_sandbox(
        &self,
        org: &str,
        key: &str,
        opts: &SandboxOptions,
    ) -> Result<SandboxRecord> {
        self.check_ready()?;
        let _lease = self.store().lease()?;
        let (_, record) =
            self.with_snapshots(|s| Ok(s.start_sandbox(org, key, None, opts.create_options())?))?;
        self.enforce_strict(&record)?;
        Ok(record)
    }
}
