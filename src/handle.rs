//! [`Cairn`]: the one owned handle a service keeps in its state. It owns
//! the store (opened for per-operation leases, so GC can run while the
//! service is up), the sandbox launcher and, once first needed, one
//! registry client. Sub-crate types that borrow the store (`Builder`,
//! `SnapshotService`, `SandboxManager`) are made per call from it: cheap.

use crate::error::{Error, ErrorKind, Result};
use crate::options::CairnOptions;
use cairn_registry::{PullReport, PushReport, Regions, Registry};
use cairn_sandbox::Launcher;
use cairn_snapshot::repo::{RepoPool, DEFAULT_POOL_SIZE};
use cairn_snapshot::SnapshotDb;
use cairn_store::gc::GcReport;
use cairn_store::Store;
use std::sync::{Arc, Mutex};

/// The library's entry point: builds, snapshots, sandboxes, pull/push and
/// GC over one store. Cheap to clone (an `Arc`), `Send + Sync`; blocking
/// methods here, the same surface for async code through
/// [`Cairn::asynchronous`].
///
/// ```
/// cairn::init(); // first thing in main
/// # let dir = tempfile::tempdir()?;
/// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
/// let shared = cairn.clone(); // e.g. into an axum State
/// std::thread::spawn(move || shared.images().map(|i| i.len())).join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Cairn {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cairn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cairn")
            .field("store", &self.inner.store.root())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<Store>,
    pub(crate) options: CairnOptions,
    pub(crate) launcher: Launcher,
    registry: Mutex<Option<Arc<Registry>>>,
    regions: Mutex<Option<Regions>>,
    /// Open connections to the snapshot records, made at the first
    /// snapshot call and kept for the handle's life.
    snapshot_repos: Mutex<Option<RepoPool>>,
}

impl Cairn {
    /// Open (creating if needed) the store of `options`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// assert!(cairn.images()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(options: CairnOptions) -> Result<Cairn> {
        let store = Store::open_per_operation(options.store())?;
        let launcher = match options.helper() {
            Some(helper) => Launcher::with_helper(helper),
            None => Launcher::current_exe()?,
        };
        Ok(Cairn {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                options,
                launcher,
                registry: Mutex::new(None),
                regions: Mutex::new(None),
                snapshot_repos: Mutex::new(None),
            }),
        })
    }

    /// The store, for what this facade does not cover (see `cairn::store`).
    /// Hold a [`Store::lease`] around work GC must not interleave with.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// assert_eq!(cairn.store().root(), std::path::absolute(dir.path())?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The options the handle was opened with.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// assert_eq!(cairn.options().store(), dir.path());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn options(&self) -> &CairnOptions {
        &self.inner.options
    }

    /// The registry client, made at the first call that needs one and
    /// shared by every clone of this handle.
    pub(crate) fn registry(&self) -> Result<Arc<Registry>> {
        let mut slot = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let registry = Arc::new(Registry::new(self.inner.options.registry_options())?);
        *slot = Some(registry.clone());
        Ok(registry)
    }

    /// The pool of snapshot-record connections (the options' database,
    /// else `CAIRN_SNAPSHOT_DB`, else the store's file), opened at the
    /// first call that needs it; a failed open is retried by the next call.
    pub(crate) fn snapshot_repos(&self) -> Result<RepoPool> {
        let mut slot = self
            .inner
            .snapshot_repos
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = slot.as_ref() {
            return Ok(pool.clone());
        }
        let db = match self.inner.options.snapshot_db() {
            Some(db) => db.clone(),
            None => SnapshotDb::from_env()?,
        };
        let meta_db = self.inner.store.layout().meta_db();
        let pool = RepoPool::open(&db, &meta_db, DEFAULT_POOL_SIZE)?;
        *slot = Some(pool.clone());
        Ok(pool)
    }

    /// The regions (given, or loaded once from the regions file).
    pub(crate) fn regions(&self) -> Result<Regions> {
        if let Some(r) = self.inner.options.regions() {
            return Ok(r.clone());
        }
        let mut slot = self.inner.regions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let regions = Regions::load(None)?;
        *slot = Some(regions.clone());
        Ok(regions)
    }

    /// Fail now, before anything is made, if sandboxes cannot start
    /// (the binary never called [`crate::init`]).
    pub(crate) fn check_ready(&self) -> Result<()> {
        Ok(self.inner.launcher.check_ready()?)
    }

    /// Every tagged image of the store: (name, manifest digest).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// let images = cairn.images()?;
    /// assert!(images.iter().any(|(name, _)| name.contains("busybox:fixture")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn images(&self) -> Result<Vec<(String, cairn_store::Digest)>> {
        Ok(self
            .inner
            .store
            .images()?
            .into_iter()
            .flat_map(|i| i.names.into_iter().map(move |n| (n, i.digest)))
            .collect())
    }

    /// Pull `reference` from its registry into the store (tagged under its
    /// full name), extracting layers as they land.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// // Nothing listens on port 1: the registry is unavailable.
    /// let err = cairn.pull("127.0.0.1:1/nothing:here").unwrap_err();
    /// assert_eq!(err.kind(), cairn::ErrorKind::Unavailable);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pull(&self, reference: &str) -> Result<PullReport> {
        let registry = self.registry()?;
        let _lease = self.inner.store.lease()?;
        let sink = self
            .check_ready()
            .ok()
            .map(|()| cairn_snapshot::service::Extractor(self.sandbox_manager(None)));
        Ok(registry.pull(
            &self.inner.store,
            reference,
            sink.as_ref().map(|s| s as &dyn cairn_registry::LayerSink),
        )?)
    }

    /// Push the store image `image` (name or digest) to `dest`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// let err = cairn.push("no-such-image", "127.0.0.1:1/x:y").unwrap_err();
    /// assert_eq!(err.kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push(&self, image: &str, dest: &str) -> Result<PushReport> {
        let _lease = self.inner.store.lease()?;
        self.inner.store.resolve(image)?;
        Ok(self.registry()?.push(&self.inner.store, image, dest)?)
    }

    /// Collect garbage while the service runs: waits for operations in
    /// flight (builds, pulls, sandbox creates and commits hold leases),
    /// keeps everything a tag, snapshot, cached build step (within
    /// `cache_budget` bytes, LRU) or live sandbox reaches, deletes the rest.
    /// Running sandboxes keep their layers: they are GC roots.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// let report = cairn.gc(None)?;
    /// assert_eq!(report.blobs_removed, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn gc(&self, cache_budget: Option<u64>) -> Result<GcReport> {
        let exclusive = Store::open_exclusive(self.inner.store.root())?;
        let mapping = self.sandbox_manager(None).id_mapping().clone();
        let remover = cairn_sandbox::TaskRemover {
            launcher: &self.inner.launcher,
            mapping: &mapping,
        };
        Ok(exclusive.gc_with(cache_budget, &remover)?)
    }

    /// A sandbox manager over the store, for one call.
    pub(crate) fn sandbox_manager(
        &self,
        organization: Option<&str>,
    ) -> cairn_sandbox::manager::SandboxManager<'_> {
        let m = cairn_sandbox::manager::SandboxManager::new(
            &self.inner.store,
            self.inner.launcher.clone(),
        );
        match organization {
            Some(org) => m.for_organization(org),
            None => m,
        }
    }

    /// Refuse an empty or malformed organization id early, as [`ErrorKind::Invalid`].
    pub(crate) fn check_org(org: &str) -> Result<()> {
        cairn_builder::tenancy::check_org(org)
            .map_err(|e| Error::new(ErrorKind::Invalid, e.to_string()))
    }
}
