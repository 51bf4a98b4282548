//! Layers unpacked as they download.
//!
//! A pull (or a cache import) with a [`LayerSink`] asks it, per layer blob
//! it downloads, for a stream to extract from: the download then hands each
//! chunk to the blob file, the hash and the extractor at once, and when the
//! blob's digest and size have checked out the sink is told to adopt the
//! extracted dir (or, on any failure, to throw it away). A layer whose blob
//! is already in the store, or whose download had to start over (a server
//! that ignored a Range request, a digest mismatch and a second fetch), is
//! extracted from the stored blob afterwards instead.
//!
//! The sink's blocking work (joining extractions, adopting dirs) runs on
//! one thread of its own, fed through a channel, so the downloads never
//! wait on a disk sync.

use crate::blob_transfer::download_blob;
use crate::error::{RegistryError, Result};
use crate::session::Session;
use crate::{LayerSink, PullProgress, StreamTicket};
use cairn_store::image::BlobRef;
use cairn_store::{Digest, Store};
use oci_client::Reference;
use std::sync::mpsc::{sync_channel, SyncSender};

/// Work for the sink's thread.
enum Job {
    /// Extract the stored blob.
    Ready { blob: Digest, diff_id: Digest },
    /// A streamed extraction's download ended.
    End {
        blob: Digest,
        ticket: StreamTicket,
        verified: bool,
    },
}

/// A handle on the sink and its thread, for the download tasks.
pub(crate) struct Unpack<'a> {
    sink: &'a dyn LayerSink,
    jobs: SyncSender<Job>,
}

/// Run `work` with an [`Unpack`] for `sink` (none without a sink), then
/// wait for the sink's thread. The first extraction failure is an error
/// after `work`'s own.
pub(crate) fn with_sink<T>(
    sink: Option<&dyn LayerSink>,
    work: impl FnOnce(Option<&Unpack<'_>>) -> Result<T>,
) -> Result<T> {
    let Some(sink) = sink else {
        return work(None);
    };
    let (jobs, rx) = sync_channel::<Job>(64);
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let mut first_error = None;
            let mut kept = Vec::new();
            for job in rx {
                let (blob, res) = match job {
                    Job::Ready { blob, diff_id } => (blob, sink.layer_ready(&blob, &diff_id)),
                    Job::End {
                        blob,
                        ticket,
                        verified,
                    } => match sink.end_stream(ticket, verified) {
                        Ok(k) => {
                            kept.extend(k);
                            (blob, Ok(()))
                        }
                        Err(e) => (blob, Err(e)),
                    },
                };
                if let (None, Err(e)) = (&first_error, res) {
                    first_error = Some((blob.to_string(), e));
                }
            }
            // One sync for every streamed layer, at the end.
            let n = kept.len();
            if let (Err(e), None) = (sink.adopt(kept), &first_error) {
                first_error = Some((format!("({n} layers)"), e));
            }
            first_error
        });
        let unpack = Unpack { sink, jobs };
        let result = work(Some(&unpack));
        drop(unpack);
        let failed = worker.join().ok().flatten();
        // `work`'s error first: it is the cause of a missing layer.
        let value = result?;
        match failed {
            Some((blob, e)) => Err(RegistryError::Other(format!(
                "extracting layer {blob}: {e}"
            ))),
            None => Ok(value),
        }
    })
}

impl Unpack<'_> {
    fn send(&self, job: Job) {
        // The worker lives until `with_sink` drops us: sending cannot fail.
        let _ = self.jobs.send(job);
    }
}

/// Get one blob into the store; a layer (`diff_id` known) also into its
/// layer dir when `unpack` is given. True when the blob was downloaded.
pub(crate) async fn fetch_blob(
    sess: &Session,
    store: &Store,
    oref: &Reference,
    blob: &BlobRef,
    diff_id: Option<Digest>,
    unpack: Option<&Unpack<'_>>,
    progress: Option<&dyn PullProgress>,
) -> Result<bool> {
    let layer = unpack.zip(diff_id);
    if store.has_blob(&blob.digest) {
        if let Some((u, diff_id)) = layer {
            u.send(Job::Ready {
                blob: blob.digest,
                diff_id,
            });
        }
        return Ok(false);
    }
    let stream = match layer {
        Some((u, diff_id)) => u
            .sink
            .begin_stream(&blob.digest, &diff_id)
            .unwrap_or_else(|e| {
                tracing::warn!("layer {}: extracting after the download: {e}", blob.digest);
                None
            }),
        None => None,
    };
    let (feed, ticket) = match stream {
        Some((feed, ticket)) => (Some(feed), Some(ticket)),
        None => (None, None),
    };
    let downloaded = download_blob(sess, store, oref, blob, feed, progress).await;
    let streamed_whole = matches!(downloaded, Ok((_, true)));
    if let (Some(u), Some(ticket)) = (unpack, ticket) {
        u.send(Job::End {
            blob: blob.digest,
            ticket,
            verified: streamed_whole,
        });
    }
    downloaded?;
    if let (Some((u, diff_id)), false) = (layer, streamed_whole) {
        u.send(Job::Ready {
            blob: blob.digest,
            diff_id,
        });
    }
    Ok(true)
}
