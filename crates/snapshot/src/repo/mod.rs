//! The snapshot repository: snapshot records behind one trait
//! ([`SnapshotBackend`]) with two engines, the embedded SQLite file of a
//! store (the zero-setup default) and PostgreSQL (records shared by many
//! runners, docs/scale-out.md).
//!
//! [`SnapshotRepo`] is the handle callers use: it holds the rules (names,
//! resources, ownership, the state graph, which version `get` picks) and
//! hands the backend only storage work. Every state change is one backend
//! transaction that locks the row, reads it, applies the change and writes
//! it back, so two processes — on one machine or on two runners — cannot
//! both move a snapshot. A snapshot in a work state (building, pulling)
//! holds a *lease* that its worker renews; once the lease expires, every
//! reader reports the snapshot failed instead of leaving it stuck.

mod db;
mod lease;
mod pg_url;
mod pool;
mod postgres;
mod sqlite;

pub use db::SnapshotDb;
pub use lease::{LeaseTerms, DEFAULT_LEASE};
pub use pool::{RepoPool, DEFAULT_POOL_SIZE};

use crate::record::{BuildInfo, Limits, Resources, Snapshot};
use crate::state::SnapshotState;
use crate::version;
use std::path::Path;
use std::time::Duration;

/// Errors of the snapshot repository.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {name} already exists in organization {org}")]
    Duplicate { name: String, org: String },
    #[error("snapshot {id} is {from}; it cannot become {to}")]
    BadTransition {
        id: String,
        from: SnapshotState,
        to: SnapshotState,
    },
    #[error("snapshot {0} is general (public, read-only): it cannot be changed or deleted")]
    General(String),
    #[error("snapshot {0} belongs to another organization")]
    OtherOrganization(String),
    #[error("invalid snapshot: {0}")]
    Invalid(String),
    #[error("snapshot database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("snapshot database (PostgreSQL {target}): {source}")]
    Postgres {
        /// Host, port and database, never the password.
        target: String,
        #[source]
        source: ::postgres::Error,
    },
    #[error("snapshot database {target}: {message}")]
    Config { target: String, message: String },
    #[error("snapshot database {target}: no connection: {message}")]
    Pool { target: String, message: String },
    #[error("snapshot database {target}: schema version {found} is newer than this Cairn's {known}; upgrade Cairn")]
    SchemaTooNew {
        target: String,
        found: i64,
        known: i64,
    },
    #[error("snapshot {id}: this worker's lease was lost (another runner reported it {state})")]
    LeaseLost { id: String, state: SnapshotState },
    #[error("snapshot record {id} is corrupt: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
}

impl SnapshotError {
    /// True when the caller's input is at fault (CLI exit 2).
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            SnapshotError::Db(_)
                | SnapshotError::Postgres { .. }
                | SnapshotError::Pool { .. }
                | SnapshotError::SchemaTooNew { .. }
                | SnapshotError::LeaseLost { .. }
                | SnapshotError::Corrupt { .. }
        )
    }
}

pub(crate) type Result<T> = std::result::Result<T, SnapshotError>;

/// What a new snapshot is made of.
#[derive(Debug, Clone)]
pub struct NewSnapshot {
    pub name: String,
    pub organization_id: String,
    pub general: bool,
    pub image_name: String,
    pub entrypoint: Vec<String>,
    pub resources: Resources,
    pub build_info: Option<BuildInfo>,
    pub region_ids: Vec<String>,
}

/// A listing request. Pages start at 1.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub organization_id: String,
    pub state: Option<SnapshotState>,
    pub name_prefix: Option<String>,
    pub page: u32,
    pub limit: u32,
}

impl ListQuery {
    /// The seed CLI's defaults: page 1, 100 per page.
    pub fn new(organization_id: &str) -> Self {
        ListQuery {
            organization_id: organization_id.into(),
            state: None,
            name_prefix: None,
            page: 1,
            limit: 100,
        }
    }

    /// The name prefix as a LIKE pattern (`\` escapes), for both backends.
    pub(crate) fn like_pattern(&self) -> Option<String> {
        self.name_prefix.as_ref().map(|p| {
            let escaped = p
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("{escaped}%")
        })
    }

    /// Rows to skip before the page.
    pub(crate) fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.limit)
    }
}

/// One page of a listing, in the platform's shape.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page {
    pub items: Vec<Snapshot>,
    pub total: u64,
    pub page: u32,
    pub limit: u32,
}

