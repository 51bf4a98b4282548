//! The shared backend: snapshot records in PostgreSQL, for many runners.
//!
//! Tables are prefixed `cairn_` so the database can be shared with other
//! software. Every change locks its row (`SELECT … FOR UPDATE`) inside one
//! transaction; names are unique through indexes, so two runners creating
//! the same `name:version` at once get one row and one `Duplicate`. Lease
//! expiry is judged by the server's clock. The schema is migrated on open
//! under a transaction-scoped advisory lock, so runners starting together
//! migrate once.

use super::pg_url::{self, SslMode, TlsOptions};
use super::sqlite::{lease_change, named};
use super::{
    columns, db::redact, decode, encode, LeaseTerms, ListQuery, Named, Result, SnapshotBackend,
    SnapshotError,
};
use crate::record::Snapshot;
use crate::state::SnapshotState;
use postgres::types::ToSql;
use postgres::{Client, Statement, Transaction};
use std::collections::HashMap;
use std::time::Duration;

/// Schema versions, each the step from the one before. Never edit a
/// released step: add one.
const MIGRATIONS: &[&str] = &[
    // 1: records, leases, the two name namespaces, what each runner holds.
    "CREATE TABLE cairn_snapshots (
         id TEXT PRIMARY KEY,
         seq BIGINT GENERATED ALWAYS AS IDENTITY,
         org TEXT NOT NULL,
         general BOOLEAN NOT NULL,
         base_name TEXT NOT NULL,
         version TEXT NOT NULL,
         state TEXT NOT NULL,
         last_active TEXT NOT NULL,
         lease_owner TEXT,
         lease_expires TIMESTAMPTZ,
         record TEXT NOT NULL);
     CREATE UNIQUE INDEX cairn_snapshots_name ON cairn_snapshots(org, base_name, version);
     CREATE UNIQUE INDEX cairn_snapshots_general_name ON cairn_snapshots(base_name, version) WHERE general;
     CREATE INDEX cairn_snapshots_order ON cairn_snapshots(seq);
     CREATE INDEX cairn_snapshots_org ON cairn_snapshots(org, seq);
     CREATE INDEX cairn_snapshots_state ON cairn_snapshots(state, seq);
     CREATE INDEX cairn_snapshots_idle ON cairn_snapshots(state, last_active);
     CREATE TABLE cairn_snapshot_runners (
         snapshot_id TEXT NOT NULL REFERENCES cairn_snapshots(id) ON DELETE CASCADE,
         runner TEXT NOT NULL,
         state TEXT NOT NULL,
         updated_at TEXT NOT NULL,
         PRIMARY KEY (snapshot_id, runner));",
];

/// Advisory lock key serialising schema migrations ("cairn" in ASCII).
const MIGRATION_LOCK: i64 = 0x0063_6169_726e;

/// How long a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Snapshot records in one PostgreSQL database.
pub struct PgBackend {
    client: Client,
    config: postgres::Config,
    /// What TLS must check (libpq's `sslmode`, `sslrootcert`).
    tls: TlsOptions,
    /// The URL without its password, for errors.
    target: String,
    /// Statements prepared on this connection, by their SQL: a prepared
    /// statement saves the parse round trip of every later call.
    statements: HashMap<String, Statement>,
}

impl PgBackend {
    /// Connect to `url` and migrate the schema.
    pub fn connect(url: &str) -> Result<Self> {
        let target = redact(url);
        let (mut config, tls) = pg_url::parse(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("cairn");
        }
        let client = open(&config, &tls, &target)?;
        let mut backend = PgBackend {
            client,
            config,
            tls,
            target,
            statements: HashMap::new(),
        };
        backend.migrate()?;
        Ok(backend)
    }

