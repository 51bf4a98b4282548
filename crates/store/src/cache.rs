//! The build cache: cache key -> the layer (and config delta) an instruction
//! produced. Entries are GC roots while they fit in the storage budget; the
//! least recently used go first.

use crate::error::Result;
use crate::{Digest, Store};
use rusqlite::{params, OptionalExtension};

/// One build-cache entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: String,
    /// The layer blob the step produced (none for config-only steps).
    pub layer_digest: Option<Digest>,
    /// Its diff id (the name of its extracted dir).
    pub diff_id: Option<Digest>,
    /// Bytes this entry keeps alive (blob + extracted dir, as the caller counts).
    pub size: u64,
    /// Opaque to the store: the builder's config delta etc. (JSON text).
    pub value: String,
}

/// The key of the last build of one build step and the inputs that made
/// it (JSON, opaque to the store): what a later cache miss is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRecord {
    pub slot: String,
    pub key: String,
    pub inputs: String,
}

/// Insert or replace one entry, marked used now.
fn put_row(db: &rusqlite::Connection, entry: &CacheEntry) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT OR REPLACE INTO build_cache(key, layer_digest, diff_id, size, value, last_used)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        entry.key,
        entry.layer_digest.map(|d| d.to_string()),
        entry.diff_id.map(|d| d.to_string()),
        entry.size as i64,
        entry.value,
        now_nanos()
    ])?;
    Ok(())
}

/// A monotonic-enough clock for LRU order: nanoseconds since the epoch.
fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

impl Store {
    /// Look a key up and mark it used. The mark is committed without an
    /// fsync (see [`Store::relaxed_commit`]): it only orders the LRU, so a
    /// fully cached build makes nothing durable and waits for no disk.
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheEntry>> {
        self.relaxed_commit(|db| {
            cache_row(
                db,
                key,
                "UPDATE build_cache SET last_used = ?2 WHERE key = ?1
                 RETURNING layer_digest, diff_id, size, value",
                params![key, now_nanos()],
            )
        })
    }

    /// Look a key up without marking it used (a dry run changes nothing).
    pub fn cache_peek(&self, key: &str) -> Result<Option<CacheEntry>> {
        self.cache_lookup(
            key,
            "SELECT layer_digest, diff_id, size, value FROM build_cache WHERE key = ?1",
            params![key],
        )
    }

