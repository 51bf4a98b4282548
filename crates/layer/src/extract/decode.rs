//! Decompression on its own thread, so inflating the next megabytes overlaps
//! with creating files. The thread also hashes the uncompressed stream (the
//! diffID) and enforces the size limit; the tar reader sees a plain `Read`.
//! [`blob_diff_id`] is the same decoding and hashing without an extraction.

use crate::compression::Compression;
use crate::digest::{Digest, HashingWriter};
use crate::error::LayerError;
use sha2::{Digest as _, Sha256};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// One decompressed block, or the error that ended the stream.
pub(crate) type Block = io::Result<Vec<u8>>;

/// The decoder's ends: blocks out, used blocks back (so no block is
/// allocated and zeroed per MiB).
pub(crate) struct Outlet {
    pub tx: SyncSender<Block>,
    pub used: Receiver<Vec<u8>>,
}

const BLOCK: usize = 1024 * 1024;
/// Blocks in flight between the threads: bounds memory to a few MiB.
const IN_FLIGHT: usize = 4;

/// What the decoder thread reports when it is done.
pub(crate) struct Decoded {
    pub compression: Compression,
    pub diff_id: Digest,
    pub size: u64,
}

/// Run the decoder: read `blob`, detect its compression, decompress, hash, and
/// send blocks to `tx` until EOF, an error, or the receiver going away.
///
/// Each block goes decoder -> hashing thread -> extractor, moved, not
/// copied: the hash (the diffID) runs on a thread of its own without the
/// 1 MiB copy per block a hashing writer would make (stop 18: that memmove
/// was 7 % of a 256 MiB pull's CPU). Where no thread can be started, the
/// decoder hashes the blocks itself.
pub(crate) fn run_decoder<R: Read>(
    blob: R,
    limit: Option<u64>,
    outlet: Outlet,
) -> Result<Decoded, LayerError> {
    let Outlet { tx, used } = outlet;
    let (compression, mut reader) = decoder(blob)?;
    let (to_hash, blocks) = sync_channel::<Block>(IN_FLIGHT);
    std::thread::scope(|s| {
        let forward = tx.clone();
        let hasher = std::thread::Builder::new()
            .name("sha256".into())
            .spawn_scoped(s, move || hash_and_forward(blocks, forward));
        let (result, digest) = match hasher {
            Ok(thread) => {
                drop(tx); // the hashing thread's clone is the extractor's sender
                let result =
                    decode_blocks(&mut reader, limit, &used, &mut |b| to_hash.send(b).is_ok());
                drop(to_hash); // the hashing thread sees the end
                let digest = thread
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                (result, digest)
            }
            Err(_) => {
                // No thread: hash here, send to the extractor directly.
                let mut h = Sha256::new();
                let result = decode_blocks(&mut reader, limit, &used, &mut |b| {
                    if let Ok(b) = &b {
                        h.update(b);
                    }
                    tx.send(b).is_ok()
                });
                drop(tx);
                (result, Digest::from_bytes(h.finalize().into()))
            }
        };
        let size = result?;
        Ok(Decoded {
            compression,
            diff_id: digest,
            size,
        })
    })
}

/// Decompress `reader` into 1 MiB blocks (recycled from `used`) and hand
/// each to `send` until EOF, an error (sent on, then returned) or `send`
/// refusing (the extractor stopped). Returns the bytes decoded.
fn decode_blocks(
    reader: &mut dyn Read,
    limit: Option<u64>,
    used: &Receiver<Vec<u8>>,
    send: &mut dyn FnMut(Block) -> bool,
) -> Result<u64, LayerError> {
    let mut total: u64 = 0;
    loop {
        let mut block = used.try_recv().unwrap_or_default();
        // A used block was full: nothing to zero (resize only fills the tail).
        block.resize(BLOCK, 0);
        let n = match read_full(reader, &mut block) {
            Ok(n) => n,
            Err(e) => {
                let msg = e.to_string();
                send(Err(e));
                return Err(LayerError::Stream(io::Error::other(msg)));
            }
        };
        if n == 0 {
            return Ok(total);
        }
        block.truncate(n);
        if let Some(limit) = limit.filter(|l| total + n as u64 > *l) {
            send(Err(io::Error::other("layer exceeds the size limit")));
            return Err(LayerError::Limit(crate::limits::LimitExceeded {
                kind: crate::limits::LimitKind::Size,
                limit,
                entry: None,
            }));
        }
        total += n as u64;
        if !send(Ok(block)) {
            // The extractor stopped (it failed and will report why).
            return Ok(total);
        }
    }
}

/// The hashing thread: hash each block, then pass it on to the extractor.
/// Stops when the extractor stops (the decoder then sees its send fail).
fn hash_and_forward(blocks: Receiver<Block>, tx: SyncSender<Block>) -> Digest {
    let mut h = Sha256::new();
    for block in blocks {
        if let Ok(b) = &block {
            h.update(b);
        }
        if tx.send(block).is_err() {
            break;
        }
    }
    Digest::from_bytes(h.finalize().into())
}

