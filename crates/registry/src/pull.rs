//! Pull: manifest (through an index to one platform) and config into
//! memory ([`resolve`], which needs no store, so a caller can do it while
//! its store opens), then the layers in parallel, each streamed into the
//! store and verified before it is named. The manifest is recorded and
//! tagged only when every blob is in, so an interrupted pull leaves
//! complete blobs (reused next time) and no image.

use crate::error::{RegistryError, Result};
use crate::manifest_fetch::PullToken;
use crate::session::{Platform, Session};
use crate::unpack::{fetch_blob, Unpack};
use crate::PullReport;
use cairn_store::image::{parse_manifest, BlobRef, ManifestKind, ParsedManifest};
use cairn_store::{Digest, ImageRef, Store};
use futures_util::{StreamExt, TryStreamExt};
use oci_client::Reference;
use std::sync::atomic::{AtomicU64, Ordering};

/// Media types we ask for, most preferred first.
pub(crate) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub(crate) fn oci_reference(r: &ImageRef) -> Reference {
    match (r.tag(), r.digest()) {
        (_, Some(d)) => Reference::with_digest(
            r.registry().to_string(),
            r.repository().to_string(),
            d.to_string(),
        ),
        (Some(t), None) => Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            t.to_string(),
        ),
        (None, None) => Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            "latest".into(),
        ),
    }
}

/// Fetch a manifest and check it is the one asked for when asked by digest.
pub(crate) async fn fetch_manifest(
    sess: &Session,
    oref: &Reference,
    token: &PullToken,
) -> Result<(Vec<u8>, Digest)> {
    let what = format!(
        "manifest {}",
        oref.digest().or(oref.tag()).unwrap_or("latest")
    );
    let target = sess.target(oref.repository(), what);
    let bytes = sess
        .retrier
        .run(&target, |_| {
            crate::manifest_fetch::get_manifest(sess, oref, token, MANIFEST_TYPES, &target)
        })
        .await?;
    let digest = Digest::of(&bytes);
    if let Some(want) = oref.digest() {
        if want != digest.to_string() {
            return Err(RegistryError::DigestMismatch {
                target,
                expected: want.to_string(),
                actual: digest.to_string(),
            });
        }
    }
    Ok((bytes, digest))
}

/// From an index, the child manifest for `platform`.
fn choose_platform(reference: &str, index: &[u8], platform: &Platform) -> Result<(Digest, String)> {
    let v: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| RegistryError::BadManifest {
            reference: reference.to_string(),
            reason: format!("index is not JSON: {e}"),
        })?;
    let entries = v["manifests"].as_array().cloned().unwrap_or_default();
    let mut seen = Vec::new();
    let mut fallback = None;
    for e in &entries {
        let p = &e["platform"];
        let (os, arch) = (
            p["os"].as_str().unwrap_or(""),
            p["architecture"].as_str().unwrap_or(""),
        );
        let variant = p["variant"].as_str();
        seen.push(match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
        if os != platform.os || arch != platform.architecture {
            continue;
        }
        let pick = || -> Result<(Digest, String)> {
            let digest = e["digest"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| RegistryError::BadManifest {
                    reference: reference.to_string(),
                    reason: format!("index entry for {os}/{arch} has no sha256 digest"),
                })?;
            let mt = e["mediaType"]
                .as_str()
                .unwrap_or(MANIFEST_TYPES[2])
                .to_string();
            Ok((digest, mt))
        };
        match (&platform.variant, variant) {
            (Some(want), Some(have)) if want == have => return pick(),
            (None, _) | (Some(_), None) if fallback.is_none() => fallback = Some(pick()?),
            _ => {}
        }
    }
    fallback.ok_or_else(|| RegistryError::NoPlatform {
        reference: reference.to_string(),
        platform: platform.to_string(),
        available: if seen.is_empty() {
            "nothing".into()
        } else {
            seen.join(", ")
        },
    })
}

