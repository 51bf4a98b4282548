//! Artifacts: OCI image manifests whose config is not an image config but
//! the artifact's own document (`artifactType`, OCI image-spec 1.1), such as
//! a build cache. Their layers are ordinary blobs, moved as an image's are:
//! HEAD before upload, cross-repository mount, digests verified on the way in.
//!
//! Pushing an artifact is incremental: when the tag already names the very
//! manifest, one HEAD is the whole push; otherwise only the blobs the
//! repository lacks are sent, then one manifest PUT.

use crate::error::{RegistryError, Result};
use crate::manifest_fetch::MAX_MANIFEST_SIZE;
use crate::pull::{fetch_manifest, oci_reference};
use crate::push::{push_blob, put_manifest, BlobOutcome};
use crate::session::Session;
use crate::{parse_ref, PushReport, Registry};
use cairn_store::image::BlobRef;
use cairn_store::{Digest, Store};
use futures_util::{StreamExt, TryStreamExt};
use oci_client::Reference;
use serde_json::{json, Value};
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An artifact to push: its type, its config document and its layers
/// (whose blobs must be in the store).
pub struct ArtifactSpec<'a> {
    /// The manifest's `artifactType`.
    pub artifact_type: &'a str,
    /// The config descriptor's media type.
    pub config_media_type: &'a str,
    pub config: &'a [u8],
    pub layers: &'a [BlobRef],
}

/// An artifact as fetched: its manifest digest, config document and layers.
#[derive(Clone, Debug)]
pub struct FetchedArtifact {
    /// The reference it was fetched by, normalised.
    pub reference: String,
    pub manifest: Digest,
    pub config: Vec<u8>,
    pub layers: Vec<BlobRef>,
}

