//! What this store holds of snapshots: one row per snapshot whose image the
//! store has tagged under its local name and held by a GC root (made here,
//! or pulled from its region's registry to start a sandbox).
//!
//! With records shared by many runners, a snapshot deleted on runner A is
//! still tagged in runner B's store; B learns of it only from the records
//! (the row is gone). This table lets B find its own copies of deleted
//! snapshots — their local names, which the gone record can no longer
//! give — and drop them (service.rs, `drop_deleted_copies`). It lives in
//! the store's `meta.db`, whatever database holds the records, because it
//! describes this store.

use crate::repo::SnapshotError;
use cairn_store::Store;
use rusqlite::{params, Connection};

type Result<T> = std::result::Result<T, SnapshotError>;

fn open(store: &Store) -> Result<Connection> {
    let conn = Connection::open(store.layout().meta_db())?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // A no-op once the table exists: no write transaction then.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS snapshot_copies (
             id TEXT PRIMARY KEY,
             local_name TEXT NOT NULL)",
    )?;
    Ok(conn)
}

/// This store now holds snapshot `id` under `local_name`.
pub(crate) fn record(store: &Store, id: &str, local_name: &str) -> Result<()> {
    open(store)?.execute(
        "INSERT OR REPLACE INTO snapshot_copies(id, local_name) VALUES (?1, ?2)",
        params![id, local_name],
    )?;
    Ok(())
}

/// This store no longer holds snapshot `id`.
pub(crate) fn forget(store: &Store, id: &str) -> Result<()> {
    open(store)?.execute("DELETE FROM snapshot_copies WHERE id = ?1", params![id])?;
    Ok(())
}

/// Every copy: (snapshot id, local name).
pub(crate) fn all(store: &Store) -> Result<Vec<(String, String)>> {
    let conn = open(store)?;
    let mut stmt = conn.prepare("SELECT id, local_name FROM snapshot_copies ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}
