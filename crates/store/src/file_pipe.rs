//! A file written by a thread of its own.
//!
//! Ingest hashes every byte and writes it: done in one thread the two costs
//! add up. Here the caller's thread hashes and fills 1 MiB buffers, and a
//! writer thread writes them and starts their writeback, so ingest costs
//! about max(hash, write) on two cores. At most `DEPTH` buffers are in
//! flight: memory stays bounded whatever the blob's size.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

const BUFFER: usize = 1 << 20;
const DEPTH: usize = 4;
/// How much written data to let pile up before starting its writeback, so
/// the disk works while later chunks are hashed and the final fsync finds
/// little left to do.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// Write end of the pipe; [`PipedFile::finish`] returns the file.
pub struct PipedFile {
    buf: Vec<u8>,
    to_writer: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<io::Result<File>>>,
}

impl PipedFile {
    pub fn new(file: File) -> io::Result<Self> {
        let (to_writer, from_caller) = sync_channel::<Vec<u8>>(DEPTH);
        let (to_caller, spare) = sync_channel::<Vec<u8>>(DEPTH + 1);
        let writer = std::thread::Builder::new()
            .name("blob-writer".into())
            .spawn(move || write_loop(file, from_caller, to_caller))?;
        Ok(PipedFile {
            buf: Vec::with_capacity(BUFFER),
            to_writer: Some(to_writer),
            spare,
            writer: Some(writer),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUFFER));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.to_writer.as_ref().map(|tx| tx.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            // The writer stopped on an error: `finish` reports it.
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "blob writer thread stopped",
            )),
        }
    }

    /// Write what is buffered, wait for the writer, and give back the file
    /// (or the first write error).
    pub fn finish(mut self) -> io::Result<File> {
        let sent = self.send();
        self.to_writer = None; // ends the writer's loop
        let joined = match self.writer.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("blob writer thread panicked"))),
            None => Err(io::Error::other("blob writer already finished")),
        };
        let file = joined?;
        sent.map(|()| file)
    }
}

impl Write for PipedFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BUFFER - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BUFFER {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn write_loop(
    mut file: File,
    from_caller: Receiver<Vec<u8>>,
    to_caller: SyncSender<Vec<u8>>,
) -> io::Result<File> {
    let (mut written, mut writeback_from) = (0u64, 0u64);
    for mut buf in from_caller {
        file.write_all(&buf)?;
        written += buf.len() as u64;
        if written - writeback_from >= WRITEBACK_CHUNK {
            start_writeback(&file, writeback_from, written - writeback_from);
            writeback_from = written;
        }
        buf.clear();
        let _ = to_caller.try_send(buf); // recycle; dropped if the caller has enough
    }
    Ok(file)
}

/// Ask the kernel to start writing a range back, without waiting for it.
fn start_writeback(file: &File, from: u64, len: u64) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    // SAFETY: sync_file_range only reads its integer arguments; `fd` is an
    // open descriptor owned by this thread for the whole call. A filesystem
    // that does not support it loses only the overlap.
    let _ = unsafe {
        libc::sync_file_range(
            fd,
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn bytes_arrive_in_order_across_buffers() {
        let tmp = tempfile::tempfile().unwrap();
        let mut pipe = PipedFile::new(tmp).unwrap();
        let data: Vec<u8> = (0..(3 * BUFFER + 12345)).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(70_001) {
            pipe.write_all(chunk).unwrap();
        }
        let mut file = pipe.finish().unwrap();
        let mut back = Vec::new();
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }
}
