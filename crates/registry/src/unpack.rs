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
    /// Every layer download has ended: make the kept layers durable and
    /// name them now, while the pull records its manifest.
    AdoptNow,
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
            let adopt = |kept: Vec<_>, first_error: &mut Option<(String, String)>| {
                let n = kept.len();
                if let Err(e) = sink.adopt(kept) {
                    first_error.get_or_insert((format!("({n} layers)"), e));
                }
            };
            for job in rx {
                let (blob, res) = match job {
                    Job::AdoptNow => {
                        if !kept.is_empty() {
                            adopt(std::mem::take(&mut kept), &mut first_error);
                        }
                        continue;
                    }
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
            // One sync for every streamed layer, at the end (or at
            // `AdoptNow`; what a later job kept is adopted here).
            if !kept.is_empty() {
                adopt(kept, &mut first_error);
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

    /// Every layer has been handed over: adopt the streamed ones now (one
    /// `syncfs` for all) instead of after the caller's last step, so that
    /// sync overlaps the manifest's recording. Layers handed over later
    /// are still adopted, at the end.
    pub(crate) fn adopt_now(&self) {
        self.send(Job::AdoptNow);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamTicket;
    use std::sync::mpsc::{channel, Sender};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Keeps every verified stream (its ticket is its name) and reports
    /// each `adopt` call's names.
    struct Recorder {
        adopted: Mutex<Sender<Vec<String>>>,
    }

    impl LayerSink for Recorder {
        fn layer_ready(&self, _: &Digest, _: &Digest) -> std::result::Result<(), String> {
            Ok(())
        }
        fn end_stream(
            &self,
            ticket: StreamTicket,
            verified: bool,
        ) -> std::result::Result<Option<StreamTicket>, String> {
            Ok(verified.then_some(ticket))
        }
        fn adopt(&self, kept: Vec<StreamTicket>) -> std::result::Result<(), String> {
            let names = kept
                .into_iter()
                .filter_map(|t| t.0.downcast::<String>().ok().map(|s| *s))
                .collect();
            let _ = self.adopted.lock().unwrap().send(names);
            Ok(())
        }
    }

    fn end(u: &Unpack<'_>, name: &str, verified: bool) {
        u.send(Job::End {
            blob: Digest::of(name.as_bytes()),
            ticket: StreamTicket(Box::new(name.to_string())),
            verified,
        });
    }

    /// `adopt_now` adopts what was kept so far while the work still runs
    /// (the work below waits for it: without the early adoption it would
    /// wait in vain), and a layer kept afterwards is adopted at the end.
    #[test]
    fn adopt_now_adopts_while_the_work_runs_and_the_rest_at_the_end() {
        let (tx, rx) = channel();
        let sink = Recorder {
            adopted: Mutex::new(tx),
        };
        let during = with_sink(Some(&sink), |u| {
            let u = u.unwrap();
            end(u, "a", true);
            end(u, "spoiled", false);
            end(u, "b", true);
            u.adopt_now();
            // A liveness bound, not a timing: the adoption never comes
            // if `adopt_now` does not start it.
            let during = rx.recv_timeout(Duration::from_secs(60));
            end(u, "late", true);
            Ok(during)
        })
        .unwrap();
        assert_eq!(during.unwrap(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(rx.try_recv().unwrap(), vec!["late".to_string()]);
        assert!(rx.try_recv().is_err(), "one adoption per batch");
    }

    /// Without `adopt_now` everything kept is adopted once, at the end, and
    /// nothing is adopted when nothing was kept.
    #[test]
    fn without_adopt_now_one_adoption_at_the_end() {
        let (tx, rx) = channel();
        let sink = Recorder {
            adopted: Mutex::new(tx),
        };
        with_sink(Some(&sink), |u| {
            let u = u.unwrap();
            end(u, "a", true);
            end(u, "b", true);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            rx.try_recv().unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(rx.try_recv().is_err());
        with_sink(Some(&sink), |u| {
            end(u.unwrap(), "spoiled", false);
            u.unwrap().adopt_now();
            Ok(())
        })
        .unwrap();
        assert!(rx.try_recv().is_err(), "nothing kept, nothing adopted");
    }
}
