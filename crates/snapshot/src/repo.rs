//! Snapshot records in SQLite (the store's `meta.db`, a table of our own).
//!
//! Every state change is one transaction that checks the state graph, so two
//! processes cannot both move a snapshot. A snapshot in a work state
//! (building, pulling) records the process doing the work; when that process
//! is gone, the next read marks the snapshot failed instead of leaving it
//! stuck.

use crate::record::{BuildInfo, Limits, Resources, Snapshot};
use crate::state::SnapshotState;
use crate::version;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;

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
    #[error("snapshot record {id} is corrupt: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
}

impl SnapshotError {
    /// True when the caller's input is at fault (CLI exit 2).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, SnapshotError::Db(_) | SnapshotError::Corrupt { .. })
    }
}

type Result<T> = std::result::Result<T, SnapshotError>;

const SCHEMA_VERSION: i64 = 1;

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
}

/// One page of a listing, in the platform's shape.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page {
    pub items: Vec<Snapshot>,
    pub total: u64,
    pub page: u32,
    pub limit: u32,
}

/// The snapshot records of one store.
pub struct SnapshotRepo {
    conn: Connection,
    limits: Limits,
}

fn now() -> String {
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

/// pid + start time of this process, to tell later whether it still runs.
fn this_process() -> (i64, i64) {
    let pid = std::process::id();
    (i64::from(pid), start_ticks(pid).unwrap_or(0) as i64)
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(19)?.parse().ok()
}

/// The JSON record of snapshot `id`, inside a transaction.
fn load_record(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<String> {
    tx.query_row(
        "SELECT record FROM snapshots WHERE id = ?1",
        params![id],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| SnapshotError::NotFound(id.to_string()))
}

impl SnapshotRepo {
    /// Open (creating the table if needed) in the SQLite file `db`.
    pub fn open(db: &Path) -> Result<Self> {
        let conn = Connection::open(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS cairn_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS snapshots (
                 id TEXT PRIMARY KEY,
                 seq INTEGER NOT NULL,
                 org TEXT NOT NULL,
                 general INTEGER NOT NULL,
                 base_name TEXT NOT NULL,
                 version TEXT NOT NULL,
                 state TEXT NOT NULL,
                 worker_pid INTEGER,
                 worker_start INTEGER,
                 record TEXT NOT NULL);
             CREATE UNIQUE INDEX IF NOT EXISTS snapshots_name ON snapshots(org, base_name, version);
             CREATE INDEX IF NOT EXISTS snapshots_order ON snapshots(seq);
             CREATE INDEX IF NOT EXISTS snapshots_state ON snapshots(state, seq);",
        )?;
        conn.execute(
            "INSERT OR IGNORE INTO cairn_schema(component, version) VALUES ('snapshots', ?1)",
            params![SCHEMA_VERSION],
        )?;
        Ok(SnapshotRepo {
            conn,
            limits: Limits::default(),
        })
    }

    /// Use other resource maxima than the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Record a new snapshot in `initial` state (pending, or pulling/building
    /// when the caller starts work at once, which records it as the worker).
    pub fn create(&mut self, new: NewSnapshot, initial: SnapshotState) -> Result<Snapshot> {
        new.resources
            .validate(&self.limits)
            .map_err(SnapshotError::Invalid)?;
        if new.name.trim().is_empty() || new.name.contains(char::is_whitespace) {
            return Err(SnapshotError::Invalid(format!("name {:?}", new.name)));
        }
        let (base, ver) = version::split_name(&new.name);
        let (base, ver) = (base.to_string(), ver.unwrap_or("latest").to_string());
        let t = now();
        let snap = Snapshot {
            id: new_id(),
            name: format!("{base}:{ver}"),
            organization_id: new.organization_id.clone(),
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
        let (pid, start) = if initial.is_work() {
            this_process()
        } else {
            (0, 0)
        };
        let record =
            serde_json::to_string(&snap).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seq: i64 =
            tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM snapshots", [], |r| {
                r.get(0)
            })?;
        // General snapshots share one namespace, whoever made them.
        let general_taken = snap.general
            && tx
                .query_row(
                    "SELECT 1 FROM snapshots WHERE general = 1 AND base_name = ?1 AND version = ?2",
                    params![base, ver],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
        if general_taken {
            return Err(SnapshotError::Duplicate {
                name: snap.name,
                org: "general".into(),
            });
        }
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO snapshots(id, seq, org, general, base_name, version, state, worker_pid, worker_start, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![snap.id, seq, snap.organization_id, snap.general, base, ver, initial.as_str(), pid, start, record],
        )?;
        if inserted == 0 {
            return Err(SnapshotError::Duplicate {
                name: snap.name,
                org: snap.organization_id,
            });
        }
        tx.commit()?;
        Ok(snap)
    }

    fn decode(id: &str, record: &str) -> Result<Snapshot> {
        serde_json::from_str(record).map_err(|source| SnapshotError::Corrupt {
            id: id.to_string(),
            source,
        })
    }

    /// Mark snapshots whose worker process died as failed: a build as
    /// build_failed, a pull as error.
    pub fn recover_dead_workers(&mut self) -> Result<usize> {
        let rows: Vec<(String, String, i64, i64)> = {
            let mut stmt = self.conn.prepare(
                "SELECT id, state, worker_pid, worker_start FROM snapshots WHERE state IN ('building', 'pulling')",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut recovered = 0;
        for (id, state, pid, start) in rows {
            let alive = u32::try_from(pid)
                .ok()
                .and_then(start_ticks)
                .is_some_and(|t| t as i64 == start);
            if !alive {
                let to = if state == "building" {
                    SnapshotState::BuildFailed
                } else {
                    SnapshotState::Error
                };
                self.set_state_unchecked(&id, to)?;
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    fn set_state_unchecked(&mut self, id: &str, to: SnapshotState) -> Result<Snapshot> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = load_record(&tx, id)?;
        let mut snap = Self::decode(id, &record)?;
        snap.state = to;
        snap.updated_at = now();
        let (pid, start) = if to.is_work() { this_process() } else { (0, 0) };
        let record =
            serde_json::to_string(&snap).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        tx.execute(
            "UPDATE snapshots SET state = ?2, record = ?3, worker_pid = ?4, worker_start = ?5 WHERE id = ?1",
            params![id, to.as_str(), record, pid, start],
        )?;
        tx.commit()?;
        Ok(snap)
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = load_record(&tx, id)?;
        let mut snap = Self::decode(id, &record)?;
        if let Some(org) = org {
            if snap.general {
                return Err(SnapshotError::General(snap.name));
            }
            if snap.organization_id != org {
                return Err(SnapshotError::NotFound(id.to_string()));
            }
        }
        let before = snap.state;
        change(&mut snap)?;
        snap.updated_at = now();
        let (pid, start) = if snap.state.is_work() && !before.is_work() {
            this_process()
        } else {
            (0, 0)
        };
        let record =
            serde_json::to_string(&snap).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        tx.execute(
            "UPDATE snapshots SET state = ?2, record = ?3,
                 worker_pid = CASE WHEN ?4 = 0 THEN worker_pid ELSE ?4 END,
                 worker_start = CASE WHEN ?4 = 0 THEN worker_start ELSE ?5 END
             WHERE id = ?1",
            params![id, snap.state.as_str(), record, pid, start],
        )?;
        tx.commit()?;
        Ok(snap)
    }

    /// A snapshot `org` can see (its own or a general one), by id, by
    /// `name:version`, or by name alone (the highest version).
    pub fn get(&mut self, org: &str, key: &str) -> Result<Snapshot> {
        self.recover_dead_workers()?;
        let by_id: Option<String> = self
            .conn
            .query_row(
                "SELECT record FROM snapshots WHERE id = ?1 AND (org = ?2 OR general = 1)",
                params![key, org],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(record) = by_id {
            return Self::decode(key, &record);
        }
        let (base, ver) = version::split_name(key);
        let mut stmt = self.conn.prepare(
            "SELECT id, version, record, CASE WHEN general = 0 THEN org ELSE '' END FROM snapshots
             WHERE base_name = ?1 AND ((org = ?2 AND general = 0) OR general = 1)
             ORDER BY general, seq",
        )?;
        let rows: Vec<(String, String, String, String)> = stmt
            .query_map(params![base, org], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<std::result::Result<_, _>>()?;
        // The organization's own snapshots win over general ones: an exact
        // `name:version` is its own if it has one (rows come own first); a
        // bare name is its highest own version, general ones only when it
        // has none of that name.
        let chosen = match ver {
            Some(v) => rows.into_iter().find(|(_, rv, _, _)| rv == v),
            None => {
                let own: Vec<_> = rows.iter().filter(|r| r.3 == org).cloned().collect();
                let rows = if own.is_empty() { rows } else { own };
                rows.into_iter().max_by(|a, b| version::compare(&a.1, &b.1))
            }
        };
        match chosen {
            Some((id, _, record, _)) => Self::decode(&id, &record),
            None => Err(SnapshotError::NotFound(key.to_string())),
        }
    }

    /// A general snapshot by id, `name:version` or name (highest version):
    /// what the operator names to delete one.
    pub fn get_general(&mut self, key: &str) -> Result<Snapshot> {
        let (base, ver) = version::split_name(key);
        let mut stmt = self.conn.prepare(
            "SELECT id, version, record FROM snapshots
             WHERE general = 1 AND (id = ?1 OR base_name = ?2) ORDER BY seq",
        )?;
        let rows: Vec<(String, String, String)> = stmt
            .query_map(params![key, base], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<std::result::Result<_, _>>()?;
        let by_id = rows.iter().find(|r| r.0 == key).cloned();
        let chosen = by_id.or_else(|| match ver {
            Some(v) => rows.into_iter().find(|r| r.1 == v),
            None => rows.into_iter().max_by(|a, b| version::compare(&a.1, &b.1)),
        });
        match chosen {
            Some((id, _, record)) => Self::decode(&id, &record),
            None => Err(SnapshotError::NotFound(key.to_string())),
        }
    }

    /// One page of the snapshots `q.organization_id` can see, oldest first.
    pub fn list(&mut self, q: &ListQuery) -> Result<Page> {
        if q.page == 0 || q.limit == 0 {
            return Err(SnapshotError::Invalid(format!(
                "page {} / limit {}: both start at 1",
                q.page, q.limit
            )));
        }
        self.recover_dead_workers()?;
        let state = q.state.map(|s| s.as_str().to_string());
        let prefix = q.name_prefix.as_ref().map(|p| {
            format!(
                "{}%",
                p.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        });
        let filter = "(org = ?1 OR general = 1) AND (?2 IS NULL OR state = ?2)
                      AND (?3 IS NULL OR base_name LIKE ?3 ESCAPE '\\')";
        let total: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM snapshots WHERE {filter}"),
            params![q.organization_id, state, prefix],
            |r| r.get(0),
        )?;
        let offset = i64::from(q.page - 1) * i64::from(q.limit);
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, record FROM snapshots WHERE {filter} ORDER BY seq LIMIT ?4 OFFSET ?5"
        ))?;
        let rows: Vec<(String, String)> = stmt
            .query_map(
                params![q.organization_id, state, prefix, q.limit, offset],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<std::result::Result<_, _>>()?;
        let items = rows
            .iter()
            .map(|(id, rec)| Self::decode(id, rec))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            total: total as u64,
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

    /// Drop the record of a snapshot in `removing`.
    pub fn remove_record(&mut self, id: &str) -> Result<()> {
        let n = self.conn.execute(
            "DELETE FROM snapshots WHERE id = ?1 AND state = 'removing'",
            params![id],
        )?;
        if n == 0 {
            return Err(SnapshotError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// Active snapshots not used (or, never used, not created) within `idle`
    /// become inactive. Returns how many did. One UPDATE: the times are
    /// RFC 3339 UTC strings of one format, so they compare as text.
    pub fn mark_idle(&mut self, idle: std::time::Duration) -> Result<usize> {
        let cutoff =
            humantime::format_rfc3339_micros(std::time::SystemTime::now() - idle).to_string();
        let n = self.conn.execute(
            "UPDATE snapshots
             SET state = 'inactive',
                 record = json_set(record, '$.state', 'inactive', '$.updatedAt', ?2)
             WHERE state = 'active'
               AND COALESCE(json_extract(record, '$.lastUsedAt'), json_extract(record, '$.createdAt')) < ?1",
            params![cutoff, now()],
        )?;
        Ok(n)
    }

    /// Note a use: last-used now, and an inactive snapshot is active again.
    pub fn touch(&mut self, org: &str, id: &str) -> Result<Snapshot> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = load_record(&tx, id)?;
        let mut snap = Self::decode(id, &record)?;
        if snap.organization_id != org && !snap.general {
            return Err(SnapshotError::NotFound(id.to_string()));
        }
        if !snap.state.is_usable() {
            return Err(SnapshotError::Invalid(format!(
                "snapshot {} is {}: no sandbox can start from it",
                snap.name, snap.state
            )));
        }
        snap.state = SnapshotState::Active;
        snap.last_used_at = Some(now());
        let record =
            serde_json::to_string(&snap).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        tx.execute(
            "UPDATE snapshots SET state = 'active', record = ?2 WHERE id = ?1",
            params![id, record],
        )?;
        tx.commit()?;
        Ok(snap)
    }
}
