//! Moving one blob between the store and a registry, streamed.
//!
//! Hashing and disk I/O happen on a blocking thread fed through a bounded
//! channel, so the async side only moves bytes and a slow disk slows the
//! network read instead of filling memory.

use crate::error::{RegistryError, Result};
use crate::retry::{from_oci, verdict, Verdict};
use crate::session::Session;
use crate::LayerFeed;
use bytes::Bytes;
use cairn_store::image::BlobRef;
use cairn_store::{BlobInfo, BlobWriter, Store};
use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use oci_client::Reference;
use std::io::{Read, Write};
use tokio::sync::{mpsc, oneshot, watch};

/// Chunks in flight between network and disk, per blob.
const CHANNEL_DEPTH: usize = 64;
/// Read size for monolithic uploads.
const UPLOAD_READ: usize = 1 << 20;
/// `oci-client` sends each stream item of a chunked upload as one PATCH of
/// at most 4 MiB; reading 4 MiB at a time makes every PATCH that size.
const CHUNKED_READ: usize = 4 << 20;

enum Feed {
    Chunk(Bytes),
    /// The registry ignored our Range request: start the blob over.
    Restart(Box<BlobWriter>),
    /// Everything arrived: verify and name it.
    Done,
}

fn descriptor(blob: &BlobRef) -> OciDescriptor {
    OciDescriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.to_string(),
        size: blob.size as i64,
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

/// Download `blob` into the store. A connection that breaks mid-blob is
/// resumed from the last byte received (HTTP Range); the blob is named only
/// after its digest and size check out, and a failed one leaves nothing.
/// `feed`, if given, gets every byte as it arrives (an extractor's pipe);
/// the flag returned says it got the whole blob, in order, exactly once
/// (false when the download had to start over: its bytes are spoiled).
pub(crate) async fn download_blob(
    sess: &Session,
    store: &Store,
    oref: &Reference,
    blob: &BlobRef,
    mut feed: Option<LayerFeed>,
    progress: Option<&dyn crate::PullProgress>,
) -> Result<(BlobInfo, bool)> {
    let _span = cairn_layer::timing::span("registry.download_blob");
    let target = sess.target(oref.repository(), format!("blob {}", blob.digest));
    let mut reported: u64 = 0;
    let expected = (blob.digest, blob.size);
    let mut attempt: u32 = 0;
    'whole: loop {
        attempt += 1;
        // Only a first attempt can feed: a second one restarts the bytes.
        let tee = feed.take();
        let teed = tee.is_some();
        // Fed to an extractor, the blob is not read back soon: it goes
        // around the page cache. Else the extraction reads it next.
        let writer = match teed {
            true => store.blob_writer()?,
            false => store.blob_writer_cached()?,
        };
        let (tx, rx) = mpsc::channel::<Feed>(CHANNEL_DEPTH);
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(write_feed(writer, tee, rx, expected));
        });
        let mut offset: u64 = 0;
        let mut stalls: u32 = 0;
        let failure = loop {
            let res = sess
                .client
                .pull_blob_stream_partial(oref, &descriptor(blob), offset, None)
                .await;
            let stream = match res {
                Ok(BlobResponse::Partial(s)) => s,
                Ok(BlobResponse::Full(s)) => {
                    if offset > 0 {
                        offset = 0;
                        reported = 0;
                        let fresh = store.blob_writer_cached()?;
                        if tx.send(Feed::Restart(Box::new(fresh))).await.is_err() {
                            break None;
                        }
                    }
                    s
                }
                Err(e) => {
                    let err = from_oci(e, &target, &sess.auth_hint);
                    if verdict(&err) == Verdict::GiveUp
                        || stalls + 1 >= sess.retrier.policy.max_attempts
                    {
                        break Some(err);
                    }
                    stalls += 1;
                    sess.retrier.count_retry();
                    tokio::time::sleep(sess.retrier.policy.backoff(stalls)).await;
                    continue;
                }
            };
            let before = offset;
            let mut stream = stream.stream;
            let mut broke = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => {
                        offset += b.len() as u64;
                        if let Some(p) = progress {
                            if offset >= reported + (1 << 20) || offset == blob.size {
                                reported = offset;
                                p.transferred(&blob.digest, offset, blob.size);
                            }
                        }
                        if offset > blob.size {
                            broke = Some(RegistryError::DigestMismatch {
                                target: target.clone(),
                                expected: format!("{} ({} bytes)", blob.digest, blob.size),
                                actual: format!("more than {} bytes", blob.size),
                            });
                            break;
                        }
                        if tx.send(Feed::Chunk(b)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        broke = Some(RegistryError::Transport {
                            target: target.clone(),
                            message: format!(
                                "connection broke after {offset} of {} bytes: {e}",
                                blob.size
                            ),
                        });
                        break;
                    }
                }
            }
            if offset == blob.size {
                let _ = tx.send(Feed::Done).await;
                break None;
            }
            let err = broke.unwrap_or_else(|| RegistryError::Transport {
                target: target.clone(),
                message: format!("the response ended after {offset} of {} bytes", blob.size),
            });
            if matches!(err, RegistryError::DigestMismatch { .. }) {
                break Some(err);
            }
            // Progress resets the count: a long blob over a flaky link may
            // need many resumptions, but each must move forward.
            if offset > before {
                stalls = 0;
            }
            stalls += 1;
            if stalls >= sess.retrier.policy.max_attempts {
                break Some(RegistryError::GaveUp {
                    target: target.clone(),
                    attempts: stalls,
                    last: Box::new(err),
                });
            }
            tracing::warn!("{err}; resuming");
            sess.retrier.count_retry();
            tokio::time::sleep(sess.retrier.policy.backoff(stalls)).await;
        };
        drop(tx);
        let written = done_rx
            .await
            .unwrap_or_else(|_| Err(RegistryError::Other("the blob writer thread died".into())));
        match (failure, written) {
            (None, Ok((info, whole))) => return Ok((info, teed && whole)),
            (Some(e), _) => return Err(e),
            (
                None,
                Err(e @ RegistryError::Store(cairn_store::StoreError::DigestMismatch { .. })),
            ) => {
                // Every byte arrived but they are not the right bytes: the
                // store removed them; fetch the whole blob again.
                if attempt >= sess.retrier.policy.max_attempts {
                    return Err(RegistryError::GaveUp {
                        target,
                        attempts: attempt,
                        last: Box::new(e),
                    });
                }
                tracing::warn!("{target}: {e}; fetching it again");
                sess.retrier.count_retry();
                continue 'whole;
            }
            (None, Err(e)) => return Err(e),
        }
    }
}