/// A record found by name: its version and whether it is general.
pub struct Named {
    pub version: String,
    pub general: bool,
    pub snap: Snapshot,
}

/// Storage work of one engine. Implementations keep each method one
/// transaction; [`SnapshotBackend::modify`] locks the row it changes
/// (`SELECT … FOR UPDATE` in PostgreSQL, a write transaction in SQLite).
pub trait SnapshotBackend: Send {
    /// Insert `snap` (holding `lease` when in a work state). `Ok(false)`
    /// when its `name:version` is taken in its organization, or, for a
    /// general snapshot, among general ones.
    fn insert(&mut self, snap: &Snapshot, lease: Option<&LeaseTerms>) -> Result<bool>;
    /// Lock record `id`, apply `change`, write it back; take the lease when
    /// the change starts work, drop it when the work ends.
    fn modify(
        &mut self,
        id: &str,
        change: &mut dyn FnMut(&mut Snapshot) -> Result<()>,
        lease: &LeaseTerms,
    ) -> Result<Snapshot>;
    /// Record `id` if `org` can see it (own or general); `None`: general only.
    fn by_id(&mut self, org: Option<&str>, id: &str) -> Result<Option<Snapshot>>;
    /// Every version of `base` `org` can see (own, then general, each
    /// oldest first); `None`: general only.
    fn by_name(&mut self, org: Option<&str>, base: &str) -> Result<Vec<Named>>;
    /// One page and the total, filtered and paged in SQL.
    fn list(&mut self, q: &ListQuery) -> Result<(Vec<Snapshot>, u64)>;
    /// Delete record `id` if it is `removing`; false if there was none.
    fn remove_removing(&mut self, id: &str) -> Result<bool>;
    /// Active records last used (or created) before `cutoff` (RFC 3339)
    /// become inactive, stamped `now`.
    fn mark_idle(&mut self, cutoff: &str, now: &str) -> Result<usize>;
    /// Records in a work state whose lease expired (by the database's
    /// clock), or whose holder `is_dead` tells is gone: apply `fail`.
    fn expire_leases(
        &mut self,
        is_dead: &dyn Fn(&str) -> bool,
        fail: &dyn Fn(&mut Snapshot),
    ) -> Result<usize>;
    /// Extend the lease on `id` if `lease.owner` still holds it.
    fn renew_lease(&mut self, id: &str, lease: &LeaseTerms) -> Result<bool>;
    /// Record what runner `runner` has of snapshot `id` (the snapshot row
    /// is locked shared: a snapshot being removed refuses).
    fn set_runner_state(&mut self, id: &str, runner: &str, state: SnapshotState) -> Result<()>;
    /// What runner `runner` has of snapshot `id`, if it ever took it.
    fn runner_state(&mut self, id: &str, runner: &str) -> Result<Option<SnapshotState>>;
    /// What runner `runner` has of each of `ids` it ever took.
    fn runner_states(
        &mut self,
        ids: &[String],
        runner: &str,
    ) -> Result<Vec<(String, SnapshotState)>>;
    /// Which of `ids` have a record that is not `removing`.
    fn existing(&mut self, ids: &[String]) -> Result<Vec<String>>;
    /// A round trip to the database (a pool's health check).
    fn ping(&mut self) -> Result<()> {
        Ok(())
    }
    /// True when the connection is gone for good (a pool drops it).
    fn is_broken(&mut self) -> bool {
        false
    }
}

/// The backend a repository works through: its own, or one lent by a
/// [`RepoPool`] (returned when the repository is dropped).
enum Backend {
    Owned(Box<dyn SnapshotBackend>),
    Pooled(pool::Pooled),
}

impl std::ops::Deref for Backend {
    type Target = dyn SnapshotBackend;
    fn deref(&self) -> &Self::Target {
        match self {
            Backend::Owned(b) => b.as_ref(),
            Backend::Pooled(b) => b.as_ref(),
        }
    }
}

impl std::ops::DerefMut for Backend {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Backend::Owned(b) => b.as_mut(),
            Backend::Pooled(b) => b.as_mut(),
        }
    }
}

/// The snapshot records: the rules over one backend.
pub struct SnapshotRepo {
    backend: Backend,
    limits: Limits,
    lease: LeaseTerms,
    /// Records other stores may change (any database but the embedded one).
    shared: bool,
}