/// `blob`'s compression (detected by content) and a reader of its
/// uncompressed bytes.
fn decoder<'r, R: Read + 'r>(blob: R) -> Result<(Compression, Box<dyn Read + 'r>), LayerError> {
    buffered_decoder(BufReader::with_capacity(256 * 1024, blob))
}

/// [`decoder`] for a reader with its own buffer (no second copy).
fn buffered_decoder<'r, R: BufRead + 'r>(
    mut input: R,
) -> Result<(Compression, Box<dyn Read + 'r>), LayerError> {
    let head = input.fill_buf().map_err(LayerError::Stream)?;
    let compression = Compression::detect(head);
    let reader: Box<dyn Read + 'r> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::with_buffer(input).map_err(LayerError::Stream)?;
            // Refuse frames that ask for more than 128 MiB of window.
            d.window_log_max(27).map_err(LayerError::Stream)?;
            Box::new(d)
        }
        Compression::None => Box::new(input),
    };
    Ok((compression, reader))
}

/// What [`blob_diff_id`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobDiffId {
    pub compression: Compression,
    /// The digest of the uncompressed stream.
    pub diff_id: Digest,
    /// Its length.
    pub size: u64,
}

/// The diff id of a layer blob (gzip, zstd or plain, detected by content),
/// without extracting it: decompress and hash, on the calling thread.
/// `limit` bounds the uncompressed size: a blob that inflates past it is
/// refused ([`LayerError::Limit`]) once that many bytes are hashed.
pub fn blob_diff_id<R: Read>(blob: R, limit: Option<u64>) -> Result<BlobDiffId, LayerError> {
    buffered_blob_diff_id(BufReader::with_capacity(256 * 1024, blob), limit)
}

/// [`blob_diff_id`] of a reader with its own buffer, read from it directly.
pub fn buffered_blob_diff_id<R: BufRead>(
    blob: R,
    limit: Option<u64>,
) -> Result<BlobDiffId, LayerError> {
    let (compression, mut reader) = buffered_decoder(blob)?;
    let mut hasher = HashingWriter::new(io::sink());
    let mut block = vec![0u8; BLOCK];
    loop {
        let n = read_full(&mut reader, &mut block).map_err(LayerError::Stream)?;
        if n == 0 {
            break;
        }
        if let Some(limit) = limit.filter(|l| hasher.written() + n as u64 > *l) {
            return Err(LayerError::Limit(crate::limits::LimitExceeded {
                kind: crate::limits::LimitKind::Size,
                limit,
                entry: None,
            }));
        }
        // Hashing into io::sink cannot fail.
        let _ = hasher.write_all(&block[..n]);
    }
    let (_, diff_id, size) = hasher.finish();
    Ok(BlobDiffId {
        compression,
        diff_id,
        size,
    })
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The decoder's outlet and the extractor's reader, connected.
pub(crate) fn channel() -> (Outlet, BlockReader) {
    let (tx, rx) = sync_channel(IN_FLIGHT);
    // Room for every block in flight (decoder -> hasher -> extractor), so
    // the decoder rarely allocates and zeroes a fresh one.
    let (give_back, used) = sync_channel(2 * IN_FLIGHT + 3);
    (Outlet { tx, used }, BlockReader::new(rx, give_back))
}

/// The receiving end as a `Read`.
pub(crate) struct BlockReader {
    rx: Receiver<Block>,
    give_back: SyncSender<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
}

impl BlockReader {
    fn new(rx: Receiver<Block>, give_back: SyncSender<Vec<u8>>) -> Self {
        BlockReader {
            rx,
            give_back,
            block: Vec::new(),
            pos: 0,
        }
    }

    /// Read and discard the rest (trailing padding after the end-of-archive
    /// blocks), so the decoder hashes the whole stream.
    pub fn drain(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 64 * 1024];
        while self.read(&mut buf)? > 0 {}
        Ok(())
    }
}

impl Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    let used = std::mem::replace(&mut self.block, b);
                    // Recycled if the decoder has room for it, else freed.
                    let _ = self.give_back.try_send(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // sender finished: EOF
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_bytes() -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, "f", &b"hello"[..]).unwrap();
        t.into_inner().unwrap()
    }

    #[test]
    fn blob_diff_id_is_the_digest_of_the_uncompressed_stream() {
        let tar = tar_bytes();
        let want = Digest::of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (blob, compression) in [
            (&tar, Compression::None),
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
        ] {
            let got = blob_diff_id(&blob[..], None).unwrap();
            assert_eq!(got.compression, compression);
            assert_eq!(got.diff_id, want, "{compression}");
            assert_eq!(got.size, tar.len() as u64);
        }
        // Over the limit: refused, not hashed to the end.
        let err = blob_diff_id(&gz[..], Some(100)).unwrap_err();
        assert!(matches!(err, LayerError::Limit(_)), "{err}");
        // A corrupt gzip stream is an error, not a digest.
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        bad.truncate(bad.len() - 4);
        assert!(blob_diff_id(&bad[..], None).is_err());
    }
}
