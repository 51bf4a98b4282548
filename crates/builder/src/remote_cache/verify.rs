//! The layer sink of a registry-cache import: a cache layer is kept as a
//! verified blob only, not extracted (lazy: its dir is made on demand, by
//! `Builder::ensure_extracted` or a sandbox's rootfs, when something needs
//! the tree). Its diff id is checked while it downloads: the bytes the blob
//! file gets are also decompressed and hashed on a thread of their own, so
//! nothing is read twice. A blob that was already in the store, or whose
//! download had to start over, is checked by reading it once.
//!
//! Only a (blob, diff id) pair checked here may be recorded in the local
//! cache: an image config names diff ids, and a cache manifest that lied
//! about one would otherwise give an image whose layers do not match it.

use cairn_layer::{BlobDiffId, LayerError};
use cairn_registry::{LayerFeed, LayerSink, StreamTicket};
use cairn_store::{Digest, Store};
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// Bytes handed to the hashing thread at once.
const CHUNK: usize = 1 << 20;
/// Chunks in flight: bounds memory to a few MiB per download.
const IN_FLIGHT: usize = 4;

/// Blob -> the diff id it was found to have: kept for a whole build, so no
/// blob is decompressed twice.
pub(crate) type Found = Mutex<HashMap<Digest, Digest>>;

/// Checks the diff ids of the layers a cache import fetches.
pub(crate) struct DiffIdCheck<'a> {
    store: &'a Store,
    /// Bound on a layer's uncompressed size (`CAIRN_MAX_EXTRACT_SIZE`).
    limit: Option<u64>,
    found: &'a Found,
}

impl<'a> DiffIdCheck<'a> {
    pub fn new(store: &'a Store, limit: Option<u64>, found: &'a Found) -> Self {
        DiffIdCheck {
            store,
            limit,
            found,
        }
    }

    /// Was `blob` found to have the diff id `diff_id`?
    pub fn verified(&self, blob: &Digest, diff_id: &Digest) -> bool {
        self.found_map().get(blob) == Some(diff_id)
    }

    fn found_map(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Digest>> {
        self.found.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Note what `blob` decompressed to; an error when not `want`.
    fn record(&self, blob: &Digest, want: &Digest, got: BlobDiffId) -> Result<(), String> {
        self.found_map().insert(*blob, got.diff_id);
        match got.diff_id == *want {
            true => Ok(()),
            false => Err(mismatch(&got.diff_id, want)),
        }
    }
}

fn mismatch(got: &Digest, want: &Digest) -> String {
    format!("has diff id {got}, the cache manifest says {want}")
}

/// A streamed check under way.
struct Checking {
    blob: Digest,
    want: Digest,
    hasher: JoinHandle<Result<BlobDiffId, LayerError>>,
}

impl LayerSink for DiffIdCheck<'_> {
    fn layer_ready(&self, blob: &Digest, diff_id: &Digest) -> Result<(), String> {
        let known = self.found_map().get(blob).copied();
        if let Some(got) = known {
            return match got == *diff_id {
                true => Ok(()),
                false => Err(mismatch(&got, diff_id)),
            };
        }
        let path = self.store.blob_path(blob);
        let file =
            std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        let got = cairn_layer::blob_diff_id(file, self.limit).map_err(|e| e.to_string())?;
        self.record(blob, diff_id, got)
    }

    fn begin_stream(
        &self,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<Option<(LayerFeed, StreamTicket)>, String> {
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let limit = self.limit;
        let hasher = std::thread::Builder::new()
            .name("cairn-diff-id".into())
            .spawn(move || cairn_layer::buffered_blob_diff_id(ChunkReader::new(rx), limit))
            .map_err(|e| format!("starting the diff id check: {e}"))?;
        let feed: LayerFeed = Box::new(ChunkWriter::new(tx));
        let ticket = StreamTicket(Box::new(Checking {
            blob: *blob,
            want: *diff_id,
            hasher,
        }));
        Ok(Some((feed, ticket)))
    }

    fn end_stream(
        &self,
        ticket: StreamTicket,
        verified: bool,
    ) -> Result<Option<StreamTicket>, String> {
        let checking = ticket
            .0
            .downcast::<Checking>()
            .map_err(|_| "a stream ticket of another sink".to_string())?;
        // The feed is dropped by now: the thread sees the end and finishes.
        let got = checking
            .hasher
            .join()
            .map_err(|_| "the diff id check panicked".to_string())?;
        if !verified {
            // Spoiled bytes; `layer_ready` follows if the blob was stored.
            return Ok(None);
        }
        let got = got.map_err(|e| e.to_string())?;
        self.record(&checking.blob, &checking.want, got)
            .map(|()| None)
    }
}

/// The feed: buffers the download's bytes into chunks for the hasher. A
/// hasher that stopped (bad compression, over the limit) makes writes fail,
/// which ends the feed; its error is reported by `end_stream`.
struct ChunkWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn new(tx: SyncSender<Vec<u8>>) -> Self {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(full)
            .map_err(|_| std::io::Error::other("the diff id check stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.send();
        }
    }
}

/// The hasher's end of the feed, as a `Read`; EOF when the feed is dropped.
struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChunkReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let chunk = self.fill_buf()?;
        let n = out.len().min(chunk.len());
        out[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The decoder reads straight from the chunks (no copy into a buffer).
impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.chunk.len());
    }
}
