//! `oci:DIR[:REF]`: an OCI image layout directory.

use super::copy::{closure, import_manifest, BlobSource};
use super::name_from_ref;
use crate::error::{Result, StoreError};
use crate::image::BlobRef;
use crate::index_json::REF_NAME;
use crate::layout::OCI_LAYOUT;
use crate::reference::ImageRef;
use crate::{Digest, Store};
use serde_json::{json, Value};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An entry of a layout's index.json.
#[derive(Clone, Debug)]
pub(crate) struct IndexEntry {
    pub desc: BlobRef,
    pub ref_name: Option<String>,
}

/// Parse a layout's index.json.
pub(crate) fn parse_index(bytes: &[u8], source_name: &str) -> Result<Vec<IndexEntry>> {
    let bad = |reason: String| StoreError::BadSource {
        source_name: source_name.to_string(),
        reason,
    };
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("index.json is not JSON: {e}")))?;
    let list = v
        .get("manifests")
        .and_then(|m| m.as_array())
        .ok_or_else(|| bad("index.json has no \"manifests\" array".into()))?;
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let field = |k: &str| m.get(k);
        let digest = field("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse::<Digest>().ok())
            .ok_or_else(|| {
                bad(format!(
                    "index.json manifests[{i}] has no valid sha256 digest"
                ))
            })?;
        let size = field("size")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| bad(format!("index.json manifests[{i}] has no size")))?;
        let media_type = field("mediaType")
            .and_then(|s| s.as_str())
            .unwrap_or(crate::image::OCI_MANIFEST)
            .to_string();
        let ref_name = m
            .get("annotations")
            .and_then(|a| a.get(REF_NAME))
            .and_then(|r| r.as_str())
            .map(str::to_string);
        out.push(IndexEntry {
            desc: BlobRef {
                digest,
                media_type,
                size,
            },
            ref_name,
        });
    }
    Ok(out)
}

/// Pick the entries to import: the one whose ref name is `reference`
/// (exactly, or as the same normalised image name), or all of them.
pub(crate) fn select(
    entries: Vec<IndexEntry>,
    reference: Option<&str>,
    source_name: &str,
) -> Result<Vec<IndexEntry>> {
    let Some(want) = reference else {
        if entries.is_empty() {
            return Err(StoreError::BadSource {
                source_name: source_name.to_string(),
                reason: "index.json lists no images".into(),
            });
        }
        return Ok(entries);
    };
    let want_norm = ImageRef::parse(want).ok();
    let hits: Vec<IndexEntry> = entries
        .iter()
        .filter(|e| {
            e.ref_name.as_deref() == Some(want)
                || (want_norm.is_some()
                    && e.ref_name.as_deref().and_then(|r| ImageRef::parse(r).ok()) == want_norm)
        })
        .cloned()
        .collect();
    if hits.is_empty() {
        let names: Vec<String> = entries.iter().filter_map(|e| e.ref_name.clone()).collect();
        return Err(StoreError::BadSource {
            source_name: source_name.to_string(),
            reason: format!(
                "no image named {want:?}; it has: {}",
                if names.is_empty() {
                    "no named images".to_string()
                } else {
                    names.join(", ")
                }
            ),
        });
    }
    Ok(hits)
}

/// Import the selected entries with blobs from `src`; returns (digest, names).
pub(crate) fn import_entries(
    store: &Store,
    src: &mut dyn BlobSource,
    entries: Vec<IndexEntry>,
) -> Result<Vec<(Digest, Vec<ImageRef>)>> {
    let mut out = Vec::new();
    for e in entries {
        let digest = import_manifest(store, src, &e.desc)?;
        let names = e
            .ref_name
            .as_deref()
            .and_then(name_from_ref)
            .into_iter()
            .collect();
        out.push((digest, names));
    }
    Ok(out)
}

struct DirSource {
    root: PathBuf,
    source_name: String,
}

impl BlobSource for DirSource {
    fn ensure(&mut self, store: &Store, blob: &BlobRef) -> Result<()> {
        if store.blob_size(&blob.digest).ok() == Some(blob.size) {
            return Ok(());
        }
        let path = self.root.join("blobs/sha256").join(blob.digest.hex());
        let file = File::open(&path).map_err(|e| StoreError::BadSource {
            source_name: self.source_name.clone(),
            reason: format!(
                "blob {} cannot be read from {}: {e}",
                blob.digest,
                path.display()
            ),
        })?;
        store.ingest_reader(file, Some((blob.digest, blob.size)))?;
        Ok(())
    }
}

