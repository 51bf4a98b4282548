//! One way in for a new layer made from a directory: [`Store::commit_layer`]
//! streams its blob into the store (hashed once, as it lands), checks it
//! against what the layer's writer counted, adopts the directory as the
//! layer's extracted dir (durably, see `layer_dirs`), and records the
//! build-cache entry when the caller has a key. Build steps (RUN, COPY/ADD,
//! WORKDIR), sandbox commits and snapshots all come through here.

use crate::cache::CacheEntry;
use crate::error::StoreError;
use crate::layer_dirs::TreeRef;
use crate::{BlobWriter, Digest, Store};
use cairn_layer::quiet::Quiet;
use cairn_layer::timing::span;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A layer whose write takes longer than this has its dir synced beside
/// the write (see [`Store::write_with_early_sync`]); quicker ones are
/// small, and often already in the store, so they are not worth a sync.
const EARLY_SYNC_AFTER: Duration = Duration::from_millis(40);

/// Writes a directory as a layer blob into the store's writer. The store
/// cannot read every layer dir itself (its files may belong to subordinate
/// IDs): the sandbox crate's writer runs a task in a user namespace.
pub trait LayerWriter {
    /// The writer's own error; store errors of the commit come back in it.
    type Error: From<StoreError>;

    /// Stream the layer of `dir` into `out` and say what was written.
    fn write_layer(&self, dir: &Path, out: &mut BlobWriter) -> Result<LayerReport, Self::Error>;
}

/// What a [`LayerWriter`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Bytes of the blob as written (compressed).
    pub size: u64,
    /// The blob's media type (its compression).
    pub media_type: String,
    /// The dir's tree digest when it differs from the diff id (clamped
    /// mtimes); see [`crate::layer_dirs::LayerMarker::tree`].
    pub tree: Option<Digest>,
}

/// The build-cache entry to record with a committed layer.
#[derive(Debug, Clone, Copy)]
pub struct CacheRecord<'a> {
    pub key: &'a str,
    /// The builder's JSON (opaque to the store).
    pub value: &'a str,
}

/// A layer that is in the store: blob, diff id and extracted dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
    /// True when the source dir became the layer dir (it is gone from where
    /// it was); false when the layer was already extracted and the source
    /// dir is left to the caller to remove.
    pub adopted: bool,
}

impl Store {
    /// Commit the layer of `dir` (see the module doc). Nothing is named
    /// before the blob is complete and checked; on an error the blob's temp
    /// file is removed and `dir` stays where it was.
    pub fn commit_layer<W: LayerWriter>(
        &self,
        writer: &W,
        dir: &Path,
        cache: Option<CacheRecord<'_>>,
    ) -> Result<CommittedLayer, W::Error> {
        let write_span = span("store.commit_write_layer");
        let mut out = self.blob_writer()?;
        let (report, early_sync) = self.write_with_early_sync(|| writer.write_layer(dir, &mut out));
        let report = report?;
        if out.written() != report.size {
            return Err(StoreError::LayerMismatch {
                dir: dir.to_path_buf(),
                reason: format!(
                    "the layer writer wrote {} bytes but the store received {}",
                    report.size,
                    out.written()
                ),
            }
            .into());
        }
        // An uncompressed layer's blob is its tar: its digest must be the
        // diff id the writer reported (free to check: the blob is hashed anyway).
        let expected = (report.media_type == cairn_layer::Compression::None.media_type())
            .then_some((report.diff_id, report.size));
        let blob = out.commit(expected)?;
        drop(write_span);

        let _adopt_span = span("store.commit_adopt_layer_dir");
        let adopted = !self.has_layer_dir(&report.diff_id)
            && match early_sync {
                // `dir` was complete before the write began, so before the sync.
                Some(synced) => {
                    synced?;
                    self.adopt_synced_layer_dir(&report.diff_id, dir, TreeRef::Tree(report.tree))?
                }
                None => self.adopt_layer_dir(&report.diff_id, dir, report.tree)?,
            };
        if let Some(c) = cache {
            self.cache_put(&CacheEntry {
                key: c.key.to_string(),
                layer_digest: Some(blob.digest),
                diff_id: Some(report.diff_id),
                size: blob.size,
                value: c.value.to_string(),
            })?;
        }
        Ok(CommittedLayer {
            digest: blob.digest,
            size: blob.size,
            media_type: report.media_type,
            diff_id: report.diff_id,
            adopted,
        })
    }

