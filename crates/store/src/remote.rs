//! Where blobs are known to live in registries. A push records every blob it
//! saw in (registry, repository); a later push of the same blob to another
//! repository of that registry can then ask for a cross-repository mount
//! instead of uploading the bytes again. Pulls record their sources too.

use crate::error::Result;
use crate::{Digest, Store};
use rusqlite::params;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many candidate repositories a mount lookup returns at most.
const MAX_MOUNT_SOURCES: i64 = 4;

impl Store {
    /// Note that `registry` holds these blobs in `repository`.
    pub fn note_remote_blobs(
        &self,
        registry: &str,
        repository: &str,
        digests: &[Digest],
    ) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let db_err = self.db_err();
        let mut conn = self.db();
        let tx = conn.transaction().map_err(&db_err)?;
        {
            let mut put = tx
                .prepare(
                    "INSERT INTO remote_blobs(registry, digest, repository, seen_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(registry, digest, repository) DO UPDATE SET seen_at = ?4",
                )
                .map_err(&db_err)?;
            for d in digests {
                put.execute(params![registry, d.to_string(), repository, now])
                    .map_err(&db_err)?;
            }
        }
        tx.commit().map_err(&db_err)
    }

    /// Repositories of `registry` other than `except` that held `digest`,
    /// most recently seen first.
    pub fn remote_blob_sources(
        &self,
        registry: &str,
        digest: &Digest,
        except: &str,
    ) -> Result<Vec<String>> {
        let db_err = self.db_err();
        let conn = self.db();
        let mut q = conn
            .prepare_cached(
                "SELECT repository FROM remote_blobs
                 WHERE registry = ?1 AND digest = ?2 AND repository != ?3
                 ORDER BY seen_at DESC LIMIT ?4",
            )
            .map_err(&db_err)?;
        let rows = q
            .query_map(
                params![registry, digest.to_string(), except, MAX_MOUNT_SOURCES],
                |r| r.get::<_, String>(0),
            )
            .map_err(&db_err)?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(&db_err)
    }

    /// Forget what we knew of a blob in one repository (a mount from it failed).
    pub fn forget_remote_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<()> {
        self.db()
            .execute(
                "DELETE FROM remote_blobs WHERE registry = ?1 AND repository = ?2 AND digest = ?3",
                params![registry, repository, digest.to_string()],
            )
            .map(|_| ())
            .map_err(self.db_err())
    }
}
