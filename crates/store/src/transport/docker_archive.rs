//! `docker-archive:FILE[:NAME]`: the format of `docker save` / `docker load`.
//!
//! Import accepts both layouts Docker has written: the classic one
//! (`manifest.json`, `<config-hex>.json`, `<id>/layer.tar`, `repositories`)
//! and the Docker 25+ one (`manifest.json` naming `blobs/sha256/<hex>`).
//! The archive is read in one pass: every blob-like entry streams into the
//! store as it comes (the entry order is not fixed), and the images are
//! assembled from `manifest.json` at the end. A docker archive has no
//! manifest, so import writes one (Docker schema 2, or OCI if a layer is
//! zstd): the config digest and layer digests match the source, the manifest
//! digest is new by construction.
//!
//! Export writes the classic layout with each layer blob as stored (Docker
//! and skopeo accept compressed `layer.tar` files), `<id>` being the layer
//! blob's hex, plus `repositories` when the image has a name.

use super::oci_archive::{append_bytes, append_dir, append_reader, write_tar_atomic};
use super::tar_entry::{clean, for_each_entry, ingest_entry, read_small};
use crate::blob::BlobInfo;
use crate::error::{Result, StoreError};
use crate::image::{ManifestKind, DOCKER_CONFIG, DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST};
use crate::reference::ImageRef;
use crate::{Digest, Store};
use cairn_layer::ExtractLimits;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub(crate) fn import(
    store: &Store,
    path: &Path,
    reference: Option<&str>,
    limits: &ExtractLimits,
) -> Result<Vec<(Digest, Vec<ImageRef>)>> {
    let source_name = format!("docker-archive:{}", path.display());
    let bad = |reason: String| StoreError::BadSource {
        source_name: source_name.clone(),
        reason,
    };
    let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut manifest_json = None;
    // entry name -> blob; symlinked layer.tar files -> their targets.
    let mut blobs: HashMap<String, BlobInfo> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let reader = BufReader::with_capacity(1 << 20, file);
    for_each_entry(reader, limits, &source_name, |entry| {
        let raw = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .into_owned();
        let name = clean(&raw).ok_or_else(|| bad(format!("entry {raw:?} escapes the archive")))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            return Ok(());
        }
        let parts: Vec<&str> = name.split('/').collect();
        if kind.is_symlink() {
            // Classic docker save links a repeated layer to its first copy.
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.into_owned())
                .ok_or_else(|| bad(format!("symlink {name:?} has no target")))?;
            let base = Path::new(parts[0]);
            let resolved = clean(&base.join(&target))
                .ok_or_else(|| bad(format!("symlink {name:?} points outside the archive")))?;
            if parts.len() != 2 || parts[1] != "layer.tar" {
                return Err(bad(format!("unexpected symlink {name:?}")));
            }
            links.insert(name, resolved);
            return Ok(());
        }
        if !kind.is_file() {
            return Err(bad(format!("entry {name:?} is not a regular file")));
        }
        match parts.as_slice() {
            ["manifest.json"] => manifest_json = Some(read_small(entry, &source_name, &name)?),
            ["repositories"] | ["oci-layout"] | ["index.json"] | [_, "json"] | [_, "VERSION"] => {}
            ["blobs", "sha256", hex] => {
                let d =
                    Digest::from_hex(hex).map_err(|_| bad(format!("bad blob name {name:?}")))?;
                let info = ingest_entry(store, entry, Some(d), &source_name, &name)?;
                blobs.insert(name, info);
            }
            [file] if file.ends_with(".json") => {
                let hex = &file[..file.len() - 5];
                let d =
                    Digest::from_hex(hex).map_err(|_| bad(format!("unexpected entry {name:?}")))?;
                let info = ingest_entry(store, entry, Some(d), &source_name, &name)?;
                blobs.insert(name, info);
            }
            [_, "layer.tar"] => {
                let info = ingest_entry(store, entry, None, &source_name, &name)?;
                blobs.insert(name, info);
            }
            _ => {
                return Err(bad(format!(
                    "unexpected entry {name:?} in a docker archive"
                )))
            }
        }
        Ok(())
    })?;
    let manifest_json = manifest_json
        .ok_or_else(|| bad("no manifest.json: not a docker archive, or truncated".into()))?;
    let images: Vec<ArchiveManifest> = serde_json::from_slice(&manifest_json).map_err(|e| {
        bad(format!(
            "manifest.json is not a docker archive manifest: {e}"
        ))
    })?;
    if images.is_empty() {
        return Err(bad("manifest.json lists no images".into()));
    }
    let find = |p: &str| -> Result<BlobInfo> {
        let p = clean(Path::new(p))
            .ok_or_else(|| bad(format!("manifest.json names {p:?}, outside the archive")))?;
        let target = links.get(&p).cloned().unwrap_or(p.clone());
        blobs.get(&target).copied().ok_or_else(|| {
            bad(format!(
                "manifest.json names {p:?}, which is not in the archive (truncated?)"
            ))
        })
    };
    let mut out = Vec::new();
    for image in &images {
        let config = find(&image.config)?;
        let layers: Vec<BlobInfo> = image
            .layers
            .iter()
            .map(|l| find(l))
            .collect::<Result<_>>()?;
        let manifest = synthesize_manifest(store, &config, &layers)?;
        let digest = store.record_manifest(&manifest, None)?.digest;
        let mut names = Vec::new();
        for t in image.repo_tags.iter().flatten() {
            names.push(
                ImageRef::parse(t).map_err(|_| bad(format!("RepoTags has a bad name {t:?}")))?,
            );
        }
        if let Some(r) = reference {
            // docker-archive:FILE:NAME selects the image carrying NAME.
            let want = ImageRef::parse(r)?;
            if !names.contains(&want) {
                continue;
            }
            names = vec![want];
        }
        out.push((digest, names));
    }
    if out.is_empty() {
        return Err(bad(format!(
            "no image is named {:?}",
            reference.unwrap_or("")
        )));
    }
    Ok(out)
}

