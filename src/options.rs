//! How a [`crate::Cairn`] handle is opened: defaults for everything, each
//! changed by a `with_*` method.

use cairn_registry::{Regions, RegistryOptions};
use cairn_snapshot::SnapshotDb;
use std::path::PathBuf;

/// Options of [`crate::Cairn::open`].
///
/// ```
/// let opts = cairn::CairnOptions::new("/var/lib/my-service/cairn")
///     .with_strict_resources(true);
/// assert_eq!(opts.store(), std::path::Path::new("/var/lib/my-service/cairn"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CairnOptions {
    store: PathBuf,
    registry: Option<RegistryOptions>,
    regions: Option<Regions>,
    helper: Option<PathBuf>,
    strict_resources: bool,
    snapshot_db: Option<SnapshotDb>,
}

impl Default for CairnOptions {
    /// The default store (`$XDG_DATA_HOME/cairn`, `~/.local/share/cairn`,
    /// `/var/lib/cairn` as root), registry options and regions file from the
    /// environment, this binary as the sandbox helper, lenient resources.
    fn default() -> Self {
        CairnOptions::new(cairn_store::default_root(None))
    }
}

impl CairnOptions {
    /// Defaults, with the store at `store` (created when missing).
    pub fn new(store: impl Into<PathBuf>) -> Self {
        CairnOptions {
            store: store.into(),
            registry: None,
            regions: None,
            helper: None,
            strict_resources: false,
            snapshot_db: None,
        }
    }

    /// Talk to registries with `registry` instead of
    /// [`RegistryOptions::from_env`] (credentials, TLS, parallelism).
    pub fn with_registry(mut self, registry: RegistryOptions) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Map snapshot regions to registries with `regions` instead of the
    /// regions file found by [`Regions::load`].
    pub fn with_regions(mut self, regions: Regions) -> Self {
        self.regions = Some(regions);
        self
    }

    /// Start sandboxes through `helper`, a binary whose `main` calls
    /// [`crate::init`] (the `cairn` CLI does), instead of this binary.
    pub fn with_helper(mut self, helper: impl Into<PathBuf>) -> Self {
        self.helper = Some(helper.into());
        self
    }

    /// With `true`, a sandbox whose CPU or memory limit (asked for, or the
    /// snapshot's default) cannot be applied on this machine is refused
    /// (and removed) with [`crate::ErrorKind::Unavailable`]; by default it
    /// starts and lists the limit in `resources.not_applied`.
    pub fn with_strict_resources(mut self, strict: bool) -> Self {
        self.strict_resources = strict;
        self
    }

    /// Keep snapshot records in `db` (e.g. a PostgreSQL database shared by
    /// runners, docs/scale-out.md) instead of what `CAIRN_SNAPSHOT_DB` names
    /// (the store's own SQLite file when unset).
    ///
    /// ```
    /// let db = cairn::snapshot::SnapshotDb::parse("postgres://cairn@db.internal/cairn")?;
    /// let options = cairn::CairnOptions::new("/var/lib/cairn").with_snapshot_db(db);
    /// # let _ = options;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_snapshot_db(mut self, db: SnapshotDb) -> Self {
        self.snapshot_db = Some(db);
        self
    }

    /// The store directory.
    pub fn store(&self) -> &std::path::Path {
        &self.store
    }

    pub(crate) fn registry_options(&self) -> RegistryOptions {
        self.registry
            .clone()
            .unwrap_or_else(RegistryOptions::from_env)
    }

    pub(crate) fn regions(&self) -> Option<&Regions> {
        self.regions.as_ref()
    }

    pub(crate) fn snapshot_db(&self) -> Option<&SnapshotDb> {
        self.snapshot_db.as_ref()
    }

    pub(crate) fn helper(&self) -> Option<&std::path::Path> {
        self.helper.as_deref()
    }

    pub(crate) fn strict_resources(&self) -> bool {
        self.strict_resources
    }
}