/// What a pull knows before it touches the store's layers: the image
/// manifest (through an index to one platform) and its config, both in
/// memory, each checked against its digest, the manifest's size capped as
/// it is read and the config's size checked against the manifest's before
/// it is fetched.
pub(crate) struct Resolved {
    name: String,
    oref: Reference,
    manifest: Vec<u8>,
    digest: Digest,
    parsed: ParsedManifest,
    config: BlobRef,
    config_bytes: Vec<u8>,
    /// The config came from the registry (not from the store).
    config_fetched: bool,
}

/// Resolve `image` to its manifest and config. With a `store`, a config
/// the store already has is read from there instead of the registry;
/// without one (the store is still being opened), it is fetched.
pub(crate) async fn resolve(
    sess: &Session,
    store: Option<&Store>,
    image: &ImageRef,
    platform: &Platform,
) -> Result<Resolved> {
    let _span = cairn_layer::timing::span("registry.resolve");
    let name = image.to_string();
    let mut oref = oci_reference(image);
    // One token for the manifest, an index's child and the config: the
    // same repository, a few round trips apart.
    let token = PullToken::default();
    let (mut bytes, mut digest) = fetch_manifest(sess, &oref, &token).await?;
    let mut parsed = parse_manifest(&bytes, None).map_err(|e| RegistryError::BadManifest {
        reference: name.clone(),
        reason: e.to_string(),
    })?;
    if parsed.kind == ManifestKind::Index {
        let (child, _mt) = choose_platform(&name, &bytes, platform)?;
        oref = oref.clone_with_digest(child.to_string());
        (bytes, digest) = fetch_manifest(sess, &oref, &token).await?;
        parsed = parse_manifest(&bytes, None).map_err(|e| RegistryError::BadManifest {
            reference: name.clone(),
            reason: e.to_string(),
        })?;
        if parsed.kind != ManifestKind::Image {
            return Err(RegistryError::BadManifest {
                reference: name,
                reason: format!("the index entry {child} for {platform} is itself an index"),
            });
        }
    }
    let config = parsed
        .config
        .clone()
        .ok_or_else(|| RegistryError::BadManifest {
            reference: name.clone(),
            reason: "the manifest has no config".into(),
        })?;
    let target = sess.target(oref.repository(), format!("config {}", config.digest));
    // Held in memory: the manifests' cap.
    if config.size > crate::manifest_fetch::MAX_MANIFEST_SIZE {
        return Err(RegistryError::TooLarge {
            target,
            limit: crate::manifest_fetch::MAX_MANIFEST_SIZE,
        });
    }
    let stored = store
        .filter(|s| s.has_blob(&config.digest))
        .and_then(|s| s.read_blob_bytes(&config.digest).ok());
    let (config_bytes, config_fetched) = match stored {
        Some(b) => (b, false),
        None => (
            fetch_config(sess, &oref, &token, &config, &target).await?,
            true,
        ),
    };
    Ok(Resolved {
        name,
        oref,
        manifest: bytes,
        digest,
        parsed,
        config,
        config_bytes,
        config_fetched,
    })
}

/// The config blob into memory; named by its digest, so both its digest
/// and its size must match the manifest's.
async fn fetch_config(
    sess: &Session,
    oref: &Reference,
    token: &PullToken,
    config: &BlobRef,
    target: &crate::error::Target,
) -> Result<Vec<u8>> {
    let want = config.digest.to_string();
    let bytes = sess
        .retrier
        .run(target, |_| {
            crate::manifest_fetch::get_config(sess, oref, token, &want, target)
        })
        .await?;
    let actual = Digest::of(&bytes);
    if actual != config.digest || bytes.len() as u64 != config.size {
        return Err(RegistryError::DigestMismatch {
            target: target.clone(),
            expected: format!("{} ({} bytes)", config.digest, config.size),
            actual: format!("{actual} ({} bytes)", bytes.len()),
        });
    }
    Ok(bytes)
}

