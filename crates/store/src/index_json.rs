//! `index.json` at the store root: the OCI layout's view of the tags, so
//! `skopeo inspect oci:STORE:NAME` and umoci read the store directly.
//!
//! It is derived from `meta.db` and rewritten (temp file + rename) inside the
//! SQLite write transaction that changed the tags, so writers are serialised
//! and none loses another's entry. Each rewrite carries a generation number
//! that the transaction also stores; a process killed between the rename and
//! the commit leaves an index.json one generation ahead, which
//! [`Store::repair_index_json`] recognises as a torn update and rewrites.

use crate::error::{Result, StoreError};
use crate::fsutil::write_atomic;
use crate::Store;
use rusqlite::Transaction;
use serde_json::json;
use std::collections::BTreeMap;

/// The annotation skopeo and umoci match `oci:DIR:REF` against.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Top-level annotation with the generation index.json was written at.
pub const GENERATION: &str = "io.cairn.index.generation";

/// The tags as index.json should list them: name -> (manifest digest, media type, size).
pub(crate) type TagView = BTreeMap<String, (String, String, u64)>;

pub(crate) fn tags_view(tx: &rusqlite::Connection) -> rusqlite::Result<TagView> {
    let mut stmt = tx.prepare(
        "SELECT t.name, m.digest, m.media_type, m.size FROM tags t JOIN manifests m ON m.digest = t.manifest",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            (
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)? as u64,
            ),
        ))
    })?;
    rows.collect()
}

/// Rewrite index.json from the tags visible in `tx`, bumping the generation.
pub(crate) fn rewrite(store: &Store, tx: &Transaction<'_>) -> Result<()> {
    let db_err = store.db_err();
    let generation = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'index_generation'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(&db_err)?
        + 1;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'index_generation'",
        [generation],
    )
    .map_err(&db_err)?;
    let tags = tags_view(tx).map_err(&db_err)?;
    let bytes = render(&tags, generation)?;
    write_atomic(&store.layout().index_json(), &store.layout().tmp(), &bytes)
}

fn render(tags: &TagView, generation: i64) -> Result<Vec<u8>> {
    let manifests: Vec<_> = tags
        .iter()
        .map(|(name, (digest, media_type, size))| {
            json!({
                "mediaType": media_type,
                "digest": digest,
                "size": size,
                "annotations": { REF_NAME: name },
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
        "annotations": { GENERATION: generation.to_string() },
    });
    serde_json::to_vec_pretty(&index).map_err(|source| StoreError::Json {
        what: "rendering index.json".into(),
        source,
    })
}

/// What index.json says: its generation and its tags.
pub(crate) struct IndexOnDisk {
    pub generation: Option<i64>,
    pub tags: TagView,
}

pub(crate) fn read(store: &Store) -> Result<IndexOnDisk> {
    let path = store.layout().index_json();
    let bytes = std::fs::read(&path).map_err(StoreError::io("read", &path))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: format!("parsing {}", path.display()),
            source,
        })?;
    let generation = v
        .pointer("/annotations")
        .and_then(|a| a.get(GENERATION))
        .and_then(|g| g.as_str())
        .and_then(|g| g.parse().ok());
    let mut tags = TagView::new();
    for m in v
        .get("manifests")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        let name = m
            .pointer("/annotations")
            .and_then(|a| a.get(REF_NAME))
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        let digest = m
            .get("digest")
            .and_then(|d| d.as_str())
            .unwrap_or("")
            .to_string();
        let media_type = m
            .get("mediaType")
            .and_then(|d| d.as_str())
            .unwrap_or("")
            .to_string();
        let size = m.get("size").and_then(|s| s.as_u64()).unwrap_or(0);
        tags.insert(name, (digest, media_type, size));
    }
    Ok(IndexOnDisk { generation, tags })
}

impl Store {
    /// Rewrite index.json from meta.db (under the SQLite write lock).
    pub fn write_index_json(&self) -> Result<()> {
        let mut conn = self.db();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.db_err())?;
        rewrite(self, &tx)?;
        tx.commit().map_err(self.db_err())
    }

    /// If index.json is not what meta.db says because a writer died between
    /// writing it and committing (its generation is ahead of the database's),
    /// rewrite it. Returns true if it did. Any other difference is left for
    /// fsck to report.
    pub fn repair_index_json(&self) -> Result<bool> {
        let mut conn = self.db();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.db_err())?;
        let db_generation: i64 = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'index_generation'",
                [],
                |r| r.get(0),
            )
            .map_err(self.db_err())?;
        let on_disk = match read(self) {
            Ok(i) => i,
            Err(_) => return Ok(false),
        };
        if on_disk.generation.is_some_and(|g| g > db_generation) {
            rewrite(self, &tx)?;
            tx.commit().map_err(self.db_err())?;
            return Ok(true);
        }
        Ok(false)
    }
}
