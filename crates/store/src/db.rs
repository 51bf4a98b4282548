//! `meta.db`: SQLite in WAL mode, schema versioned by `PRAGMA user_version`.

use crate::error::{Result, StoreError};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Schema migrations, in order; migration `i` takes the schema from version
/// `i` to `i + 1`. Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: images, tags, layers, GC roots, build cache.
    r#"
    CREATE TABLE manifests (
        digest      TEXT PRIMARY KEY,
        media_type  TEXT NOT NULL,
        size        INTEGER NOT NULL,
        -- NULL for an index / manifest list
        config      TEXT,
        created     TEXT,
        -- bytes of manifest + config + layers as stored (children for an index)
        total_size  INTEGER NOT NULL,
        recorded_at TEXT NOT NULL
    );
    -- What a manifest names: its config, its layers, or (for an index) child manifests.
    CREATE TABLE manifest_refs (
        manifest   TEXT NOT NULL REFERENCES manifests(digest) ON DELETE CASCADE,
        kind       TEXT NOT NULL CHECK (kind IN ('config', 'layer', 'manifest')),
        position   INTEGER NOT NULL,
        digest     TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size       INTEGER NOT NULL,
        PRIMARY KEY (manifest, kind, position)
    );
    CREATE INDEX manifest_refs_digest ON manifest_refs(digest);
    -- A layer blob and the digest of its uncompressed tar (the name of its extracted dir).
    CREATE TABLE layers (
        digest  TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL
    );
    CREATE INDEX layers_diff_id ON layers(diff_id);
    CREATE TABLE tags (
        name       TEXT PRIMARY KEY,
        manifest   TEXT NOT NULL REFERENCES manifests(digest),
        updated_at TEXT NOT NULL
    );
    CREATE INDEX tags_manifest ON tags(manifest);
    -- GC roots registered by higher layers (snapshots, sandboxes): digest is a
    -- manifest, a blob, or a layer diff id.
    CREATE TABLE roots (
        kind   TEXT NOT NULL,
        id     TEXT NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (kind, id, digest)
    );
    CREATE TABLE build_cache (
        key          TEXT PRIMARY KEY,
        layer_digest TEXT,
        diff_id      TEXT,
        size         INTEGER NOT NULL,
        value        TEXT NOT NULL,
        last_used    INTEGER NOT NULL
    );
    CREATE INDEX build_cache_last_used ON build_cache(last_used);
    -- Store-wide counters, e.g. the generation index.json was written at.
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO meta(key, value) VALUES ('index_generation', 0);
    "#,
    // 1 -> 2: where blobs were last seen in registries, for cross-repository mounts.
    r#"
    CREATE TABLE remote_blobs (
        registry   TEXT NOT NULL,
        digest     TEXT NOT NULL,
        repository TEXT NOT NULL,
        seen_at    INTEGER NOT NULL,
        PRIMARY KEY (registry, digest, repository)
    );
    "#,
    // 2 -> 3: the key and key inputs of the last build of each build step,
    // so a cache miss can say which input changed (`cairn build --explain`).
    r#"
    CREATE TABLE build_steps (
        slot       TEXT PRIMARY KEY,
        key        TEXT NOT NULL,
        inputs     TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// WAL pages after which a commit checkpoints the WAL into the database.
pub(crate) const WAL_AUTOCHECKPOINT_PAGES: i64 = 128;

/// The automatic checkpoint, truncating the WAL when it can. A PASSIVE
/// checkpoint (SQLite's own) leaves the WAL's frames in place until the
/// next write in the same process; the next process rebuilds the WAL index
/// from them as if none were checkpointed, so once the WAL passed the
/// limit every later write (a cached build's LRU mark) checkpointed it all
/// again: three fsyncs per `cairn build`. TRUNCATE empties the file. It
/// does not wait for readers (busy timeout 0 while it runs): when one
/// holds an old snapshot, it checkpoints what it can, as PASSIVE does.
unsafe extern "C" fn checkpoint_and_truncate(
    _: *mut std::ffi::c_void,
    db: *mut rusqlite::ffi::sqlite3,
    name: *const std::ffi::c_char,
    pages: std::ffi::c_int,
) -> std::ffi::c_int {
    if i64::from(pages) >= WAL_AUTOCHECKPOINT_PAGES {
        let (null, mode) = (
            std::ptr::null_mut(),
            rusqlite::ffi::SQLITE_CHECKPOINT_TRUNCATE,
        );
        rusqlite::ffi::sqlite3_busy_timeout(db, 0);
        rusqlite::ffi::sqlite3_wal_checkpoint_v2(db, name, mode, null, null);
        rusqlite::ffi::sqlite3_busy_timeout(db, BUSY_TIMEOUT.as_millis() as std::ffi::c_int);
    }
    rusqlite::ffi::SQLITE_OK
}

/// How long a connection waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Open `meta.db`, configure it and bring its schema up to date.
pub fn open(path: &Path) -> Result<Connection> {
    let db_err = |source| StoreError::Db {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(db_err)?;
    // Other processes hold write transactions briefly; wait rather than fail.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    // Switching a fresh database to WAL while another opener does the same
    // can answer SQLITE_BUSY without calling the busy handler: retry.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => break other.map_err(db_err)?,
        }
    }
    // FULL: a committed name survives power loss too, like the fsynced blobs it names.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(db_err)?;
    // Every commit is already durable in the WAL: the checkpoint SQLite
    // makes when the last connection closes (two fsyncs at the end of
    // every CLI command) buys nothing; the automatic checkpoint keeps the
    // WAL bounded. At 128 pages, not SQLite's 1000: each process's first
    // read rebuilds the WAL index by reading every frame (a 1,000-page WAL
    // cost a `cairn run` or cached build ~4 ms of CPU and 450 preads).
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(db_err)?;
    // SAFETY: the hook is a plain function that uses only the handle and
    // name SQLite passes it; it replaces the automatic checkpoint's hook.
    unsafe {
        rusqlite::ffi::sqlite3_wal_hook(
            conn.handle(),
            Some(checkpoint_and_truncate),
            std::ptr::null_mut(),
        );
    }
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(db_err)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let db_err = |source| StoreError::Db {
        path: path.to_path_buf(),
        source,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // IMMEDIATE: two processes opening a fresh store must not both migrate.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql).map_err(db_err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}
