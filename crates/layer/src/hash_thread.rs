//! SHA-256 of a stream, computed on a thread of its own.
//!
//! A layer's bytes are hashed twice on their way through Cairn (the tar for
//! the diffID, the compressed blob for its digest), at about 1.7 GB/s each
//! with SHA-NI: on the thread that also reads, decompresses or writes, the
//! hash is the biggest single cost of a commit or a pull. Here the bytes
//! are copied (a memcpy is ~10x cheaper than the hash) into 1 MiB blocks
//! that a hashing thread consumes in order, so the caller's thread only
//! copies. The digest is the same as hashing inline: same bytes, same order.
//!
//! The thread starts with the first full block: a small blob (a manifest)
//! is hashed inline at `finish`, without a thread.

use crate::digest::Digest;
use sha2::{Digest as _, Sha256};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes per block handed to the hashing thread.
const BLOCK: usize = 1 << 20;
/// Blocks waiting for the hashing thread: bounds memory to a few MiB.
const DEPTH: usize = 4;

/// The hashing thread and its channels.
struct Worker {
    to_hash: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    thread: JoinHandle<Sha256>,
}

/// Hashes what it is given on a background thread; see the module doc.
pub struct BackgroundHasher {
    buf: Vec<u8>,
    written: u64,
    worker: Option<Worker>,
    /// Set when the thread could not be started: hash inline instead.
    inline: Option<Sha256>,
}

impl Default for BackgroundHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BackgroundHasher {
    pub fn new() -> Self {
        BackgroundHasher {
            buf: Vec::new(),
            written: 0,
            worker: None,
            inline: None,
        }
    }

    /// Bytes given so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Hash `data` (after everything given before).
    pub fn update(&mut self, mut data: &[u8]) {
        self.written += data.len() as u64;
        if let Some(h) = self.inline.as_mut() {
            h.update(data);
            return;
        }
        while !data.is_empty() {
            if self.buf.capacity() < BLOCK {
                self.buf.reserve_exact(BLOCK - self.buf.len());
            }
            let take = (BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == BLOCK {
                self.ship();
            }
        }
    }

    /// Send the full buffer to the thread (started on first use).
    fn ship(&mut self) {
        if self.worker.is_none() {
            self.worker = start_worker();
        }
        let Some(w) = self.worker.as_ref() else {
            // No thread: hash here from now on.
            let mut h = Sha256::new();
            h.update(&self.buf);
            self.buf.clear();
            self.inline = Some(h);
            return;
        };
        let next = match w.spare.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(_) => Vec::with_capacity(BLOCK),
        };
        let full = std::mem::replace(&mut self.buf, next);
        if let Err(back) = w.to_hash.send(full) {
            // The thread is gone: it panicked, and `finish` says so.
            self.buf = back.0;
            self.buf.clear();
        }
    }

    /// The digest and byte count of everything given. A panic of the
    /// hashing thread (a bug: hashing cannot fail) is resumed here rather
    /// than returning a digest of part of the stream.
    pub fn finish(mut self) -> (Digest, u64) {
        let mut hasher = match (self.inline.take(), self.worker.take()) {
            (Some(h), _) => h,
            (None, None) => Sha256::new(),
            (None, Some(w)) => {
                drop(w.to_hash);
                match w.thread.join() {
                    Ok(h) => h,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        };
        hasher.update(&self.buf);
        (Digest::from_bytes(hasher.finalize().into()), self.written)
    }
}

fn start_worker() -> Option<Worker> {
    let (to_hash, blocks) = sync_channel::<Vec<u8>>(DEPTH);
    let (give_back, spare) = sync_channel::<Vec<u8>>(DEPTH + 1);
    let thread = std::thread::Builder::new()
        .name("sha256".into())
        .spawn(move || {
            let mut h = Sha256::new();
            for block in blocks {
                h.update(&block);
                // Recycled if the caller has room for it, else freed.
                let _ = give_back.try_send(block);
            }
            h
        })
        .ok()?;
    Some(Worker {
        to_hash,
        spare,
        thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_digest_as_inline_for_any_split() {
        let data: Vec<u8> = (0..(3 * BLOCK + 777))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, data.len()] {
            for piece in [1usize << 20, 65_537, 4096 * 3 + 5] {
                let mut h = BackgroundHasher::new();
                for chunk in data[..len].chunks(piece) {
                    h.update(chunk);
                }
                let (d, n) = h.finish();
                assert_eq!(n, len as u64);
                assert_eq!(d, Digest::of(&data[..len]), "{len} bytes in {piece}");
            }
        }
    }
}
