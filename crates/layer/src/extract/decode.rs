//! Decompression on its own thread, so inflating the next megabytes overlaps
//! with creating files. The thread also hashes the uncompressed stream (the
//! diffID) and enforces the size limit; the tar reader sees a plain `Read`.

use crate::compression::Compression;
use crate::digest::{Digest, HashingWriter};
use crate::error::LayerError;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};

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
pub(crate) fn run_decoder<R: Read>(
    blob: R,
    limit: Option<u64>,
    outlet: Outlet,
) -> Result<Decoded, LayerError> {
    let Outlet { tx, used } = outlet;
    let mut input = BufReader::with_capacity(256 * 1024, blob);
    let head = input.fill_buf().map_err(LayerError::Stream)?;
    let compression = Compression::detect(head);
    let mut reader: Box<dyn Read + '_> = match compression {
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
    // Decompression here, the diffID's hash on a thread of its own, file
    // creation on the extractor's: three stages on the cores there are.
    let mut hasher = HashingWriter::threaded(io::sink());
    loop {
        let mut block = used.try_recv().unwrap_or_default();
        // A used block was full: nothing to zero (resize only fills the tail).
        block.resize(BLOCK, 0);
        let n = match read_full(&mut reader, &mut block) {
            Ok(n) => n,
            Err(e) => {
                let msg = e.to_string();
                let _ = tx.send(Err(e));
                return Err(LayerError::Stream(io::Error::other(msg)));
            }
        };
        if n == 0 {
            break;
        }
        block.truncate(n);
        if let Some(limit) = limit {
            if hasher.written() + n as u64 > limit {
                let _ = tx.send(Err(io::Error::other("layer exceeds the size limit")));
                return Err(LayerError::Limit(crate::limits::LimitExceeded {
                    kind: crate::limits::LimitKind::Size,
                    limit,
                    entry: None,
                }));
            }
        }
        // Hashing into io::sink cannot fail.
        let _ = hasher.write_all(&block);
        if tx.send(Ok(block)).is_err() {
            // The extractor stopped (it failed and will report why).
            break;
        }
    }
    let (_, diff_id, size) = hasher.finish();
    Ok(Decoded {
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
    let (tx, rx) = std::sync::mpsc::sync_channel(IN_FLIGHT);
    let (give_back, used) = std::sync::mpsc::sync_channel(IN_FLIGHT + 1);
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
