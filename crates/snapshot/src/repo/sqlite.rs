//! The embedded backend: snapshot records in a SQLite file (by default the
//! store's `meta.db`, tables of our own). One machine; a write transaction
//! (`BEGIN IMMEDIATE`) is the row lock, as SQLite locks the whole file.

use super::{
    columns, decode, encode, LeaseTerms, ListQuery, Named, Result, SnapshotBackend, SnapshotError,
};
use crate::record::Snapshot;
use crate::state::SnapshotState;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::Path;

/// Schema versions, each the step from the one before. Never edit a
/// released step: add one.
const MIGRATIONS: &[&str] = &[
    // 1: the first records (work tracked by local PID).
    "CREATE TABLE IF NOT EXISTS snapshots (
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
    // 2: leases instead of PIDs, last activity as a column, one general
    // namespace enforced by an index, what each runner holds.
    "ALTER TABLE snapshots ADD COLUMN last_active TEXT NOT NULL DEFAULT '';
     ALTER TABLE snapshots ADD COLUMN lease_owner TEXT;
     ALTER TABLE snapshots ADD COLUMN lease_expires INTEGER;
     UPDATE snapshots SET last_active = COALESCE(json_extract(record, '$.lastUsedAt'), json_extract(record, '$.createdAt'));
     UPDATE snapshots SET lease_owner = '', lease_expires = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 60000
         WHERE state IN ('building', 'pulling');
     CREATE UNIQUE INDEX snapshots_general_name ON snapshots(base_name, version) WHERE general = 1;
     CREATE INDEX snapshots_org ON snapshots(org, seq);
     CREATE INDEX snapshots_idle ON snapshots(state, last_active);
     CREATE TABLE snapshot_runners (
         snapshot_id TEXT NOT NULL,
         runner TEXT NOT NULL,
         state TEXT NOT NULL,
         updated_at TEXT NOT NULL,
         PRIMARY KEY (snapshot_id, runner));",
];

/// Snapshot records in one SQLite file.
pub struct SqliteBackend {
    conn: Connection,
    path: String,
}

fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn load(tx: &Transaction<'_>, id: &str) -> Result<Snapshot> {
    let record: String = tx
        .query_row(
            "SELECT record FROM snapshots WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| SnapshotError::NotFound(id.to_string()))?;
    decode(id, &record)
}

/// Write `snap` back with its columns; `lease` Some(Some) takes the lease,
/// Some(None) drops it, None keeps it.
fn store(tx: &Transaction<'_>, snap: &Snapshot, lease: Option<Option<&LeaseTerms>>) -> Result<()> {
    let (_, _, last) = columns(snap);
    tx.execute(
        "UPDATE snapshots SET state = ?2, last_active = ?3, record = ?4 WHERE id = ?1",
        params![snap.id, snap.state.as_str(), last, encode(snap)?],
    )?;
    if let Some(lease) = lease {
        let (owner, until) = match lease {
            Some(l) => (Some(l.owner.as_str()), Some(unix_millis() + l.millis())),
            None => (None, None),
        };
        tx.execute(
            "UPDATE snapshots SET lease_owner = ?2, lease_expires = ?3 WHERE id = ?1",
            params![snap.id, owner, until],
        )?;
    }
    Ok(())
}

impl SqliteBackend {
    /// Open `db`, creating or migrating the schema.
    pub fn open(db: &Path) -> Result<Self> {
        let mut conn = Connection::open(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let path = db.display().to_string();
        migrate(&mut conn, &path)?;
        Ok(SqliteBackend { conn, path })
    }

    fn write(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    fn rows(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// Bring the schema to the newest version, in one write transaction.
fn migrate(conn: &mut Connection, path: &str) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS cairn_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);",
    )?;
    let found: i64 = tx
        .query_row(
            "SELECT version FROM cairn_schema WHERE component = 'snapshots'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(SnapshotError::SchemaTooNew {
            target: path.to_string(),
            found,
            known,
        });
    }
    for step in &MIGRATIONS[found as usize..] {
        tx.execute_batch(step)?;
    }
    tx.execute(
        "INSERT INTO cairn_schema(component, version) VALUES ('snapshots', ?1)
         ON CONFLICT(component) DO UPDATE SET version = excluded.version",
        params![known],
    )?;
    tx.commit()?;
    Ok(())
}

