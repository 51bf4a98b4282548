//! `oci-archive:FILE[:REF]`: a tar of an OCI image layout, read in one
//! streaming pass (no extraction to a temp dir) and written under a temp name.

use super::copy::{closure, AlreadyIngested};
use super::oci_dir::{check_oci_layout, import_entries, parse_index, select, top_descriptor};
use super::tar_entry::{clean, for_each_entry, ingest_entry, read_small};
use crate::error::{Result, StoreError};
use crate::layout::OCI_LAYOUT;
use crate::reference::ImageRef;
use crate::{Digest, Store};
use cairn_layer::ExtractLimits;
use serde_json::json;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

pub(crate) fn import(
    store: &Store,
    path: &Path,
    reference: Option<&str>,
    limits: &ExtractLimits,
) -> Result<Vec<(Digest, Vec<ImageRef>)>> {
    let source_name = format!("oci-archive:{}", path.display());
    let bad = |reason: String| StoreError::BadSource {
        source_name: source_name.clone(),
        reason,
    };
    let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut index = None;
    let mut saw_layout = false;
    let reader = BufReader::with_capacity(1 << 20, file);
    for_each_entry(reader, limits, &source_name, |entry| {
        let raw = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .into_owned();
        let name =
            clean(&raw).ok_or_else(|| bad(format!("entry {:?} escapes the archive", raw)))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            if name.is_empty() || name == "blobs" || name == "blobs/sha256" {
                return Ok(());
            }
            return Err(bad(format!(
                "unexpected directory {name:?} in an OCI archive"
            )));
        }
        if !kind.is_file() {
            return Err(bad(format!("entry {name:?} is not a regular file")));
        }
        match name.as_str() {
            "oci-layout" => {
                check_oci_layout(&read_small(entry, &source_name, &name)?, &source_name)?;
                saw_layout = true;
            }
            "index.json" => index = Some(read_small(entry, &source_name, &name)?),
            _ => {
                let digest = name
                    .strip_prefix("blobs/sha256/")
                    .and_then(|hex| Digest::from_hex(hex).ok())
                    .ok_or_else(|| bad(format!("unexpected entry {name:?} in an OCI archive")))?;
                ingest_entry(store, entry, Some(digest), &source_name, &name)?;
            }
        }
        Ok(())
    })?;
    if !saw_layout {
        return Err(bad(
            "no oci-layout file: not an OCI archive, or truncated".into()
        ));
    }
    let index =
        index.ok_or_else(|| bad("no index.json: not an OCI archive, or truncated".into()))?;
    let selected = select(parse_index(&index, &source_name)?, reference, &source_name)?;
    let mut src = AlreadyIngested { source_name };
    import_entries(store, &mut src, selected)
}

pub(crate) fn export(
    store: &Store,
    digest: &Digest,
    path: &Path,
    reference: Option<&str>,
) -> Result<()> {
    let all = closure(store, digest)?;
    let top = all
        .last()
        .ok_or_else(|| StoreError::UnknownImage(digest.to_string()))?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": crate::image::OCI_INDEX,
        "manifests": [top_descriptor(top, reference)],
    });
    let index = serde_json::to_vec_pretty(&index).map_err(|source| StoreError::Json {
        what: "rendering index.json".into(),
        source,
    })?;
    write_tar_atomic(path, |b| {
        append_dir(b, "blobs/")?;
        append_dir(b, "blobs/sha256/")?;
        append_bytes(b, "oci-layout", OCI_LAYOUT.as_bytes())?;
        for blob in &all {
            let mut f = store.open_blob(&blob.digest)?;
            let name = format!("blobs/sha256/{}", blob.digest.hex());
            append_reader(b, &name, blob.size, &mut f)?;
        }
        append_bytes(b, "index.json", &index)
    })
}

pub(crate) type TarOut = tar::Builder<BufWriter<File>>;

/// Write a tar to a temp file beside `path`, fsync, and rename it into place,
/// so `path` holds a whole archive or whatever it held before.
pub(crate) fn write_tar_atomic(
    path: &Path,
    fill: impl FnOnce(&mut TarOut) -> Result<()>,
) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".cairn-export-")
        .tempfile_in(&parent)
        .map_err(StoreError::io("create temp file in", &parent))?;
    let file = tmp
        .reopen()
        .map_err(StoreError::io("open", tmp.path().to_path_buf()))?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    fill(&mut builder)?;
    let tmp_path = tmp.path().to_path_buf();
    let mut w = builder
        .into_inner()
        .map_err(StoreError::io("write", &tmp_path))?;
    w.flush().map_err(StoreError::io("write", &tmp_path))?;
    let file = w
        .into_inner()
        .map_err(|e| StoreError::io("write", &tmp_path)(e.into_error()))?;
    file.sync_all()
        .map_err(StoreError::io("fsync", &tmp_path))?;
    tmp.persist(path)
        .map_err(|e| StoreError::io("rename into", path)(e.error))?;
    Ok(())
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

pub(crate) fn append_dir(b: &mut TarOut, name: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    b.append_data(&mut h, name, std::io::empty())
        .map_err(StoreError::io("write archive entry", name))
}

pub(crate) fn append_bytes(b: &mut TarOut, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
    b.append_data(&mut h, name, bytes)
        .map_err(StoreError::io("write archive entry", name))
}

pub(crate) fn append_reader(b: &mut TarOut, name: &str, size: u64, r: &mut File) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, size, 0o644);
    b.append_data(&mut h, name, r)
        .map_err(StoreError::io("write archive entry", name))
}