    /// The connection, opened again if the server closed it.
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_closed() {
            self.client = open(&self.config, &self.tls, &self.target)?;
            self.statements.clear();
        }
        Ok(&mut self.client)
    }

    /// Run read `sql` as a statement prepared once per connection.
    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<postgres::Row>> {
        let target = self.target.clone();
        let pg = |source| SnapshotError::Postgres {
            target: target.clone(),
            source,
        };
        self.client()?;
        let statement = match self.statements.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(sql).map_err(pg)?;
                self.statements.insert(sql.to_string(), s.clone());
                s
            }
        };
        self.client.query(&statement, params).map_err(pg)
    }

    fn begin(&mut self) -> Result<Transaction<'_>> {
        let target = self.target.clone();
        self.client()?
            .transaction()
            .map_err(|source| SnapshotError::Postgres { target, source })
    }

    fn migrate(&mut self) -> Result<()> {
        let target = self.target.clone();
        let pg = |source| SnapshotError::Postgres {
            target: target.clone(),
            source,
        };
        let mut tx = self.client.transaction().map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS cairn_schema (component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
        )
        .map_err(pg)?;
        let found: i64 = tx
            .query_opt(
                "SELECT version FROM cairn_schema WHERE component = 'snapshots'",
                &[],
            )
            .map_err(pg)?
            .map_or(0, |r| r.get(0));
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(SnapshotError::SchemaTooNew {
                target: target.clone(),
                found,
                known,
            });
        }
        for step in &MIGRATIONS[found as usize..] {
            tx.batch_execute(step).map_err(pg)?;
        }
        tx.execute(
            "INSERT INTO cairn_schema(component, version) VALUES ('snapshots', $1)
             ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
            &[&known],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)
    }
}

/// Open a connection, with TLS unless `sslmode=disable`.
fn open(config: &postgres::Config, tls: &TlsOptions, target: &str) -> Result<Client> {
    if tls.mode == SslMode::Disable {
        return config
            .connect(postgres::NoTls)
            .map_err(|source| SnapshotError::Postgres {
                target: target.to_string(),
                source,
            });
    }
    tls::connect(config, tls, target)
}

#[cfg(feature = "postgres-tls")]
mod tls;

#[cfg(not(feature = "postgres-tls"))]
mod tls {
    use super::{Result, SnapshotError, SslMode, TlsOptions};
    use postgres::Client;

    /// Built without TLS: plain connections only (`sslmode=prefer` falls
    /// back to them; the modes that require TLS are refused).
    pub fn connect(config: &postgres::Config, tls: &TlsOptions, target: &str) -> Result<Client> {
        if tls.mode == SslMode::Prefer {
            return config
                .connect(postgres::NoTls)
                .map_err(|source| SnapshotError::Postgres {
                    target: target.to_string(),
                    source,
                });
        }
        Err(SnapshotError::Config {
            target: target.to_string(),
            message: "this Cairn was built without the postgres-tls feature; use sslmode=disable or rebuild with it".into(),
        })
    }
}

fn state_of(value: &str, target: &str) -> Result<SnapshotState> {
    value.parse().map_err(|e: String| SnapshotError::Config {
        target: target.to_string(),
        message: e,
    })
}

/// Lock record `id` in `tx` and decode it.
fn lock(tx: &mut Transaction<'_>, id: &str, target: &str) -> Result<Snapshot> {
    let row = tx
        .query_opt(
            "SELECT record FROM cairn_snapshots WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .map_err(|source| SnapshotError::Postgres {
            target: target.to_string(),
            source,
        })?
        .ok_or_else(|| SnapshotError::NotFound(id.to_string()))?;
    decode(id, row.get(0))
}

/// Write `snap` back; `lease` as in the SQLite backend.
fn store(
    tx: &mut Transaction<'_>,
    snap: &Snapshot,
    lease: Option<Option<&LeaseTerms>>,
    target: &str,
) -> Result<()> {
    let pg = |source| SnapshotError::Postgres {
        target: target.to_string(),
        source,
    };
    let (_, _, last) = columns(snap);
    let record = encode(snap)?;
    tx.execute(
        "UPDATE cairn_snapshots SET state = $2, last_active = $3, record = $4 WHERE id = $1",
        &[&snap.id, &snap.state.as_str(), &last, &record],
    )
    .map_err(pg)?;
    if let Some(lease) = lease {
        let (owner, millis) = match lease {
            Some(l) => (Some(l.owner.as_str()), Some(l.millis())),
            None => (None, None),
        };
        tx.execute(
            "UPDATE cairn_snapshots SET lease_owner = $2,
                 lease_expires = now() + $3::bigint * interval '1 millisecond'
             WHERE id = $1",
            &[&snap.id, &owner, &millis],
        )
        .map_err(pg)?;
    }
    Ok(())
}

