//! Garbage collection (mark from roots, sweep the rest) and fsck (check
//! every invariant of the store format).

use crate::error::{Result, StoreError};
use crate::fsutil::sync_dir;
use crate::index_json::{self, REF_NAME};
use crate::layer_dirs::{PlainRemover, TreeRemover, MARKER_SUFFIX};
use crate::lock::LockMode;
use crate::{Digest, Store};
use std::collections::HashSet;
use std::fs;

/// What a GC run removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub cache_entries_dropped: usize,
    pub manifests_forgotten: usize,
    pub blobs_removed: usize,
    pub blob_bytes_freed: u64,
    pub layer_dirs_removed: usize,
    pub tmp_entries_removed: usize,
}

/// Re-reads a layer dir into the digest of its deterministic tar (the CLI
/// supplies one that runs in a user namespace, for subordinate-owned files).
pub trait LayerVerifier {
    fn tree_digest(&self, dir: &std::path::Path) -> std::result::Result<Digest, String>;

    /// The tree digest of `blob` freshly extracted into `scratch` (an empty
    /// dir under the store's `tmp/`, which this removes again): the
    /// reference for a layer dir extracted while it downloaded.
    fn blob_tree_digest(
        &self,
        blob: &std::path::Path,
        scratch: &std::path::Path,
    ) -> std::result::Result<Digest, String> {
        let extracted = std::fs::File::open(blob)
            .map_err(|e| format!("opening {}: {e}", blob.display()))
            .and_then(|file| {
                let opts = cairn_layer::ExtractOptions {
                    whiteout_mode: cairn_layer::WhiteoutMode::Overlay(
                        cairn_layer::OverlayFlavour::UserXattr,
                    ),
                    ..cairn_layer::ExtractOptions::default()
                };
                cairn_layer::extract_layer(std::io::BufReader::new(file), scratch, &opts)
                    .map_err(|e| e.to_string())
            });
        let tree = extracted.and_then(|_| self.tree_digest(scratch));
        let _ = std::fs::remove_dir_all(scratch);
        tree
    }
}

/// Re-reads with the caller's own rights, in this process.
pub struct PlainVerifier;

impl LayerVerifier for PlainVerifier {
    fn tree_digest(&self, dir: &std::path::Path) -> std::result::Result<Digest, String> {
        let opts = cairn_layer::LayerOptions {
            compression: cairn_layer::Compression::None,
            ..cairn_layer::LayerOptions::default()
        };
        let source = cairn_layer::DiffSource::OverlayUpper {
            upper: dir,
            flavour: cairn_layer::OverlayFlavour::UserXattr,
        };
        cairn_layer::write_layer(source, &opts, std::io::sink())
            .map(|info| info.diff_id)
            .map_err(|e| e.to_string())
    }
}

/// Everything reachable from the roots.
struct Marked {
    manifests: HashSet<String>,
    blobs: HashSet<String>,
    diff_ids: HashSet<String>,
}

