//! The async face of the snapshot service, for platform services that live
//! on an async runtime. Each call runs the blocking [`SnapshotService`] on a
//! thread of its own (opening the store and a registry client there), so a
//! long build or push never occupies a runtime worker, and the caller
//! awaits the result.

use crate::repo::{ListQuery, Page, SnapshotDb};
use crate::service::{CreateRequest, ServiceError, SnapshotService, Source};
use crate::Snapshot;
use cairn_registry::{Regions, Registry, RegistryOptions};
use cairn_sandbox::manager::{CreateOptions, SandboxRecord};
use cairn_sandbox::Launcher;
use cairn_store::Store;
use std::path::PathBuf;
use std::sync::Arc;

type Result<T> = std::result::Result<T, ServiceError>;

struct Setup {
    store_root: PathBuf,
    launcher: Launcher,
    registry: RegistryOptions,
    regions: Regions,
    /// None: `CAIRN_SNAPSHOT_DB`, else the store's own file.
    db: Option<SnapshotDb>,
}

/// Cheap to clone; every clone talks to the same store.
#[derive(Clone)]
pub struct AsyncSnapshots {
    setup: Arc<Setup>,
}

impl AsyncSnapshots {
    pub fn new(
        store_root: PathBuf,
        launcher: Launcher,
        registry: RegistryOptions,
        regions: Regions,
    ) -> Self {
        AsyncSnapshots {
            setup: Arc::new(Setup {
                store_root,
                launcher,
                registry,
                regions,
                db: None,
            }),
        }
    }

    /// Keep the snapshot records in `db` (e.g. a shared PostgreSQL).
    pub fn with_snapshot_db(self, db: SnapshotDb) -> Self {
        let s = &self.setup;
        AsyncSnapshots {
            setup: Arc::new(Setup {
                store_root: s.store_root.clone(),
                launcher: s.launcher.clone(),
                registry: s.registry.clone(),
                regions: s.regions.clone(),
                db: Some(db),
            }),
        }
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&SnapshotService<'_>) -> Result<T> + Send + 'static,
    {
        let setup = self.setup.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let result = (|| {
                let store = Store::open(&setup.store_root)?;
                let registry = Registry::new(setup.registry.clone())?;
                let db = match &setup.db {
                    Some(db) => db.clone(),
                    None => SnapshotDb::from_env()?,
                };
                let svc = SnapshotService::open_with_db(
                    &store,
                    setup.launcher.clone(),
                    &registry,
                    setup.regions.clone(),
                    &db,
                )?;
                f(&svc)
            })();
            let _ = tx.send(result);
        });
        rx.await.unwrap_or_else(|_| {
            Err(ServiceError::Invalid(
                "the snapshot worker thread panicked".into(),
            ))
        })
    }

    /// [`SnapshotService::create`]; progress lines go to `tracing`.
    pub async fn create(&self, org: &str, source: Source, req: CreateRequest) -> Result<Snapshot> {
        let org = org.to_string();
        self.run(move |svc| svc.create(&org, source, req, &mut |line| tracing::info!("{line}")))
            .await
    }

    pub async fn get(&self, org: &str, key: &str) -> Result<Snapshot> {
        let (org, key) = (org.to_string(), key.to_string());
        self.run(move |svc| svc.get(&org, &key)).await
    }

    pub async fn list(&self, query: ListQuery) -> Result<Page> {
        self.run(move |svc| svc.list(&query)).await
    }

    pub async fn delete(&self, org: &str, key: &str) -> Result<Snapshot> {
        let (org, key) = (org.to_string(), key.to_string());
        self.run(move |svc| svc.delete(&org, &key)).await
    }

    /// [`SnapshotService::delete_general`]: the operator's call.
    pub async fn delete_general(&self, key: &str) -> Result<Snapshot> {
        let key = key.to_string();
        self.run(move |svc| svc.delete_general(&key)).await
    }

    pub async fn start_sandbox(
        &self,
        org: &str,
        key: &str,
        region: Option<&str>,
        opts: CreateOptions,
    ) -> Result<(Snapshot, SandboxRecord)> {
        let (org, key, region) = (org.to_string(), key.to_string(), region.map(str::to_string));
        self.run(move |svc| svc.start_sandbox(&org, &key, region.as_deref(), opts))
            .await
    }
}