/// The media type a layer blob has, from its first bytes.
fn layer_media_type(store: &Store, blob: &BlobInfo) -> Result<(&'static str, bool)> {
    let mut magic = [0u8; 4];
    let mut f = store.open_blob(&blob.digest)?;
    let n = f
        .read(&mut magic)
        .map_err(StoreError::io("read", store.blob_path(&blob.digest)))?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => ("application/vnd.docker.image.rootfs.diff.tar.gzip", false),
        [0x28, 0xb5, 0x2f, 0xfd] => ("application/vnd.oci.image.layer.v1.tar+zstd", true),
        _ => ("application/vnd.docker.image.rootfs.diff.tar", false),
    })
}

fn synthesize_manifest(store: &Store, config: &BlobInfo, layers: &[BlobInfo]) -> Result<Vec<u8>> {
    let mut descs = Vec::new();
    let mut any_zstd = false;
    for l in layers {
        let (mt, zstd) = layer_media_type(store, l)?;
        any_zstd |= zstd;
        descs.push((mt, l));
    }
    let (manifest_type, config_type) = if any_zstd {
        (OCI_MANIFEST, OCI_CONFIG)
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    };
    let layer_json: Vec<_> = descs
        .iter()
        .map(|(mt, l)| {
            let mt = if any_zstd {
                match *mt {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                        "application/vnd.oci.image.layer.v1.tar+gzip"
                    }
                    "application/vnd.docker.image.rootfs.diff.tar" => {
                        "application/vnd.oci.image.layer.v1.tar"
                    }
                    other => other,
                }
            } else {
                mt
            };
            json!({ "mediaType": mt, "size": l.size, "digest": l.digest.to_string() })
        })
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": { "mediaType": config_type, "size": config.size, "digest": config.digest.to_string() },
        "layers": layer_json,
    });
    serde_json::to_vec_pretty(&m).map_err(|source| StoreError::Json {
        what: "rendering a manifest".into(),
        source,
    })
}

pub(crate) fn export(
    store: &Store,
    digest: &Digest,
    path: &Path,
    name: Option<&ImageRef>,
) -> Result<()> {
    let (_, parsed) = store.manifest(digest)?;
    let parsed = match parsed.kind {
        ManifestKind::Image => parsed,
        ManifestKind::Index => {
            // A docker archive holds single-platform images: take the one for this machine.
            let child = pick_platform_child(store, digest)?;
            store.manifest(&child)?.1
        }
    };
    let config = parsed
        .config
        .clone()
        .ok_or_else(|| StoreError::BadManifest {
            digest: *digest,
            reason: "no config".into(),
        })?;
    let config_name = format!("{}.json", config.digest.hex());
    let layer_names: Vec<String> = parsed
        .children
        .iter()
        .map(|l| format!("{}/layer.tar", l.digest.hex()))
        .collect();
    let repo_tags: Vec<String> = name.map(|n| n.familiar()).into_iter().collect();
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": repo_tags,
        "Layers": layer_names,
    }]);
    let manifest = serde_json::to_vec(&manifest).map_err(|source| StoreError::Json {
        what: "rendering manifest.json".into(),
        source,
    })?;
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    if let (Some(n), Some(last)) = (name, parsed.children.last()) {
        let familiar = n.familiar();
        let repo = familiar
            .rsplit_once(':')
            .map_or(familiar.as_str(), |(r, _)| r);
        repositories
            .entry(repo.to_string())
            .or_default()
            .insert(n.tag().unwrap_or("latest").to_string(), last.digest.hex());
    }
    write_tar_atomic(path, |b| {
        let mut f = store.open_blob(&config.digest)?;
        append_reader(b, &config_name, config.size, &mut f)?;
        let mut written = std::collections::HashSet::new();
        for l in &parsed.children {
            if !written.insert(l.digest) {
                continue;
            }
            append_dir(b, &format!("{}/", l.digest.hex()))?;
            append_bytes(b, &format!("{}/VERSION", l.digest.hex()), b"1.0")?;
            let mut f = store.open_blob(&l.digest)?;
            append_reader(b, &format!("{}/layer.tar", l.digest.hex()), l.size, &mut f)?;
        }
        append_bytes(b, "manifest.json", &manifest)?;
        if !repositories.is_empty() {
            let r = serde_json::to_vec(&repositories).map_err(|source| StoreError::Json {
                what: "rendering repositories".into(),
                source,
            })?;
            append_bytes(b, "repositories", &r)?;
        }
        Ok(())
    })
}

fn pick_platform_child(store: &Store, index: &Digest) -> Result<Digest> {
    let bytes = store.read_blob_bytes(index)?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: format!("parsing index {index}"),
            source,
        })?;
    let list = v
        .get("manifests")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let pick = list
        .iter()
        .find(|m| {
            m.pointer("/platform/os").and_then(|o| o.as_str()) == Some("linux")
                && m.pointer("/platform/architecture").and_then(|a| a.as_str()) == Some(arch)
        })
        .or(if list.len() == 1 { list.first() } else { None });
    pick.and_then(|m| m.get("digest"))
        .and_then(|d| d.as_str())
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| StoreError::BadManifest {
            digest: *index,
            reason: format!("has no linux/{arch} image for a docker archive"),
        })
}