impl SnapshotBackend for PgBackend {
    fn insert(&mut self, snap: &Snapshot, lease: Option<&LeaseTerms>) -> Result<bool> {
        let (base, ver, last) = columns(snap);
        let record = encode(snap)?;
        let owner = lease.map(|l| l.owner.as_str());
        let millis = lease.map(LeaseTerms::millis);
        let state = snap.state.as_str();
        let target = self.target.clone();
        let n = self
            .client()?
            .execute(
                "INSERT INTO cairn_snapshots(id, org, general, base_name, version, state,
                     last_active, lease_owner, lease_expires, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                     now() + $9::bigint * interval '1 millisecond', $10)
                 ON CONFLICT DO NOTHING",
                &[
                    &snap.id,
                    &snap.organization_id,
                    &snap.general,
                    &base,
                    &ver,
                    &state,
                    &last,
                    &owner,
                    &millis,
                    &record,
                ],
            )
            .map_err(|source| SnapshotError::Postgres { target, source })?;
        Ok(n == 1)
    }

    fn modify(
        &mut self,
        id: &str,
        change: &mut dyn FnMut(&mut Snapshot) -> Result<()>,
        lease: &LeaseTerms,
    ) -> Result<Snapshot> {
        let target = self.target.clone();
        let pg = |source| SnapshotError::Postgres {
            target: target.clone(),
            source,
        };
        let mut tx = self.begin()?;
        let mut snap = lock(&mut tx, id, &target)?;
        let before = snap.state;
        change(&mut snap)?;
        store(
            &mut tx,
            &snap,
            lease_change(before, snap.state, lease),
            &target,
        )?;
        tx.commit().map_err(pg)?;
        Ok(snap)
    }

    fn by_id(&mut self, org: Option<&str>, id: &str) -> Result<Option<Snapshot>> {
        let rows = self.query(
            "SELECT record FROM cairn_snapshots
             WHERE id = $1 AND (general OR ($2::text IS NOT NULL AND org = $2::text))",
            &[&id, &org],
        )?;
        rows.first().map(|r| decode(id, r.get(0))).transpose()
    }

    fn by_name(&mut self, org: Option<&str>, base: &str) -> Result<Vec<Named>> {
        let rows = self.query(
            "SELECT id, record FROM cairn_snapshots
             WHERE base_name = $1 AND (general OR ($2::text IS NOT NULL AND org = $2::text))
             ORDER BY general, seq",
            &[&base, &org],
        )?;
        rows.iter().map(|r| named(r.get(0), r.get(1))).collect()
    }

    /// One round trip: the count and the page in one statement (the page
    /// joined laterally, so a page past the end still brings the count),
    /// prepared once per filter shape so the planner sees plain predicates.
    fn list(&mut self, q: &ListQuery) -> Result<(Vec<Snapshot>, u64)> {
        let state = q.state.map(|s| s.as_str());
        let prefix = q.like_pattern();
        let (limit, offset) = (i64::from(q.limit), q.offset());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&q.organization_id, &limit, &offset];
        let mut filter = String::from("(org = $1 OR general)");
        if let Some(state) = &state {
            params.push(state);
            filter.push_str(&format!(" AND state = ${}", params.len()));
        }
        if let Some(prefix) = &prefix {
            params.push(prefix);
            filter.push_str(&format!(
                " AND base_name LIKE ${} ESCAPE '\\'",
                params.len()
            ));
        }
        let sql = format!(
            "SELECT t.total, p.id, p.record
             FROM (SELECT COUNT(*) AS total FROM cairn_snapshots WHERE {filter}) t
             LEFT JOIN LATERAL (SELECT id, record, seq FROM cairn_snapshots WHERE {filter}
                                ORDER BY seq LIMIT $2 OFFSET $3) p ON true
             ORDER BY p.seq"
        );
        let rows = self.query(&sql, &params)?;
        let total: i64 = rows.first().map_or(0, |r| r.get(0));
        let items = rows
            .iter()
            .filter_map(|r| Some((r.get::<_, Option<&str>>(1)?, r.get::<_, Option<&str>>(2)?)))
            .map(|(id, record)| decode(id, record))
            .collect::<Result<Vec<_>>>()?;
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }

    fn remove_removing(&mut self, id: &str) -> Result<bool> {
        let target = self.target.clone();
        // Runners' rows go with it (ON DELETE CASCADE).
        let n = self
            .client()?
            .execute(
                "DELETE FROM cairn_snapshots WHERE id = $1 AND state = 'removing'",
                &[&id],
            )
            .map_err(|source| SnapshotError::Postgres { target, source })?;
        Ok(n == 1)
    }

    fn mark_idle(&mut self, cutoff: &str, now: &str) -> Result<usize> {
        let target = self.target.clone();
        let n = self
            .client()?
            .execute(
                "UPDATE cairn_snapshots
                 SET state = 'inactive',
                     record = jsonb_set(jsonb_set(record::jsonb, '{state}', '\"inactive\"'),
                                        '{updatedAt}', to_jsonb($2::text))::text
                 WHERE state = 'active' AND last_active < $1",
                &[&cutoff, &now],
            )
            .map_err(|source| SnapshotError::Postgres { target, source })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn expire_leases(
        &mut self,
        is_dead: &dyn Fn(&str) -> bool,
        fail: &dyn Fn(&mut Snapshot),
    ) -> Result<usize> {
        const DUE: &str = "SELECT id, lease_owner, COALESCE(lease_expires < now(), true)
             FROM cairn_snapshots WHERE state IN ('building', 'pulling')";
        let target = self.target.clone();
        let pg = |source| SnapshotError::Postgres {
            target: target.clone(),
            source,
        };
        let due = |rows: Vec<postgres::Row>| -> Vec<String> {
            rows.iter()
                .filter(|r| r.get::<_, bool>(2) || r.get::<_, Option<&str>>(1).is_some_and(is_dead))
                .map(|r| r.get::<_, String>(0))
                .collect()
        };
        // Most reads find nothing due: no transaction for them.
        if due(self.query(DUE, &[])?).is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin()?;
        // Rows another runner is changing right now are theirs to settle.
        let ids = due(tx
            .query(&format!("{DUE} FOR UPDATE SKIP LOCKED"), &[])
            .map_err(pg)?);
        for id in &ids {
            let mut snap = lock(&mut tx, id, &target)?;
            fail(&mut snap);
            store(&mut tx, &snap, Some(None), &target)?;
        }
        tx.commit().map_err(pg)?;
        Ok(ids.len())
    }

    fn renew_lease(&mut self, id: &str, lease: &LeaseTerms) -> Result<bool> {
        let target = self.target.clone();
        let n = self
            .client()?
            .execute(
                "UPDATE cairn_snapshots SET lease_expires = now() + $3::bigint * interval '1 millisecond'
                 WHERE id = $1 AND lease_owner = $2 AND state IN ('building', 'pulling')",
                &[&id, &lease.owner, &lease.millis()],
            )
            .map_err(|source| SnapshotError::Postgres { target, source })?;
        Ok(n == 1)
    }

    fn set_runner_state(&mut self, id: &str, runner: &str, state: SnapshotState) -> Result<()> {
        let target = self.target.clone();
        let pg = |source| SnapshotError::Postgres {
            target: target.clone(),
            source,
        };
        let mut tx = self.begin()?;
        let row = tx
            .query_opt(
                "SELECT state FROM cairn_snapshots WHERE id = $1 FOR SHARE",
                &[&id],
            )
            .map_err(pg)?;
        let current = match row {
            Some(r) => state_of(r.get(0), &target)?,
            None => return Err(SnapshotError::NotFound(id.to_string())),
        };
        if current == SnapshotState::Removing {
            return Err(SnapshotError::NotFound(id.to_string()));
        }
        tx.execute(
            "INSERT INTO cairn_snapshot_runners(snapshot_id, runner, state, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (snapshot_id, runner)
             DO UPDATE SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at",
            &[&id, &runner, &state.as_str(), &super::now()],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)
    }

    fn runner_state(&mut self, id: &str, runner: &str) -> Result<Option<SnapshotState>> {
        let rows = self.query(
            "SELECT state FROM cairn_snapshot_runners WHERE snapshot_id = $1 AND runner = $2",
            &[&id, &runner],
        )?;
        rows.first()
            .map(|r| state_of(r.get(0), &self.target))
            .transpose()
    }

    fn runner_states(
        &mut self,
        ids: &[String],
        runner: &str,
    ) -> Result<Vec<(String, SnapshotState)>> {
        let rows = self.query(
            "SELECT snapshot_id, state FROM cairn_snapshot_runners
             WHERE runner = $1 AND snapshot_id = ANY($2)",
            &[&runner, &ids],
        )?;
        rows.iter()
            .map(|r| Ok((r.get(0), state_of(r.get(1), &self.target)?)))
            .collect()
    }

    fn existing(&mut self, ids: &[String]) -> Result<Vec<String>> {
        let rows = self.query(
            "SELECT id FROM cairn_snapshots WHERE id = ANY($1) AND state <> 'removing'",
            &[&ids],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn ping(&mut self) -> Result<()> {
        let target = self.target.clone();
        self.client()?
            .simple_query("")
            .map(drop)
            .map_err(|source| SnapshotError::Postgres { target, source })
    }

    fn is_broken(&mut self) -> bool {
        self.client.is_closed()
    }
}