/// The blocking half of a download: write what arrives (to the blob and to
/// `tee`), verify at the end. True with the blob when `tee` got all of it.
fn write_feed(
    mut writer: BlobWriter,
    mut tee: Option<LayerFeed>,
    mut rx: mpsc::Receiver<Feed>,
    expected: (cairn_store::Digest, u64),
) -> Result<(BlobInfo, bool)> {
    let mut whole = true;
    while let Some(feed) = rx.blocking_recv() {
        match feed {
            Feed::Chunk(b) => {
                if let Some(t) = tee.as_mut() {
                    if t.write_all(&b).is_err() {
                        // The extractor stopped (its end says why); the
                        // blob still completes.
                        tee = None;
                    }
                }
                writer.write_all(&b).map_err(RegistryError::io(format!(
                    "write {}",
                    writer.tmp_path().display()
                )))?
            }
            Feed::Restart(fresh) => {
                writer = *fresh;
                tee = None;
                whole = false;
            }
            Feed::Done => {
                drop(tee); // the extractor sees the end while we verify
                return Ok((writer.commit(Some(expected))?, whole));
            }
        }
    }
    Err(RegistryError::Other("download abandoned".into()))
}

/// Upload one blob from the store (the caller has checked the registry
/// lacks it). Small blobs go in one PUT, large ones as chunked PATCHes.
/// Each attempt streams the file again from the start: `oci-client` cannot
/// resume an upload session. `progress` hears the bytes the HTTP client has
/// taken, while the upload runs.
pub(crate) async fn upload_blob(
    sess: &Session,
    store: &Store,
    oref: &Reference,
    blob: &BlobRef,
    monolithic_max: u64,
    progress: Option<&dyn crate::PullProgress>,
) -> Result<()> {
    let _span = cairn_layer::timing::span("registry.upload_blob");
    let target = sess.target(oref.repository(), format!("upload of blob {}", blob.digest));
    let digest = blob.digest.to_string();
    let report = |sent: u64| {
        if let Some(p) = progress {
            p.transferred(&blob.digest, sent, blob.size);
        }
    };
    sess.retrier
        .run(&target, |_| async {
            let file = store.open_blob(&blob.digest)?;
            report(0);
            let (sent_tx, sent_rx) = watch::channel(0u64);
            let res = if blob.size <= monolithic_max {
                let stream = file_stream(file, UPLOAD_READ, sent_tx);
                let push =
                    sess.mono()
                        .await?
                        .push_blob_stream(oref, stream, &digest, Some(blob.size));
                reporting_sent(push, sent_rx, &report).await
            } else {
                let stream = file_stream(file, CHUNKED_READ, sent_tx);
                let push = sess
                    .client
                    .push_blob_stream(oref, stream, &digest, Some(blob.size));
                reporting_sent(push, sent_rx, &report).await
            };
            res.map(|_| ())
                .map_err(|e| from_oci(e, &target, &sess.auth_hint))
        })
        .await
}

/// Run `upload`, passing on each new count of bytes sent as it happens.
/// (The stream that counts must be `'static`, so it cannot call `report`
/// itself; a watch channel carries the latest count across.)
async fn reporting_sent<F: std::future::Future>(
    upload: F,
    mut sent: watch::Receiver<u64>,
    report: &impl Fn(u64),
) -> F::Output {
    tokio::pin!(upload);
    loop {
        tokio::select! {
            out = &mut upload => return out,
            changed = sent.changed() => match changed {
                Ok(()) => report(*sent.borrow_and_update()),
                // The stream is gone: nothing more to count.
                Err(_) => return upload.await,
            },
        }
    }
}

/// A file as a stream of chunks, read on its own thread. `sent` counts the
/// bytes of the chunks the consumer has finished with: a chunk counts when
/// the next one is asked for (the PATCH carrying it is done, or the socket
/// took it), and the last one when the end is asked for.
fn file_stream(
    mut file: std::fs::File,
    chunk: usize,
    sent: watch::Sender<u64>,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; chunk];
        let mut filled = 0;
        let res = loop {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break Ok(filled);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match res {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    futures_util::stream::unfold((rx, sent, 0), |(mut rx, sent, taken)| async move {
        if taken > 0 {
            sent.send_modify(|n| *n += taken as u64);
        }
        let item = rx.recv().await?;
        let len = item.as_ref().map_or(0, Bytes::len);
        Some((
            item.map_err(oci_client::errors::OciDistributionError::from),
            (rx, sent, len),
        ))
    })
}