/// Open the backend `db` names (`embedded`: the store's SQLite file).
fn open_backend(db: &SnapshotDb, embedded: &Path) -> Result<Box<dyn SnapshotBackend>> {
    Ok(match db {
        SnapshotDb::Embedded => Box::new(sqlite::SqliteBackend::open(embedded)?),
        SnapshotDb::Sqlite(path) => Box::new(sqlite::SqliteBackend::open(path)?),
        SnapshotDb::Postgres(url) => Box::new(postgres::PgBackend::connect(url)?),
    })
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

fn new_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        // Fall back on time and pid: ids must be unique, not secret.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Decode a stored record.
pub(crate) fn decode(id: &str, record: &str) -> Result<Snapshot> {
    serde_json::from_str(record).map_err(|source| SnapshotError::Corrupt {
        id: id.to_string(),
        source,
    })
}

/// Encode a record for storage.
pub(crate) fn encode(snap: &Snapshot) -> Result<String> {
    serde_json::to_string(snap).map_err(|e| SnapshotError::Invalid(e.to_string()))
}

/// The indexed columns of a record: base name, version, last activity.
pub(crate) fn columns(snap: &Snapshot) -> (String, String, String) {
    let (base, ver) = version::split_name(&snap.name);
    let last = snap.last_used_at.as_ref().unwrap_or(&snap.created_at);
    (
        base.to_string(),
        ver.unwrap_or("latest").to_string(),
        last.clone(),
    )
}

/// A work state that ends without its worker: a build fails as
/// build_failed, a pull as error.
fn fail_work(snap: &mut Snapshot) {
    snap.state = match snap.state {
        SnapshotState::Building => SnapshotState::BuildFailed,
        _ => SnapshotState::Error,
    };
    snap.updated_at = now();
}

impl SnapshotRepo {
    /// Open (creating or migrating the schema) the SQLite file `db`.
    pub fn open(db: &Path) -> Result<Self> {
        Ok(Self::with_backend(Box::new(sqlite::SqliteBackend::open(
            db,
        )?)))
    }

    /// Open the database `db` names; `embedded` is the SQLite file of
    /// [`SnapshotDb::Embedded`] (the store's `meta.db`).
    pub fn connect(db: &SnapshotDb, embedded: &Path) -> Result<Self> {
        let mut repo = Self::with_backend(open_backend(db, embedded)?);
        repo.shared = *db != SnapshotDb::Embedded;
        Ok(repo)
    }

    /// A repository over any backend.
    pub fn with_backend(backend: Box<dyn SnapshotBackend>) -> Self {
        Self::over(Backend::Owned(backend))
    }

    fn with_pooled(conn: pool::Pooled, shared: bool) -> Self {
        let mut repo = Self::over(Backend::Pooled(conn));
        repo.shared = shared;
        repo
    }

    /// Whether other stores share these records (a database other than the
    /// store's own file), so snapshots may come and go behind this one's back.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Say the records are shared (for [`Self::with_backend`] callers).
    pub fn set_shared(&mut self, shared: bool) {
        self.shared = shared;
    }

    fn over(backend: Backend) -> Self {
        SnapshotRepo {
            backend,
            limits: Limits::default(),
            lease: LeaseTerms::for_this_process(DEFAULT_LEASE),
            shared: false,
        }
    }

    /// Use other resource maxima than the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Hold work leases this long (renewed by [`Self::renew_lease`]).
    pub fn with_lease(mut self, duration: Duration) -> Self {
        self.lease.duration = duration;
        self
    }

    /// [`Self::with_lease`] on a repository in use.
    pub fn set_lease(&mut self, duration: Duration) {
        self.lease.duration = duration;
    }

    /// How long this repository's work leases last.
    pub fn lease_duration(&self) -> Duration {
        self.lease.duration
    }

    /// Record a new snapshot in `initial` state (pending, or pulling/building
    /// when the caller starts work at once: it then holds the lease).
    pub fn create(&mut self, new: NewSnapshot, initial: SnapshotState) -> Result<Snapshot> {
        new.resources
            .validate(&self.limits)
            .map_err(SnapshotError::Invalid)?;
        if new.name.trim().is_empty() || new.name.contains(char::is_whitespace) {
            return Err(SnapshotError::Invalid(format!("name {:?}", new.name)));
        }
        let (base, ver) = version::split_name(&new.name);
        let t = now();
        let snap = Snapshot {
            id: new_id(),
            name: format!("{base}:{}", ver.unwrap_or("latest")),
            organization_id: new.organization_id,
            general: new.general,
            state: initial,
            image_name: new.image_name,
            size: 0,
            entrypoint: new.entrypoint,
            cpu: new.resources.cpu,
            gpu: new.resources.gpu,
            mem: new.resources.mem,
            disk: new.resources.disk,
            build_info: new.build_info,
            region_ids: new.region_ids,
            created_at: t.clone(),
            updated_at: t,
            last_used_at: None,
        };
        let lease = initial.is_work().then_some(&self.lease);
        if !self.backend.insert(&snap, lease)? {
            let org = match snap.general {
                true => "general".to_string(),
                false => snap.organization_id,
            };
            return Err(SnapshotError::Duplicate {
                name: snap.name,
                org,
            });
        }
        Ok(snap)
    }

    /// Mark snapshots whose worker's lease expired (or whose worker is
    /// seen dead on this machine) as failed: a build as build_failed, a
    /// pull as error. Returns how many.
    pub fn expire_leases(&mut self) -> Result<usize> {
        self.backend
            .expire_leases(&lease::holder_is_dead, &fail_work)
    }

    /// Extend this process's lease on `id`; false when it no longer holds
    /// it (the work ended, or another runner reported it failed).
    pub fn renew_lease(&mut self, id: &str) -> Result<bool> {
        self.backend.renew_lease(id, &self.lease)
    }

    /// Move a snapshot of `org` to `to`, if the state graph allows it.
    pub fn transition(&mut self, org: &str, id: &str, to: SnapshotState) -> Result<Snapshot> {
        self.transition_as(Some(org), id, to)
    }

    /// [`Self::transition`] for `org`, or for the operator (None), who may
    /// move any snapshot, general ones included.
    pub fn transition_as(
        &mut self,
        org: Option<&str>,
        id: &str,
        to: SnapshotState,
    ) -> Result<Snapshot> {
        self.update_as(org, id, |snap| {
            if !snap.state.can_become(to) {
                return Err(SnapshotError::BadTransition {
                    id: snap.id.clone(),
                    from: snap.state,
                    to,
                });
            }
            snap.state = to;
            Ok(())
        })
    }

    /// Change a snapshot of `org` in one transaction (ownership checked).
    pub fn update(
        &mut self,
        org: &str,
        id: &str,
        change: impl FnOnce(&mut Snapshot) -> Result<()>,
    ) -> Result<Snapshot> {
        self.update_as(Some(org), id, change)
    }

    /// [`Self::update`] for `org`, or for the operator (None): the one
    /// caller that may change a general snapshot (its creation and deletion
    /// are operator calls).
    pub fn update_as(
        &mut self,
        org: Option<&str>,
        id: &str,
        change: impl FnOnce(&mut Snapshot) -> Result<()>,
    ) -> Result<Snapshot> {
        let mut change = Some(change);
        let mut apply = |snap: &mut Snapshot| -> Result<()> {
            if let Some(org) = org {
                if snap.general {
                    return Err(SnapshotError::General(snap.name.clone()));
                }
                if snap.organization_id != org {
                    return Err(SnapshotError::NotFound(snap.id.clone()));
                }
            }
            // The backend calls this once; a second call changes nothing.
            match change.take() {
                Some(change) => change(snap)?,
                None => return Ok(()),
            }
            snap.updated_at = now();
            Ok(())
        };
        self.backend.modify(id, &mut apply, &self.lease)
    }

    /// A snapshot `org` can see (its own or a general one), by id, by
    /// `name:version`, or by name alone (the highest version).
    pub fn get(&mut self, org: &str, key: &str) -> Result<Snapshot> {
        self.expire_leases()?;
        if let Some(snap) = self.backend.by_id(Some(org), key)? {
            return Ok(snap);
        }
        let (base, ver) = version::split_name(key);
        let rows = self.backend.by_name(Some(org), base)?;
        // The organization's own snapshots win over general ones: an exact
        // `name:version` is its own if it has one (rows come own first); a
        // bare name is its highest own version, general ones only when it
        // has none of that name.
        let chosen = match ver {
            Some(v) => rows.into_iter().find(|r| r.version == v),
            None => {
                let has_own = rows.iter().any(|r| !r.general);
                rows.into_iter()
                    .filter(|r| !has_own || !r.general)
                    .max_by(|a, b| version::compare(&a.version, &b.version))
            }
        };
        chosen
            .map(|r| r.snap)
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))
    }

    /// A general snapshot by id, `name:version` or name (highest version):
    /// what the operator names to delete one.
    pub fn get_general(&mut self, key: &str) -> Result<Snapshot> {
        if let Some(snap) = self.backend.by_id(None, key)? {
            return Ok(snap);
        }
        let (base, ver) = version::split_name(key);
        let rows = self.backend.by_name(None, base)?;
        let chosen = match ver {
            Some(v) => rows.into_iter().find(|r| r.version == v),
            None => rows
                .into_iter()
                .max_by(|a, b| version::compare(&a.version, &b.version)),
        };
        chosen
            .map(|r| r.snap)
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))
    }

    /// One page of the snapshots `q.organization_id` can see, oldest first.
    pub fn list(&mut self, q: &ListQuery) -> Result<Page> {
        if q.page == 0 || q.limit == 0 {
            return Err(SnapshotError::Invalid(format!(
                "page {} / limit {}: both start at 1",
                q.page, q.limit
            )));
        }
        self.expire_leases()?;
        let (items, total) = self.backend.list(q)?;
        Ok(Page {
            items,
            total,
            page: q.page,
            limit: q.limit,
        })
    }

    /// Delete a snapshot of `org`: `removing`, then the record goes. The
    /// caller drops the image's GC root between the two (`remove_record`).
    pub fn begin_delete(&mut self, org: &str, id: &str) -> Result<Snapshot> {
        self.transition(org, id, SnapshotState::Removing)
    }

    /// [`Self::begin_delete`] by the operator (general snapshots too).
    pub fn begin_delete_as_operator(&mut self, id: &str) -> Result<Snapshot> {
        self.transition_as(None, id, SnapshotState::Removing)
    }

    /// Drop the record of a snapshot in `removing` (and what runners
    /// recorded of it).
    pub fn remove_record(&mut self, id: &str) -> Result<()> {
        match self.backend.remove_removing(id)? {
            true => Ok(()),
            false => Err(SnapshotError::NotFound(id.to_string())),
        }
    }

    /// Active snapshots not used (or, never used, not created) within `idle`
    /// become inactive. Returns how many did. One UPDATE: the times are
    /// RFC 3339 UTC strings of one format, so they compare as text.
    pub fn mark_idle(&mut self, idle: Duration) -> Result<usize> {
        let cutoff =
            humantime::format_rfc3339_micros(std::time::SystemTime::now() - idle).to_string();
        self.backend.mark_idle(&cutoff, &now())
    }

    /// Note a use: last-used now, and an inactive snapshot is active again.
    /// Refused (in the same transaction) unless the snapshot is usable.
    pub fn touch(&mut self, org: &str, id: &str) -> Result<Snapshot> {
        let org = org.to_string();
        let mut apply = |snap: &mut Snapshot| -> Result<()> {
            if snap.organization_id != org && !snap.general {
                return Err(SnapshotError::NotFound(snap.id.clone()));
            }
            if !snap.state.is_usable() {
                return Err(SnapshotError::Invalid(format!(
                    "snapshot {} is {}: no sandbox can start from it",
                    snap.name, snap.state
                )));
            }
            snap.state = SnapshotState::Active;
            snap.last_used_at = Some(now());
            Ok(())
        };
        self.backend.modify(id, &mut apply, &self.lease)
    }

    /// Record what runner `runner` (one store) has of snapshot `id`:
    /// `pulling` while it fetches the image, `active` once it holds it,
    /// `error` when the pull failed. Refused once the snapshot is removing.
    pub fn set_runner_state(&mut self, id: &str, runner: &str, state: SnapshotState) -> Result<()> {
        self.backend.set_runner_state(id, runner, state)
    }

    /// What runner `runner` has of snapshot `id` (None: never took it).
    pub fn runner_state(&mut self, id: &str, runner: &str) -> Result<Option<SnapshotState>> {
        self.backend.runner_state(id, runner)
    }

    /// What runner `runner` has of each of `ids` (absent: never took it).
    pub fn runner_states(
        &mut self,
        ids: &[String],
        runner: &str,
    ) -> Result<std::collections::HashMap<String, SnapshotState>> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        Ok(self
            .backend
            .runner_states(ids, runner)?
            .into_iter()
            .collect())
    }

    /// Those of `ids` whose record is gone or `removing`: snapshots
    /// deleted (on any runner) that a store may still hold.
    pub fn gone(&mut self, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let live = self.backend.existing(ids)?;
        Ok(ids
            .iter()
            .filter(|id| !live.contains(id))
            .cloned()
            .collect())
    }
}
