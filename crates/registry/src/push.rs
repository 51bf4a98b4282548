//! Push: blobs first (skip what the registry has, mount what another of its
//! repositories has, upload the rest in parallel), then the manifest by
//! digest, and the tag last. A tag therefore never names a manifest whose
//! blobs are not all there; the registry also refuses such a manifest.

use crate::blob_transfer::upload_blob;
use crate::error::{RegistryError, Result};
use crate::pull::oci_reference;
use crate::retry::from_oci;
use crate::session::Session;
use crate::PushReport;
use cairn_store::image::{BlobRef, ManifestKind};
use cairn_store::{Digest, ImageRef, Store};
use futures_util::{StreamExt, TryStreamExt};
use oci_client::Reference;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Default)]
struct Counters<'p> {
    uploaded: AtomicUsize,
    bytes: AtomicU64,
    mounted: AtomicUsize,
    present: AtomicUsize,
    /// Told of each blob as it starts (0 of size), of the bytes of each
    /// upload as they go, and of each blob as it is done.
    progress: Option<&'p dyn crate::PullProgress>,
}

pub(crate) enum BlobOutcome {
    Present,
    Mounted,
    Uploaded,
}

pub(crate) async fn push(
    sess: &Session,
    store: &Store,
    manifest: &Digest,
    dest: &ImageRef,
    max_parallel: usize,
    monolithic_max: u64,
    progress: Option<&dyn crate::PullProgress>,
) -> Result<PushReport> {
    let counters = Counters {
        progress,
        ..Counters::default()
    };
    let base = oci_reference(dest);
    push_manifest_tree(
        sess,
        store,
        manifest,
        &base,
        &counters,
        max_parallel,
        monolithic_max,
    )
    .await?;
    if let Some(tag) = dest.tag() {
        let (bytes, parsed) = store.manifest(manifest)?;
        put_manifest(sess, &base.clone_with_tag(tag), &bytes, &parsed.media_type).await?;
    }
    Ok(PushReport {
        destination: dest.to_string(),
        manifest: *manifest,
        blobs_uploaded: counters.uploaded.load(Ordering::Relaxed),
        bytes_uploaded: counters.bytes.load(Ordering::Relaxed),
        blobs_mounted: counters.mounted.load(Ordering::Relaxed),
        blobs_present: counters.present.load(Ordering::Relaxed),
        retries: sess.retries(),
    })
}

trait CloneWithTag {
    fn clone_with_tag(&self, tag: &str) -> Reference;
}
impl CloneWithTag for Reference {
    fn clone_with_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.registry().to_string(),
            self.repository().to_string(),
            tag.to_string(),
        )
    }
}

/// Push one manifest by digest, after everything it names.
#[allow(clippy::too_many_arguments)]
fn push_manifest_tree<'a>(
    sess: &'a Session,
    store: &'a Store,
    manifest: &'a Digest,
    base: &'a Reference,
    counters: &'a Counters<'a>,
    max_parallel: usize,
    monolithic_max: u64,
) -> futures_util::future::BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        let by_digest = Reference::with_digest(
            base.registry().to_string(),
            base.repository().to_string(),
            manifest.to_string(),
        );
        // A manifest the registry has implies all its blobs: it checked them
        // when the manifest was put. One HEAD then replaces one per blob.
        let (bytes, parsed) = store.manifest(manifest)?;
        if manifest_exists(sess, &by_digest).await? {
            let n = parsed.children.len() + parsed.config.is_some() as usize;
            counters.present.fetch_add(n, Ordering::Relaxed);
            return Ok(());
        }
        match parsed.kind {
            ManifestKind::Index => {
                for child in &parsed.children {
                    push_manifest_tree(
                        sess,
                        store,
                        &child.digest,
                        base,
                        counters,
                        max_parallel,
                        monolithic_max,
                    )
                    .await?;
                }
            }
            ManifestKind::Image => {
                let blobs: Vec<BlobRef> = parsed
                    .config
                    .iter()
                    .chain(&parsed.children)
                    .cloned()
                    .collect();
                // Largest first: the long transfers start at once and the
                // small ones fill in around them.
                let mut order = blobs.clone();
                order.sort_by_key(|b| std::cmp::Reverse(b.size));
                order.dedup_by(|a, b| a.digest == b.digest);
                futures_util::stream::iter(order)
                    .map(|blob| async move {
                        if let Some(p) = counters.progress {
                            p.transferred(&blob.digest, 0, blob.size);
                        }
                        let outcome =
                            push_blob(sess, store, base, &blob, monolithic_max, counters.progress)
                                .await?;
                        if let Some(p) = counters.progress {
                            p.transferred(&blob.digest, blob.size, blob.size);
                        }
                        match outcome {
                            BlobOutcome::Present => {
                                counters.present.fetch_add(1, Ordering::Relaxed)
                            }
                            BlobOutcome::Mounted => {
                                counters.mounted.fetch_add(1, Ordering::Relaxed)
                            }
                            BlobOutcome::Uploaded => {
                                counters.bytes.fetch_add(blob.size, Ordering::Relaxed);
                                counters.uploaded.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        Ok::<_, RegistryError>(())
                    })
                    .buffer_unordered(max_parallel.max(1))
                    .try_collect::<Vec<()>>()
                    .await?;
                let digests: Vec<Digest> = blobs.iter().map(|b| b.digest).collect();
                store.note_remote_blobs(&sess.registry, base.repository(), &digests)?;
            }
        }
        put_manifest(sess, &by_digest, &bytes, &parsed.media_type).await
    })
}