impl SnapshotBackend for SqliteBackend {
    fn insert(&mut self, snap: &Snapshot, lease: Option<&LeaseTerms>) -> Result<bool> {
        let (base, ver, last) = columns(snap);
        let record = encode(snap)?;
        let (owner, until) = match lease {
            Some(l) => (Some(l.owner.clone()), Some(unix_millis() + l.millis())),
            None => (None, None),
        };
        let tx = self.write()?;
        let seq: i64 =
            tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM snapshots", [], |r| {
                r.get(0)
            })?;
        // Both unique indexes (org's names, general names) turn a duplicate
        // into "nothing inserted".
        let n = tx.execute(
            "INSERT OR IGNORE INTO snapshots(id, seq, org, general, base_name, version, state,
                 last_active, lease_owner, lease_expires, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                snap.id,
                seq,
                snap.organization_id,
                snap.general,
                base,
                ver,
                snap.state.as_str(),
                last,
                owner,
                until,
                record
            ],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn modify(
        &mut self,
        id: &str,
        change: &mut dyn FnMut(&mut Snapshot) -> Result<()>,
        lease: &LeaseTerms,
    ) -> Result<Snapshot> {
        let tx = self.write()?;
        let mut snap = load(&tx, id)?;
        let before = snap.state;
        change(&mut snap)?;
        store(&tx, &snap, lease_change(before, snap.state, lease))?;
        tx.commit()?;
        Ok(snap)
    }

    fn by_id(&mut self, org: Option<&str>, id: &str) -> Result<Option<Snapshot>> {
        let rows = self.rows(
            "SELECT id, record FROM snapshots
             WHERE id = ?1 AND (general = 1 OR (?2 IS NOT NULL AND org = ?2))",
            params![id, org],
        )?;
        rows.first().map(|(id, rec)| decode(id, rec)).transpose()
    }

    fn by_name(&mut self, org: Option<&str>, base: &str) -> Result<Vec<Named>> {
        let rows = self.rows(
            "SELECT id, record FROM snapshots
             WHERE base_name = ?1 AND (general = 1 OR (?2 IS NOT NULL AND org = ?2))
             ORDER BY general, seq",
            params![base, org],
        )?;
        rows.iter().map(|(id, rec)| named(id, rec)).collect()
    }

    /// The SQL is made per filter shape (and cached prepared), so the
    /// planner sees plain predicates and can use the state index.
    fn list(&mut self, q: &ListQuery) -> Result<(Vec<Snapshot>, u64)> {
        let state = q.state.map(|s| s.as_str());
        let prefix = q.like_pattern();
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&q.organization_id];
        let mut filter = String::from("(org = ?1 OR general = 1)");
        if let Some(state) = &state {
            args.push(state);
            filter.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(prefix) = &prefix {
            args.push(prefix);
            filter.push_str(&format!(" AND base_name LIKE ?{} ESCAPE '\\'", args.len()));
        }
        let total: i64 = self
            .conn
            .prepare_cached(&format!("SELECT COUNT(*) FROM snapshots WHERE {filter}"))?
            .query_row(args.as_slice(), |r| r.get(0))?;
        let (limit, offset) = (i64::from(q.limit), q.offset());
        let n = args.len();
        args.extend([&limit as &dyn rusqlite::ToSql, &offset]);
        let rows = self.rows(
            &format!(
                "SELECT id, record FROM snapshots WHERE {filter} ORDER BY seq LIMIT ?{} OFFSET ?{}",
                n + 1,
                n + 2
            ),
            args.as_slice(),
        )?;
        let items = rows
            .iter()
            .map(|(id, rec)| decode(id, rec))
            .collect::<Result<Vec<_>>>()?;
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }

    fn remove_removing(&mut self, id: &str) -> Result<bool> {
        let tx = self.write()?;
        let n = tx.execute(
            "DELETE FROM snapshots WHERE id = ?1 AND state = 'removing'",
            params![id],
        )?;
        if n == 1 {
            tx.execute(
                "DELETE FROM snapshot_runners WHERE snapshot_id = ?1",
                params![id],
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    fn mark_idle(&mut self, cutoff: &str, now: &str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE snapshots
             SET state = 'inactive',
                 record = json_set(record, '$.state', 'inactive', '$.updatedAt', ?2)
             WHERE state = 'active' AND last_active < ?1",
            params![cutoff, now],
        )?)
    }

    fn expire_leases(
        &mut self,
        is_dead: &dyn Fn(&str) -> bool,
        fail: &dyn Fn(&mut Snapshot),
    ) -> Result<usize> {
        let sql = "SELECT id, lease_owner, COALESCE(lease_expires, 0) < ?1 FROM snapshots
                   WHERE state IN ('building', 'pulling')";
        let due = |conn: &Connection| -> Result<Vec<String>> {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(params![unix_millis()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?;
            let mut ids = Vec::new();
            for row in rows {
                let (id, owner, expired) = row?;
                if expired || owner.as_deref().is_some_and(is_dead) {
                    ids.push(id);
                }
            }
            Ok(ids)
        };
        // Most reads find nothing due: no write lock for them.
        if due(&self.conn)?.is_empty() {
            return Ok(0);
        }
        let tx = self.write()?;
        let ids = due(&tx)?;
        for id in &ids {
            let mut snap = load(&tx, id)?;
            fail(&mut snap);
            store(&tx, &snap, Some(None))?;
        }
        tx.commit()?;
        Ok(ids.len())
    }

    fn renew_lease(&mut self, id: &str, lease: &LeaseTerms) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE snapshots SET lease_expires = ?3
             WHERE id = ?1 AND lease_owner = ?2 AND state IN ('building', 'pulling')",
            params![id, lease.owner, unix_millis() + lease.millis()],
        )?;
        Ok(n == 1)
    }

    fn set_runner_state(&mut self, id: &str, runner: &str, state: SnapshotState) -> Result<()> {
        let tx = self.write()?;
        let snap = load(&tx, id)?;
        if snap.state == SnapshotState::Removing {
            return Err(SnapshotError::NotFound(id.to_string()));
        }
        tx.execute(
            "INSERT INTO snapshot_runners(snapshot_id, runner, state, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(snapshot_id, runner) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            params![id, runner, state.as_str(), super::now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn runner_state(&mut self, id: &str, runner: &str) -> Result<Option<SnapshotState>> {
        let state: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM snapshot_runners WHERE snapshot_id = ?1 AND runner = ?2",
                params![id, runner],
                |r| r.get(0),
            )
            .optional()?;
        state
            .map(|s| {
                s.parse()
                    .map_err(|e: String| SnapshotError::Invalid(format!("{}: {e}", self.path)))
            })
            .transpose()
    }

    fn runner_states(
        &mut self,
        ids: &[String],
        runner: &str,
    ) -> Result<Vec<(String, SnapshotState)>> {
        let ids = serde_json::to_string(ids).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let rows = self.rows(
            "SELECT snapshot_id, state FROM snapshot_runners
             WHERE runner = ?1 AND snapshot_id IN (SELECT value FROM json_each(?2))",
            params![runner, ids],
        )?;
        rows.into_iter()
            .map(|(id, state)| {
                let state = state
                    .parse()
                    .map_err(|e: String| SnapshotError::Invalid(format!("{}: {e}", self.path)))?;
                Ok((id, state))
            })
            .collect()
    }

    fn existing(&mut self, ids: &[String]) -> Result<Vec<String>> {
        let ids = serde_json::to_string(ids).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM snapshots
             WHERE id IN (SELECT value FROM json_each(?1)) AND state <> 'removing'",
        )?;
        let rows = stmt.query_map(params![ids], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// A row found by name.
pub(crate) fn named(id: &str, record: &str) -> Result<Named> {
    let snap = decode(id, record)?;
    let (_, version, _) = columns(&snap);
    Ok(Named {
        version,
        general: snap.general,
        snap,
    })
}

/// How a change moves the lease: taken when work starts, dropped when it
/// ends, kept while it goes on.
pub(crate) fn lease_change(
    before: SnapshotState,
    after: SnapshotState,
    lease: &LeaseTerms,
) -> Option<Option<&LeaseTerms>> {
    match (before.is_work(), after.is_work()) {
        (false, true) => Some(Some(lease)),
        (true, false) => Some(None),
        _ => None,
    }
}