/// The rest of a pull once `resolved`: the config stored, the layers
/// downloaded (and extracted through `unpack`), then the manifest
/// recorded and tagged.
pub(crate) async fn pull_resolved(
    sess: &Session,
    store: &Store,
    image: &ImageRef,
    resolved: Resolved,
    max_parallel: usize,
    unpack: Option<&Unpack<'_>>,
    progress: Option<&dyn crate::PullProgress>,
) -> Result<PullReport> {
    let Resolved {
        name,
        oref,
        manifest: bytes,
        digest,
        parsed,
        config,
        config_bytes,
        config_fetched,
    } = resolved;
    let fetched = AtomicU64::new(0);
    let bytes_in = AtomicU64::new(0);
    // The config is in memory, verified: stored as it is (a store that
    // got it meanwhile keeps its own copy).
    if !store.has_blob(&config.digest) {
        store.ingest_bytes(&config_bytes, Some((config.digest, config.size)))?;
        if config_fetched {
            fetched.fetch_add(1, Ordering::Relaxed);
            bytes_in.fetch_add(config.size, Ordering::Relaxed);
        }
    }
    if let Some(p) = progress.filter(|_| config_fetched) {
        p.transferred(&config.digest, config.size, config.size);
    }
    // The config (no diff id) is not a layer: the sink never sees it.
    let fetch = |blob: BlobRef, diff_id: Option<Digest>| {
        let oref = &oref;
        let (fetched, bytes_in) = (&fetched, &bytes_in);
        async move {
            if fetch_blob(sess, store, oref, &blob, diff_id, unpack, progress).await? {
                fetched.fetch_add(1, Ordering::Relaxed);
                bytes_in.fetch_add(blob.size, Ordering::Relaxed);
            }
            Ok::<_, RegistryError>(())
        }
    };
    let diff_ids = diff_ids(&config_bytes, parsed.children.len());
    let layers = parsed.children.clone();
    futures_util::stream::iter(layers.into_iter().enumerate())
        .map(|(i, layer)| fetch(layer, diff_ids.get(i).copied()))
        .buffer_unordered(max_parallel.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    // The layer dirs' sync and the manifest's SQLite commits (each an
    // fsync) wait on the disk side by side.
    if let Some(u) = unpack {
        u.adopt_now();
    }

    let recorded = store.record_manifest(&bytes, None)?;
    debug_assert_eq!(recorded.digest, digest);
    if image.tag().is_some() && image.digest().is_none() {
        store.tag(image, &digest)?;
    }
    let mut all: Vec<Digest> = parsed.children.iter().map(|b| b.digest).collect();
    all.push(config.digest);
    store.note_remote_blobs(image.registry(), image.repository(), &all)?;
    Ok(PullReport {
        reference: name,
        manifest: digest,
        blobs_fetched: fetched.load(Ordering::Relaxed) as usize,
        blobs_present: parsed.children.len() + 1 - fetched.load(Ordering::Relaxed) as usize,
        bytes_fetched: bytes_in.load(Ordering::Relaxed),
        retries: sess.retries(),
    })
}

/// The config's diff ids, when it has one per layer; none otherwise: the
/// layers are then extracted later, on first use, instead of while the
/// pull downloads.
fn diff_ids(config: &[u8], layers: usize) -> Vec<Digest> {
    cairn_store::ImageConfig::from_slice(config)
        .ok()
        .and_then(|c| c.layer_diff_ids(layers).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":1,"platform":{"os":"linux","architecture":"amd64"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}}]}"#;

    #[test]
    fn picks_the_platform() {
        let (d, _) = choose_platform("x", INDEX.as_bytes(), &Platform::default()).unwrap();
        assert!(d.to_string().ends_with("2222"));
        let (d, _) =
            choose_platform("x", INDEX.as_bytes(), &"linux/arm64".parse().unwrap()).unwrap();
        assert!(d.to_string().ends_with("1111"));
        let (d, _) =
            choose_platform("x", INDEX.as_bytes(), &"linux/arm/v7".parse().unwrap()).unwrap();
        assert!(d.to_string().ends_with("3333"));
        let err =
            choose_platform("x", INDEX.as_bytes(), &"linux/s390x".parse().unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("linux/s390x") && msg.contains("linux/arm64/v8"),
            "{msg}"
        );
    }
}