pub(crate) fn import(
    store: &Store,
    dir: &Path,
    reference: Option<&str>,
) -> Result<Vec<(Digest, Vec<ImageRef>)>> {
    let source_name = format!("oci:{}", dir.display());
    let bad = |reason: String| StoreError::BadSource {
        source_name: source_name.clone(),
        reason,
    };
    let layout = fs::read(dir.join("oci-layout"))
        .map_err(|e| bad(format!("not an OCI layout (oci-layout: {e})")))?;
    check_oci_layout(&layout, &source_name)?;
    let index = fs::read(dir.join("index.json")).map_err(|e| bad(format!("index.json: {e}")))?;
    let entries = select(parse_index(&index, &source_name)?, reference, &source_name)?;
    let mut src = DirSource {
        root: dir.to_path_buf(),
        source_name: source_name.clone(),
    };
    import_entries(store, &mut src, entries)
}

pub(crate) fn check_oci_layout(bytes: &[u8], source_name: &str) -> Result<()> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| StoreError::BadSource {
        source_name: source_name.to_string(),
        reason: format!("oci-layout is not JSON: {e}"),
    })?;
    if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(StoreError::BadSource {
            source_name: source_name.to_string(),
            reason: "oci-layout does not say imageLayoutVersion 1.0.0".into(),
        });
    }
    Ok(())
}

/// The descriptor index.json gets for the exported image.
pub(crate) fn top_descriptor(top: &BlobRef, reference: Option<&str>) -> Value {
    let mut d = json!({
        "mediaType": top.media_type,
        "digest": top.digest.to_string(),
        "size": top.size,
    });
    if let Some(r) = reference {
        d["annotations"] = json!({ REF_NAME: r });
    }
    d
}

pub(crate) fn export(
    store: &Store,
    digest: &Digest,
    dir: &Path,
    reference: Option<&str>,
) -> Result<()> {
    let dest_name = format!("oci:{}", dir.display());
    let has_layout = dir.join("oci-layout").is_file();
    if dir.exists() && !has_layout {
        let empty = fs::read_dir(dir)
            .map_err(StoreError::io("list", dir))?
            .next()
            .is_none();
        if !empty {
            return Err(StoreError::BadSource {
                source_name: dest_name,
                reason: "exists and is neither empty nor an OCI layout".into(),
            });
        }
    }
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(StoreError::io("create directory", &blobs))?;
    if !has_layout {
        write_file_atomic(dir, "oci-layout", OCI_LAYOUT.as_bytes())?;
    }
    let all = closure(store, digest)?;
    for b in &all {
        let dest = blobs.join(b.digest.hex());
        if dest.is_file() {
            continue;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&blobs)
            .map_err(StoreError::io("create temp file in", &blobs))?;
        let mut from = store.open_blob(&b.digest)?;
        std::io::copy(&mut from, tmp.as_file_mut())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(StoreError::io("write", tmp.path().to_path_buf()))?;
        tmp.persist(&dest)
            .map_err(|e| StoreError::io("rename into", &dest)(e.error))?;
    }
    let top = all
        .last()
        .ok_or_else(|| StoreError::UnknownImage(digest.to_string()))?;
    // index.json last: until it names the image, the new blobs are just unnamed content.
    let mut index: Value = match fs::read(dir.join("index.json")) {
        Ok(bytes) if has_layout => {
            serde_json::from_slice(&bytes).map_err(|e| StoreError::BadSource {
                source_name: dest_name.clone(),
                reason: format!("existing index.json is not JSON: {e}"),
            })?
        }
        _ => json!({ "schemaVersion": 2, "mediaType": crate::image::OCI_INDEX, "manifests": [] }),
    };
    let mut list: Vec<Value> = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    if let Some(r) = reference {
        list.retain(|m| {
            m.pointer("/annotations")
                .and_then(|a| a.get(REF_NAME))
                .and_then(|n| n.as_str())
                != Some(r)
        });
    }
    list.push(top_descriptor(top, reference));
    index["manifests"] = Value::Array(list);
    let bytes = serde_json::to_vec_pretty(&index).map_err(|source| StoreError::Json {
        what: "rendering index.json".into(),
        source,
    })?;
    write_file_atomic(dir, "index.json", &bytes)
}

fn write_file_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(StoreError::io("create temp file in", dir))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(StoreError::io("write", tmp.path().to_path_buf()))?;
    let dest = dir.join(name);
    tmp.persist(&dest)
        .map_err(|e| StoreError::io("rename into", &dest)(e.error))?;
    Ok(())
}