    /// One cache row by `sql`, which yields layer_digest, diff_id, size, value.
    fn cache_lookup(
        &self,
        key: &str,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Option<CacheEntry>> {
        cache_row(&self.db(), key, sql, args).map_err(self.db_err())
    }

    /// Run `write` on the connection with `synchronous=NORMAL` (in WAL
    /// mode: committed and consistent, but not fsynced until the next
    /// checkpoint or a later FULL commit), then back to FULL, under one
    /// hold of the connection so no other commit runs relaxed. For writes
    /// a power loss may forget at no cost (LRU marks, roots of sandboxes
    /// that die with the machine).
    pub(crate) fn relaxed_commit<T>(
        &self,
        write: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let db = self.db();
        let written = db
            .pragma_update(None, "synchronous", "NORMAL")
            .and_then(|()| write(&db));
        // Back to FULL for every other commit, whatever the write did.
        let restored = db.pragma_update(None, "synchronous", "FULL");
        let value = written.map_err(self.db_err())?;
        restored.map_err(self.db_err())?;
        Ok(value)
    }

    /// The last recorded build of a step (`slot`: the builder's name for a
    /// step of a Dockerfile in a context), if any.
    pub fn step_record(&self, slot: &str) -> Result<Option<StepRecord>> {
        self.db()
            .query_row(
                "SELECT key, inputs FROM build_steps WHERE slot = ?1",
                params![slot],
                |r| {
                    Ok(StepRecord {
                        slot: slot.to_string(),
                        key: r.get(0)?,
                        inputs: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(self.db_err())
    }

    /// Record the latest build of these steps, in one transaction.
    pub fn put_step_records(&self, records: &[StepRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let db_err = self.db_err();
        let mut conn = self.db();
        let tx = conn.transaction().map_err(&db_err)?;
        for r in records {
            tx.execute(
                "INSERT OR REPLACE INTO build_steps(slot, key, inputs, updated_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![r.slot, r.key, r.inputs, now_nanos()],
            )
            .map_err(&db_err)?;
        }
        tx.commit().map_err(&db_err)
    }

    /// Insert or replace an entry (its layer blob should already be stored).
    pub fn cache_put(&self, entry: &CacheEntry) -> Result<()> {
        put_row(&self.db(), entry).map_err(self.db_err())
    }

    /// Record entries whose layers came from elsewhere (a registry cache's
    /// verified blobs, no extracted dirs), in one transaction committed
    /// without an fsync ([`Store::relaxed_commit`]): their blobs are
    /// durable before this, and a power loss that forgets the entries only
    /// costs the next build their import again.
    pub fn cache_put_imported(&self, entries: &[CacheEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.relaxed_commit(|db| {
            let tx = db.unchecked_transaction()?;
            for entry in entries {
                put_row(&tx, entry)?;
            }
            tx.commit()
        })
    }

    /// Mark an entry used without reading it (no fsync, as `cache_get`).
    pub fn cache_touch(&self, key: &str) -> Result<bool> {
        let n = self.relaxed_commit(|db| {
            db.execute(
                "UPDATE build_cache SET last_used = ?2 WHERE key = ?1",
                params![key, now_nanos()],
            )
        })?;
        Ok(n == 1)
    }

    /// Drop least-recently-used entries until the rest fit in `budget` bytes.
    /// Returns the number of entries dropped. (The blobs go at the next GC.)
    pub fn cache_trim(&self, budget: u64) -> Result<usize> {
        let db_err = self.db_err();
        let mut conn = self.db();
        let tx = conn.transaction().map_err(&db_err)?;
        let keys: Vec<(String, i64)> = {
            let mut stmt = tx
                .prepare("SELECT key, size FROM build_cache ORDER BY last_used DESC, key")
                .map_err(&db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(&db_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(&db_err)?
        };
        let mut used: u64 = 0;
        let mut dropped = 0;
        for (key, size) in keys {
            used = used.saturating_add(size.max(0) as u64);
            if used > budget {
                tx.execute("DELETE FROM build_cache WHERE key = ?1", [key])
                    .map_err(&db_err)?;
                dropped += 1;
            }
        }
        tx.commit().map_err(&db_err)?;
        Ok(dropped)
    }

    /// Register a GC root: `digest` (a manifest, a blob or a layer diff id) is
    /// kept while (`kind`, `id`) holds it, e.g. ("sandbox", id, diff id).
    pub fn add_root(&self, kind: &str, id: &str, digest: &Digest) -> Result<()> {
        self.db()
            .execute(
                "INSERT OR IGNORE INTO roots(kind, id, digest) VALUES (?1, ?2, ?3)",
                params![kind, id, digest.to_string()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// [`Store::add_root`] for a root that dies with its process (a
    /// `run --rm` sandbox's): committed without waiting for the disk. WAL
    /// with `synchronous=NORMAL` stays consistent; a power loss may forget
    /// the root, together with the sandbox it protected. Saves an fsync on
    /// the start path.
    pub fn add_volatile_root(&self, kind: &str, id: &str, digest: &Digest) -> Result<()> {
        self.relaxed_commit(|db| {
            db.execute(
                "INSERT OR IGNORE INTO roots(kind, id, digest) VALUES (?1, ?2, ?3)",
                params![kind, id, digest.to_string()],
            )
        })?;
        Ok(())
    }

    /// Drop every root (`kind`, `id`) holds.
    pub fn remove_roots(&self, kind: &str, id: &str) -> Result<usize> {
        self.db()
            .execute(
                "DELETE FROM roots WHERE kind = ?1 AND id = ?2",
                params![kind, id],
            )
            .map_err(self.db_err())
    }

    /// [`Store::remove_roots`] without waiting for the disk (for a `run
    /// --rm` sandbox's root: no fsync on that path). A power loss may bring
    /// the root back; whoever owns `kind` must then drop roots whose holder
    /// is gone (the sandbox manager sweeps roots of missing sandboxes).
    /// Holding no root (an ephemeral sandbox kept by `store.lock`) writes
    /// nothing: one read, no commit, no WAL frame.
    pub fn remove_volatile_roots(&self, kind: &str, id: &str) -> Result<usize> {
        let held: bool = self
            .db()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM roots WHERE kind = ?1 AND id = ?2)",
                params![kind, id],
                |r| r.get(0),
            )
            .map_err(self.db_err())?;
        if !held {
            return Ok(0);
        }
        self.relaxed_commit(|db| {
            db.execute(
                "DELETE FROM roots WHERE kind = ?1 AND id = ?2",
                params![kind, id],
            )
        })
    }

    /// The distinct ids holding roots of `kind`.
    pub fn root_ids(&self, kind: &str) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT DISTINCT id FROM roots WHERE kind = ?1")
            .map_err(self.db_err())?;
        let ids = stmt
            .query_map([kind], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())?;
        Ok(ids)
    }
}

/// One cache row by `sql` (layer_digest, diff_id, size, value).
fn cache_row(
    db: &rusqlite::Connection,
    key: &str,
    sql: &str,
    args: impl rusqlite::Params,
) -> rusqlite::Result<Option<CacheEntry>> {
    let row = db
        .query_row(sql, args, |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .optional()?;
    Ok(row.map(|(l, d, size, value)| CacheEntry {
        key: key.to_string(),
        layer_digest: l.and_then(|s| s.parse().ok()),
        diff_id: d.and_then(|s| s.parse().ok()),
        size: size as u64,
        value,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache entry with no layer, under key `k`.
    fn small_entry() -> CacheEntry {
        CacheEntry {
            key: "k".into(),
            layer_digest: None,
            diff_id: None,
            size: 1,
            value: "{}".into(),
        }
    }

    fn synchronous(store: &Store) -> i64 {
        store
            .db()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_cache_hit_marks_the_entry_and_leaves_later_commits_durable() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let entry = small_entry();
        store.cache_put(&entry).unwrap();
        let used = |store: &Store| -> i64 {
            store
                .db()
                .query_row("SELECT last_used FROM build_cache", [], |r| r.get(0))
                .unwrap()
        };
        let before = used(&store);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(store.cache_get("k").unwrap(), Some(entry));
        assert!(used(&store) > before, "the hit is recorded");
        assert!(store.cache_touch("k").unwrap());
        assert!(!store.cache_touch("missing").unwrap());
        // 2 = FULL: only the mark itself was committed relaxed.
        assert_eq!(synchronous(&store), 2);
        drop(store);
        let reopened = Store::open(t.path()).unwrap();
        assert!(used(&reopened) > before, "the mark is committed");
    }

    /// Each process rebuilds the WAL index from the WAL file: a checkpoint
    /// that left the frames in the file made every later process's first
    /// write checkpoint them all again (three fsyncs per cached build).
    /// The checkpoint truncates the WAL, so it never stays at the limit.
    #[test]
    fn the_wal_is_emptied_by_its_checkpoint_across_processes() {
        let t = tempfile::tempdir().unwrap();
        let entry = small_entry();
        Store::open(t.path()).unwrap().cache_put(&entry).unwrap();
        let wal = t.path().join("meta.db-wal");
        let limit = crate::db::WAL_AUTOCHECKPOINT_PAGES as u64 * (4096 + 24) + 32;
        let mut shrank = false;
        let mut last = 0;
        for _ in 0..200 {
            // A new "process": no other connection holds the WAL index.
            let store = Store::open(t.path()).unwrap();
            assert!(store.cache_touch("k").unwrap());
            drop(store);
            let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            assert!(size < limit, "the WAL stayed at the limit: {size} bytes");
            shrank |= size < last;
            last = size;
        }
        assert!(shrank, "200 marks never reached the checkpoint");
    }
}