pub(crate) async fn manifest_exists(sess: &Session, oref: &Reference) -> Result<bool> {
    Ok(manifest_digest(sess, oref).await?.is_some())
}

/// One HEAD of a manifest (by digest or tag): the digest it names now, or
/// None when there is none.
pub(crate) async fn manifest_digest(sess: &Session, oref: &Reference) -> Result<Option<String>> {
    let target = sess.target(
        oref.repository(),
        format!("manifest {}", oref.digest().or(oref.tag()).unwrap_or("?")),
    );
    let res = sess
        .retrier
        .run(&target, |_| async {
            sess.client
                .fetch_manifest_digest(oref, &sess.auth)
                .await
                .map_err(|e| from_oci(e, &target, &sess.auth_hint))
        })
        .await;
    match res {
        Ok(d) => Ok(Some(d)),
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) async fn put_manifest(
    sess: &Session,
    oref: &Reference,
    bytes: &[u8],
    media_type: &str,
) -> Result<()> {
    let what = format!("manifest {}", oref.digest().or(oref.tag()).unwrap_or("?"));
    let target = sess.target(oref.repository(), what);
    let content_type: http::HeaderValue =
        media_type.parse().map_err(|_| RegistryError::BadManifest {
            reference: oref.whole(),
            reason: format!("media type {media_type:?} is not a valid header value"),
        })?;
    sess.retrier
        .run(&target, |_| {
            let content_type = &content_type;
            let target = &target;
            async move {
                sess.client
                    .push_manifest_raw(oref, bytes.to_vec(), content_type.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| from_oci(e, target, &sess.auth_hint))
            }
        })
        .await
}

pub(crate) async fn push_blob(
    sess: &Session,
    store: &Store,
    base: &Reference,
    blob: &BlobRef,
    monolithic_max: u64,
    progress: Option<&dyn crate::PullProgress>,
) -> Result<BlobOutcome> {
    let target = sess.target(base.repository(), format!("blob {}", blob.digest));
    let digest = blob.digest.to_string();
    let exists = sess
        .retrier
        .run(&target, |_| async {
            sess.client
                .blob_exists(base, &digest)
                .await
                .map_err(|e| from_oci(e, &target, &sess.auth_hint))
        })
        .await?;
    if exists {
        return Ok(BlobOutcome::Present);
    }
    for source in store.remote_blob_sources(&sess.registry, &blob.digest, base.repository())? {
        let from =
            Reference::with_tag(base.registry().to_string(), source.clone(), "latest".into());
        match sess.client.mount_blob(base, &from, &digest).await {
            Ok(()) => return Ok(BlobOutcome::Mounted),
            Err(e) => {
                // A refused mount is answered with a fresh upload session
                // (202), which oci-client reports as an error: not fatal.
                tracing::debug!("mount of {digest} from {source} refused: {e}");
                store.forget_remote_blob(&sess.registry, &source, &blob.digest)?;
            }
        }
    }
    upload_blob(sess, store, base, blob, monolithic_max, progress).await?;
    Ok(BlobOutcome::Uploaded)
}