impl Store {
    fn mark(&self) -> Result<Marked> {
        let db_err = self.db_err();
        let conn = self.db();
        let strings = |sql: &str| -> Result<Vec<String>> {
            let mut stmt = conn.prepare(sql).map_err(&db_err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(&db_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(&db_err)
        };
        let roots = strings("SELECT digest FROM roots")?;
        let mut manifests: HashSet<String> = HashSet::new();
        let mut todo: Vec<String> = strings("SELECT manifest FROM tags")?;
        todo.extend(roots.iter().cloned());
        let mut children = conn
            .prepare("SELECT kind, digest FROM manifest_refs WHERE manifest = ?1")
            .map_err(&db_err)?;
        let mut is_manifest = conn
            .prepare("SELECT EXISTS(SELECT 1 FROM manifests WHERE digest = ?1)")
            .map_err(&db_err)?;
        let mut blobs: HashSet<String> = HashSet::new();
        while let Some(m) = todo.pop() {
            let known: bool = is_manifest.query_row([&m], |r| r.get(0)).map_err(&db_err)?;
            if !known || !manifests.insert(m.clone()) {
                continue;
            }
            blobs.insert(m.clone());
            let rows: Vec<(String, String)> = children
                .query_map([&m], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(&db_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(&db_err)?;
            for (kind, d) in rows {
                if kind == "manifest" {
                    todo.push(d);
                } else {
                    blobs.insert(d);
                }
            }
        }
        blobs.extend(roots.iter().cloned());
        blobs.extend(strings(
            "SELECT layer_digest FROM build_cache WHERE layer_digest IS NOT NULL",
        )?);
        let mut diff_ids: HashSet<String> = roots.into_iter().collect();
        diff_ids.extend(strings(
            "SELECT diff_id FROM build_cache WHERE diff_id IS NOT NULL",
        )?);
        let mut layer_ids = conn
            .prepare("SELECT digest, diff_id FROM layers")
            .map_err(&db_err)?;
        let pairs: Vec<(String, String)> = layer_ids
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(&db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&db_err)?;
        for (digest, diff_id) in pairs {
            if blobs.contains(&digest) {
                diff_ids.insert(diff_id);
            }
        }
        Ok(Marked {
            manifests,
            blobs,
            diff_ids,
        })
    }

    /// Collect garbage. Needs the exclusive lock ([`Store::open_exclusive`]):
    /// then no other process is writing, so all of `tmp/` is garbage too.
    /// With `cache_budget`, build-cache entries beyond it (LRU first) are
    /// dropped before marking.
    pub fn gc(&self, cache_budget: Option<u64>) -> Result<GcReport> {
        self.gc_with(cache_budget, &PlainRemover)
    }

    /// [`Store::gc`], removing trees through `remover` (a user-namespace
    /// task, for dirs holding subordinate-owned files). Unreachable layer
    /// dirs are first renamed into `tmp/`, then `tmp/` is cleared: an
    /// interrupted or failed run leaves only garbage the next run removes.
    pub fn gc_with(
        &self,
        cache_budget: Option<u64>,
        remover: &dyn TreeRemover,
    ) -> Result<GcReport> {
        if self.lock_mode() != LockMode::Exclusive {
            return Err(StoreError::NotExclusive);
        }
        let mut report = GcReport::default();
        self.repair_index_json()?;
        if let Some(budget) = cache_budget {
            report.cache_entries_dropped = self.cache_trim(budget)?;
        }
        let marked = self.mark()?;

        // Forget unreachable records first, then delete files: a crash in
        // between leaves unnamed files, which the next GC removes.
        {
            let db_err = self.db_err();
            let mut conn = self.db();
            let tx = conn.transaction().map_err(&db_err)?;
            let all: Vec<String> = {
                let mut stmt = tx
                    .prepare("SELECT digest FROM manifests")
                    .map_err(&db_err)?;
                let rows = stmt.query_map([], |r| r.get(0)).map_err(&db_err)?;
                rows.collect::<rusqlite::Result<_>>().map_err(&db_err)?
            };
            for m in all.iter().filter(|m| !marked.manifests.contains(*m)) {
                tx.execute("DELETE FROM manifests WHERE digest = ?1", [m])
                    .map_err(&db_err)?;
                report.manifests_forgotten += 1;
            }
            let layers: Vec<String> = {
                let mut stmt = tx.prepare("SELECT digest FROM layers").map_err(&db_err)?;
                let rows = stmt.query_map([], |r| r.get(0)).map_err(&db_err)?;
                rows.collect::<rusqlite::Result<_>>().map_err(&db_err)?
            };
            for l in layers.iter().filter(|l| !marked.blobs.contains(*l)) {
                tx.execute("DELETE FROM layers WHERE digest = ?1", [l])
                    .map_err(&db_err)?;
            }
            tx.commit().map_err(&db_err)?;
        }

        let blobs_dir = self.layout().blobs();
        for entry in fs::read_dir(&blobs_dir).map_err(StoreError::io("list", &blobs_dir))? {
            let entry = entry.map_err(StoreError::io("list", &blobs_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if marked.blobs.contains(&format!("sha256:{name}")) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(StoreError::io("remove", &path))?;
            report.blobs_removed += 1;
            report.blob_bytes_freed += size;
        }

        report.layer_dirs_removed = self.doom_layer_dirs(&marked.diff_ids)?;
        // Doomed layer dirs are in tmp/ now; count them once, as layer dirs.
        report.tmp_entries_removed = self
            .clear_tmp(remover)?
            .saturating_sub(report.layer_dirs_removed);
        Ok(report)
    }

    /// Move every layer dir that is unreachable or not marked complete into
    /// `tmp/` (its marker removed first), and drop markers without a dir.
    /// Renames only: a crash or an error leaves dirs in `tmp/`, which the
    /// next GC clears, or unmarked dirs, which it moves again.
    fn doom_layer_dirs(&self, reachable: &HashSet<String>) -> Result<usize> {
        let layers_dir = self.layout().layers();
        let tmp = self.layout().tmp();
        let mut doomed = 0;
        for entry in fs::read_dir(&layers_dir).map_err(StoreError::io("list", &layers_dir))? {
            let entry = entry.map_err(StoreError::io("list", &layers_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(MARKER_SUFFIX) {
                let keep =
                    reachable.contains(&format!("sha256:{hex}")) && layers_dir.join(hex).is_dir();
                if !keep {
                    match fs::remove_file(entry.path()) {
                        // Already gone with its dir, earlier in this listing.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        r => r.map_err(StoreError::io("remove", entry.path()))?,
                    }
                }
                continue;
            }
            let marker = layers_dir.join(format!("{name}{MARKER_SUFFIX}"));
            if reachable.contains(&format!("sha256:{name}")) && marker.is_file() {
                continue;
            }
            match fs::remove_file(&marker) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove", &marker)(e)),
            }
            let aside = tmp.join(format!("doomed-layer-{name}"));
            fs::rename(entry.path(), &aside)
                .map_err(StoreError::io("move to tmp", entry.path()))?;
            doomed += 1;
        }
        sync_dir(&layers_dir)?;
        Ok(doomed)
    }

    /// Remove everything in `tmp/` (under the exclusive lock no writer is
    /// active, so all of it is garbage: temp files of killed processes,
    /// doomed layer dirs, partial extractions). Trees go through `remover`,
    /// since their files may belong to subordinate IDs. Every entry is tried;
    /// the first failure is returned after the rest were attempted.
    fn clear_tmp(&self, remover: &dyn TreeRemover) -> Result<usize> {
        let tmp_dir = self.layout().tmp();
        let mut removed = 0;
        let mut first_error = None;
        for entry in fs::read_dir(&tmp_dir).map_err(StoreError::io("list", &tmp_dir))? {
            let path = entry.map_err(StoreError::io("list", &tmp_dir))?.path();
            let result = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => remover
                    .remove_tree(&path)
                    .map_err(|msg| StoreError::io("remove", &path)(std::io::Error::other(msg))),
                Ok(_) => fs::remove_file(&path).map_err(StoreError::io("remove", &path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(StoreError::io("stat", &path)(e)),
            };
            match result {
                Ok(()) => removed += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Check every invariant of the store format; returns the violations
    /// (empty means the store is sound). Re-hashes every referenced blob.
    pub fn fsck(&self) -> Result<Vec<String>> {
        let mut bad = Vec::new();
        if self.repair_index_json()? {
            // A writer was killed between writing index.json and committing:
            // recovered, like a journal replay, not a violation.
        }
        let db_err = self.db_err();
        let (manifests, refs, tags, cache) = {
            let conn = self.db();
            let q4 = |sql: &str| -> Result<Vec<(String, String, i64, String)>> {
                let mut stmt = conn.prepare(sql).map_err(&db_err)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .map_err(&db_err)?;
                rows.collect::<rusqlite::Result<_>>().map_err(&db_err)
            };
            (
                q4("SELECT digest, media_type, size, '' FROM manifests")?,
                q4("SELECT manifest, kind, size, digest FROM manifest_refs")?,
                q4("SELECT t.name, t.manifest, 0, COALESCE(m.digest, '') FROM tags t LEFT JOIN manifests m ON m.digest = t.manifest")?,
                q4("SELECT key, COALESCE(layer_digest, ''), 0, '' FROM build_cache")?,
            )
        };
        let recorded: HashSet<&str> = manifests.iter().map(|m| m.0.as_str()).collect();
        let mut verified: HashSet<String> = HashSet::new();
        let mut check_blob =
            |bad: &mut Vec<String>, digest: &str, size: Option<i64>, what: &str| {
                let Ok(d) = digest.parse::<Digest>() else {
                    bad.push(format!(
                        "{what} names {digest:?}, which is not a sha256 digest"
                    ));
                    return;
                };
                match self.blob_size(&d) {
                    Err(StoreError::BlobMissing(_)) => {
                        bad.push(format!("{what} names blob {d}, which is missing"));
                        return;
                    }
                    Err(e) => {
                        bad.push(format!("{what}: blob {d}: {e}"));
                        return;
                    }
                    Ok(actual) => {
                        if let Some(want) = size {
                            if actual != want as u64 {
                                bad.push(format!(
                                    "{what} says blob {d} is {want} bytes, but it is {actual}"
                                ));
                                return; // wrong size: re-hashing would only repeat the news
                            }
                        }
                    }
                }
                if verified.insert(digest.to_string()) {
                    if let Err(e) = self.verify_blob(&d) {
                        bad.push(format!("{what}: {e}"));
                    }
                }
            };
        for (digest, _, size, _) in &manifests {
            check_blob(&mut bad, digest, Some(*size), &format!("manifest {digest}"));
        }
        for (manifest, kind, size, digest) in &refs {
            let what = format!("manifest {manifest} ({kind})");
            check_blob(&mut bad, digest, Some(*size), &what);
            if kind == "manifest" && !recorded.contains(digest.as_str()) {
                bad.push(format!(
                    "{what} names child manifest {digest}, which is not recorded"
                ));
            }
        }
        for (name, manifest, _, known) in &tags {
            if known.is_empty() {
                bad.push(format!(
                    "tag {name} points at manifest {manifest}, which is not recorded"
                ));
            }
        }
        for (key, layer, _, _) in &cache {
            if !layer.is_empty() {
                check_blob(&mut bad, layer, None, &format!("build cache entry {key}"));
            }
        }
        bad.extend(self.check_index_json()?);

        bad.extend(self.check_layer_dirs(None)?);
        Ok(bad)
    }

    /// [`Store::fsck`], and every complete layer dir re-read: `verifier`
    /// gives the digest of its deterministic tar, which must equal what its
    /// marker recorded when it was adopted (a truncated or changed file
    /// shows). Linear in the size of all extracted layers.
    pub fn fsck_full(&self, verifier: &dyn LayerVerifier) -> Result<Vec<String>> {
        let mut bad = self.fsck()?;
        bad.retain(|b| !b.starts_with("layer dir "));
        bad.extend(self.check_layer_dirs(Some(verifier))?);
        Ok(bad)
    }

    /// Names under `layers/` and, with a verifier, the content of each
    /// complete dir. Unmarked dirs and lone markers are garbage, not
    /// violations (GC removes them; a crash can leave a lone marker).
    fn check_layer_dirs(&self, verifier: Option<&dyn LayerVerifier>) -> Result<Vec<String>> {
        let mut bad = Vec::new();
        let layers_dir = self.layout().layers();
        for entry in fs::read_dir(&layers_dir).map_err(StoreError::io("list", &layers_dir))? {
            let entry = entry.map_err(StoreError::io("list", &layers_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let hex = name.strip_suffix(MARKER_SUFFIX).unwrap_or(&name);
            let Ok(diff_id) = Digest::from_hex(hex) else {
                bad.push(format!(
                    "layer dir {} is not named by a diff id (64 lowercase hex digits)",
                    path.display()
                ));
                continue;
            };
            if name.ends_with(MARKER_SUFFIX) {
                continue;
            }
            if !path.is_dir() {
                bad.push(format!("layer dir {} is not a directory", path.display()));
                continue;
            }
            if !self.layer_marker_path(&diff_id).is_file() {
                continue; // never completed: garbage
            }
            let Some(marker) = self.layer_marker(&diff_id).filter(|m| m.diff_id == diff_id) else {
                bad.push(format!(
                    "layer dir {}: its completion marker is unreadable or names another layer",
                    path.display()
                ));
                continue;
            };
            let Some(verifier) = verifier else { continue };
            let want = match marker.blob {
                Some(blob) => match self.blob_reference(verifier, &blob) {
                    Ok(tree) => tree,
                    Err(e) => {
                        bad.push(format!("layer dir {}: {e}", path.display()));
                        continue;
                    }
                },
                None => marker.tree,
            };
            match verifier.tree_digest(&path) {
                Ok(tree) if tree == want => {}
                Ok(tree) => bad.push(match marker.blob {
                    Some(blob) => format!(
                        "layer dir {}: content changed since it was extracted (its tar now has digest {tree}, a fresh extraction of its blob {blob} {want})",
                        path.display()
                    ),
                    None => format!(
                        "layer dir {}: content changed since it was extracted (its tar now has digest {tree}, {want} when adopted)",
                        path.display()
                    ),
                }),
                Err(e) => bad.push(format!("layer dir {}: cannot re-read it: {e}", path.display())),
            }
        }
        Ok(bad)
    }

    /// The tree digest a layer dir extracted from `blob` must have: that
    /// of a fresh extraction of the blob (verified against its name first).
    fn blob_reference(
        &self,
        verifier: &dyn LayerVerifier,
        blob: &Digest,
    ) -> std::result::Result<Digest, String> {
        self.verify_blob(blob)
            .map_err(|e| format!("its blob {blob} cannot serve as reference: {e}"))?;
        let scratch = tempfile::Builder::new()
            .prefix("fsck-")
            .tempdir_in(self.layout().tmp())
            .map_err(|e| format!("scratch dir: {e}"))?
            .keep();
        verifier.blob_tree_digest(&self.blob_path(blob), &scratch)
    }

    /// index.json must list exactly the tags, each with its manifest's
    /// digest, media type and size. Checked under the write lock so no writer
    /// is between its index.json rename and its commit.
    fn check_index_json(&self) -> Result<Vec<String>> {
        let mut bad = Vec::new();
        let mut conn = self.db();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.db_err())?;
        let want = index_json::tags_view(&tx).map_err(self.db_err())?;
        let path = self.layout().index_json();
        let have = match index_json::read(self) {
            Ok(i) => i.tags,
            Err(e) => {
                bad.push(format!("{}: {e}", path.display()));
                return Ok(bad);
            }
        };
        for (name, entry) in &want {
            match have.get(name) {
                None => bad.push(format!("index.json lacks tag {name}")),
                Some(e) if e != entry => bad.push(format!(
                    "index.json says {name} is {} ({}, {} bytes), meta.db says {} ({}, {} bytes)",
                    e.0, e.1, e.2, entry.0, entry.1, entry.2
                )),
                Some(_) => {}
            }
        }
        for (name, entry) in &have {
            if !want.contains_key(name) {
                bad.push(format!(
                    "index.json lists {REF_NAME}={name:?} ({}), which is not a tag",
                    entry.0
                ));
            }
        }
        drop(tx);
        Ok(bad)
    }
}