    /// Run `write` while a second thread, once the write has taken
    /// [`EARLY_SYNC_AFTER`], makes the store's filesystem durable (what
    /// [`Store::sync_for_adoption`] does). The dir being committed is
    /// complete before the write starts (its tar is its content; it must not
    /// change during the commit), so that sync covers it and the adoption
    /// after the write needs none of its own: the writeback of a big new
    /// tree (20,000 files: ~300 ms) overlaps the tar and compression instead
    /// of following them. Returns the write's result and the sync's, if one
    /// ran.
    ///
    /// The thread is [`Quiet`] for the whole write, so the writer's helper
    /// may still be a fork of this process (`cairn_sandbox::spawn`): all it
    /// allocates (its start, the dir's descriptor, the error) happens
    /// outside that state; inside it only parks, reads the clock and calls
    /// `syncfs(2)`.
    fn write_with_early_sync<T>(
        &self,
        write: impl FnOnce() -> T,
    ) -> (T, Option<crate::error::Result<()>>) {
        let layers = self.layout().layers();
        let Ok(dir) = std::fs::File::open(&layers) else {
            return (write(), None); // the adoption syncs (and reports) itself
        };
        let (armed, done) = (AtomicBool::new(false), AtomicBool::new(false));
        std::thread::scope(|scope| {
            let syncer = std::thread::Builder::new()
                .name("cairn-early-sync".into())
                .spawn_scoped(scope, || {
                    let quiet = Quiet::enter();
                    armed.store(true, Ordering::SeqCst);
                    let synced = sync_unless_done(&dir, &done);
                    // Quiet until the write is done: its helper may fork
                    // any time before that.
                    while !done.load(Ordering::SeqCst) {
                        std::thread::park();
                    }
                    drop(quiet);
                    synced
                });
            // Set even if `write` panics: the scope joins the thread first.
            let end = EndOnDrop(&done, syncer.as_ref().ok().map(|t| t.thread().clone()));
            if let Ok(t) = &syncer {
                // Counted as quiet before the write starts its helper.
                while !armed.load(Ordering::SeqCst) && !t.is_finished() {
                    std::thread::yield_now();
                }
            }
            let result = write();
            drop(end);
            // No thread (out of resources): the adoption syncs itself.
            let synced = syncer.ok().and_then(|t| t.join().ok().flatten());
            let synced = synced
                .map(|r| r.map_err(|e| StoreError::io("syncfs", &layers)(std::io::Error::from(e))));
            (result, synced)
        })
    }
}

/// Tells the early-sync thread the write is done when dropped.
struct EndOnDrop<'a>(&'a AtomicBool, Option<std::thread::Thread>);

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(t) = &self.1 {
            t.unpark();
        }
    }
}

/// On the quiet early-sync thread: wait [`EARLY_SYNC_AFTER`] unless `done`
/// is set first, then `syncfs` the store's filesystem. No allocation, no
/// lock.
fn sync_unless_done(dir: &std::fs::File, done: &AtomicBool) -> Option<rustix::io::Result<()>> {
    let deadline = Instant::now() + EARLY_SYNC_AFTER;
    loop {
        if done.load(Ordering::SeqCst) {
            return None;
        }
        let now = Instant::now();
        if now >= deadline {
            return Some(rustix::fs::syncfs(dir));
        }
        std::thread::park_timeout(deadline - now);
    }
}