/// The manifest of `spec`, given its config blob's digest. Same spec, same
/// bytes: the config descriptor, then the layers in the given order.
pub fn artifact_manifest(spec: &ArtifactSpec, config: &Digest) -> Vec<u8> {
    let layers: Vec<Value> = spec
        .layers
        .iter()
        .map(|l| json!({ "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size }))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": spec.artifact_type,
        "config": {
            "mediaType": spec.config_media_type,
            "digest": config.to_string(),
            "size": spec.config.len(),
        },
        "layers": layers,
    });
    // A Value of plain maps and arrays always serialises.
    serde_json::to_vec(&manifest).unwrap_or_default()
}

impl Registry {
    /// Push `spec` to `dest` (`REG/REPO[:TAG]`, tag `latest` by default).
    /// The config blob enters the store first (pushes read from the store).
    pub fn push_artifact(
        &self,
        store: &Store,
        dest: &str,
        spec: &ArtifactSpec,
    ) -> Result<PushReport> {
        let dest_ref = parse_ref(dest)?;
        let config = store.ingest_bytes(spec.config, None)?;
        let manifest = artifact_manifest(spec, &config.digest);
        let config_ref = BlobRef {
            digest: config.digest,
            media_type: spec.config_media_type.to_string(),
            size: spec.config.len() as u64,
        };
        self.block_on(async {
            let sess = Session::open(&self.opts, &self.clients, dest_ref.registry()).await?;
            let base = oci_reference(&dest_ref);
            let tag_ref = match base.digest() {
                Some(_) => base.clone(),
                None => Reference::with_tag(
                    base.registry().to_string(),
                    base.repository().to_string(),
                    base.tag().unwrap_or("latest").to_string(),
                ),
            };
            push_artifact_blobs_and_manifest(
                self,
                &sess,
                store,
                &tag_ref,
                &manifest,
                config_ref,
                spec.layers,
            )
            .await
            .map(|mut report| {
                report.destination = dest_ref.to_string();
                report
            })
        })
    }

    /// Fetch the artifact `reference` names when its type is
    /// `artifact_type`: the manifest (capped at [`MAX_MANIFEST_SIZE`]) and
    /// its config (the same cap, kept in the store), all within `deadline`.
    /// The layers are not fetched: see [`Registry::fetch_blobs`].
    pub fn fetch_artifact(
        &self,
        store: &Store,
        reference: &str,
        artifact_type: &str,
        deadline: Duration,
    ) -> Result<FetchedArtifact> {
        let image = parse_ref(reference)?;
        let work = async {
            let sess = Session::open(&self.opts, &self.clients, image.registry()).await?;
            let oref = oci_reference(&image);
            let (bytes, digest) = fetch_manifest(&sess, &oref, &Default::default()).await?;
            let (config, layers) = parse_artifact(&image.to_string(), &bytes, artifact_type)?;
            if config.size > MAX_MANIFEST_SIZE {
                return Err(RegistryError::TooLarge {
                    target: sess.target(oref.repository(), format!("config {}", config.digest)),
                    limit: MAX_MANIFEST_SIZE,
                });
            }
            if !store.has_blob(&config.digest) {
                crate::blob_transfer::download_blob(&sess, store, &oref, &config, None, None)
                    .await?;
            }
            Ok(FetchedArtifact {
                reference: image.to_string(),
                manifest: digest,
                config: store.read_blob_bytes(&config.digest)?,
                layers,
            })
        };
        self.block_on(async {
            tokio::time::timeout(deadline, work)
                .await
                .unwrap_or_else(|_| {
                    Err(RegistryError::Other(format!(
                        "{image}: no answer within {deadline:?}"
                    )))
                })
        })
    }

    /// Download those of `blobs` the store lacks from `reference`'s
    /// repository, in parallel, each verified; how many were downloaded.
    pub fn fetch_blobs(&self, store: &Store, reference: &str, blobs: &[BlobRef]) -> Result<usize> {
        let image = parse_ref(reference)?;
        let missing: Vec<BlobRef> = blobs
            .iter()
            .filter(|b| !store.has_blob(&b.digest))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        self.block_on(async {
            let sess = Session::open(&self.opts, &self.clients, image.registry()).await?;
            let oref = oci_reference(&image);
            let count = missing.len();
            futures_util::stream::iter(missing)
                .map(|blob| {
                    let (sess, oref) = (&sess, &oref);
                    async move {
                        crate::blob_transfer::download_blob(sess, store, oref, &blob, None, None)
                            .await
                    }
                })
                .buffer_unordered(self.opts.max_parallel.max(1))
                .try_collect::<Vec<_>>()
                .await?;
            let digests: Vec<Digest> = blobs.iter().map(|b| b.digest).collect();
            store.note_remote_blobs(image.registry(), image.repository(), &digests)?;
            Ok(count)
        })
    }
}

impl Registry {
    /// Download the layers (blob, diff id) the store lacks from
    /// `reference`'s repository, in parallel, each extracted by `sink` as
    /// it downloads (or from the store, when its blob is already here);
    /// how many blobs were downloaded.
    pub fn fetch_layers(
        &self,
        store: &Store,
        reference: &str,
        layers: &[(BlobRef, Digest)],
        sink: &dyn crate::LayerSink,
    ) -> Result<usize> {
        let image = parse_ref(reference)?;
        crate::unpack::with_sink(Some(sink), |unpack| {
            self.block_on(async {
                let sess = Session::open(&self.opts, &self.clients, image.registry()).await?;
                let oref = oci_reference(&image);
                let fetched = futures_util::stream::iter(layers.iter().cloned())
                    .map(|(blob, diff_id)| {
                        let (sess, oref) = (&sess, &oref);
                        async move {
                            let diff_id = Some(diff_id);
                            crate::unpack::fetch_blob(
                                sess, store, oref, &blob, diff_id, unpack, None,
                            )
                            .await
                        }
                    })
                    .buffer_unordered(self.opts.max_parallel.max(1))
                    .try_collect::<Vec<bool>>()
                    .await?;
                let digests: Vec<Digest> = layers.iter().map(|(b, _)| b.digest).collect();
                store.note_remote_blobs(image.registry(), image.repository(), &digests)?;
                Ok(fetched.into_iter().filter(|f| *f).count())
            })
        })
    }
}

/// One HEAD of the tag; if it names another manifest (or none), the blobs
/// the repository lacks, then the manifest PUT under the tag.
async fn push_artifact_blobs_and_manifest(
    registry: &Registry,
    sess: &Session,
    store: &Store,
    tag_ref: &Reference,
    manifest: &[u8],
    config: BlobRef,
    layers: &[BlobRef],
) -> Result<PushReport> {
    let digest = Digest::of(manifest);
    let mut blobs: Vec<BlobRef> = std::iter::once(config)
        .chain(layers.iter().cloned())
        .collect();
    blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    let mut report = PushReport {
        destination: String::new(),
        manifest: digest,
        blobs_uploaded: 0,
        bytes_uploaded: 0,
        blobs_mounted: 0,
        blobs_present: 0,
        retries: 0,
    };
    if crate::push::manifest_digest(sess, tag_ref)
        .await?
        .as_deref()
        == Some(digest.to_string().as_str())
    {
        report.blobs_present = blobs.len();
        return Ok(report);
    }
    let monolithic_max = registry.opts.monolithic_max;
    let outcomes = futures_util::stream::iter(blobs.clone())
        .map(|blob| async move {
            push_blob(sess, store, tag_ref, &blob, monolithic_max, None)
                .await
                .map(|o| (o, blob.size))
        })
        .buffer_unordered(registry.opts.max_parallel.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    for (outcome, size) in outcomes {
        match outcome {
            BlobOutcome::Present => report.blobs_present += 1,
            BlobOutcome::Mounted => report.blobs_mounted += 1,
            BlobOutcome::Uploaded => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += size;
            }
        }
    }
    let digests: Vec<Digest> = blobs.iter().map(|b| b.digest).collect();
    store.note_remote_blobs(&sess.registry, tag_ref.repository(), &digests)?;
    put_manifest(sess, tag_ref, manifest, OCI_MANIFEST).await?;
    report.retries = sess.retries();
    Ok(report)
}

/// The config and layer descriptors of an artifact manifest of type
/// `artifact_type` (its `artifactType`, else its config media type).
fn parse_artifact(
    reference: &str,
    bytes: &[u8],
    artifact_type: &str,
) -> Result<(BlobRef, Vec<BlobRef>)> {
    let bad = |reason: String| RegistryError::BadManifest {
        reference: reference.to_string(),
        reason,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let media_type = v["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
    if media_type != OCI_MANIFEST || v["schemaVersion"].as_u64() != Some(2) {
        return Err(bad(format!(
            "expected an OCI image manifest (schemaVersion 2), got {media_type:?}"
        )));
    }
    let declared = v["artifactType"]
        .as_str()
        .or_else(|| v["config"]["mediaType"].as_str())
        .unwrap_or("");
    if declared != artifact_type {
        return Err(bad(format!(
            "artifact type {declared:?}, expected {artifact_type:?}"
        )));
    }
    let descriptor = |d: &Value| -> Result<BlobRef> {
        let digest = d["digest"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("descriptor without a sha256 digest: {d}")))?;
        Ok(BlobRef {
            digest,
            media_type: d["mediaType"].as_str().unwrap_or_default().to_string(),
            size: d["size"]
                .as_u64()
                .ok_or_else(|| bad(format!("descriptor without a size: {d}")))?,
        })
    };
    let config = descriptor(&v["config"])?;
    let layers = v["layers"]
        .as_array()
        .map(|a| a.iter().map(descriptor).collect::<Result<Vec<_>>>())
        .transpose()?
        .unwrap_or_default();
    Ok((config, layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_types_are_checked() {
        let layer = BlobRef {
            digest: Digest::of(b"layer"),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 5,
        };
        let spec = ArtifactSpec {
            artifact_type: "application/x.test",
            config_media_type: "application/x.test.config",
            config: b"{}",
            layers: std::slice::from_ref(&layer),
        };
        let bytes = artifact_manifest(&spec, &Digest::of(b"{}"));
        assert_eq!(bytes, artifact_manifest(&spec, &Digest::of(b"{}")));
        let (config, layers) = parse_artifact("r", &bytes, "application/x.test").unwrap();
        assert_eq!((config.digest, config.size), (Digest::of(b"{}"), 2));
        assert_eq!(layers, vec![layer]);
        let err = parse_artifact("r", &bytes, "application/x.other").unwrap_err();
        assert!(err.to_string().contains("application/x.test"), "{err}");
        assert!(parse_artifact("r", b"<html>", "application/x.test").is_err());
    }
}
