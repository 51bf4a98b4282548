//! A file written by threads of its own, with direct I/O where it can.
//!
//! Ingest hashes every byte and writes it: done in one thread the two costs
//! add up. Here the caller's thread fills buffers (reading straight into
//! them, see [`PipedFile::read_from`]) and hashes them, and writer threads
//! write them, so ingest costs about max(read + hash, write) on two cores.
//! At most `DEPTH` buffers wait for a writer: memory stays bounded whatever
//! the blob's size.
//!
//! The file is switched to `O_DIRECT` when the filesystem allows it. Full
//! buffers (aligned in memory, at aligned offsets) then go from this
//! process's memory to the disk with no copy into the page cache, no page
//! cache to allocate (the dearest part of a buffered write on the VMs we
//! measured), no dirty pages for the final fsync to wait on, and no
//! eviction of other files' cache for a blob that is mostly not read soon.
//! A direct write returns when the disk has the data, so `WRITERS` threads
//! keep that many writes in flight. Only the last, partial buffer goes
//! through the page cache (`O_DIRECT` cleared first); the caller's fsync
//! makes it, the file's metadata and the disk's write cache durable. Where
//! direct I/O is refused (at open or at the first write), one writer
//! writes through the page cache and starts writeback as it goes, so the
//! final fsync finds little left to do.

use std::alloc::{self, Layout};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const BUFFER: usize = 1 << 20;
const DEPTH: usize = 4;
/// Direct writes in flight at once (one per writer thread).
const WRITERS: usize = 2;
/// Alignment of buffers in memory and of their offsets in the file, as
/// direct I/O needs (4 KiB covers every common block device).
const ALIGN: usize = 4096;
/// Through the page cache: how much written data to let pile up before
/// starting its writeback.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A `BUFFER`-byte buffer aligned for direct I/O, filled from the start.
struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    const LAYOUT: Layout = match Layout::from_size_align(BUFFER, ALIGN) {
        Ok(l) => l,
        Err(_) => panic!("bad buffer layout"),
    };

    fn new() -> Self {
        // SAFETY: the layout has a non-zero size. Zeroed, so every byte of
        // the allocation is initialised and `spare` may hand it out.
        let raw = unsafe { alloc::alloc_zeroed(Self::LAYOUT) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(Self::LAYOUT));
        AlignedBuf { ptr, len: 0 }
    }

    fn filled(&self) -> &[u8] {
        // SAFETY: `len <= BUFFER` initialised bytes of an allocation we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The unfilled part, for `read` or a copy to land in.
    fn spare(&mut self) -> &mut [u8] {
        // SAFETY: bytes `len..BUFFER` of an initialised allocation we own,
        // borrowed mutably through `&mut self`.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), BUFFER - self.len)
        }
    }

    fn is_full(&self) -> bool {
        self.len == BUFFER
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this same layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::LAYOUT) }
    }
}

/// Write end of the pipe; [`PipedFile::finish`] returns the file.
pub struct PipedFile {
    buf: AlignedBuf,
    /// File offset of `buf`'s first byte.
    offset: u64,
    file: Arc<File>,
    direct: bool,
    to_writers: Option<SyncSender<(u64, AlignedBuf)>>,
    spare: Receiver<AlignedBuf>,
    writers: Vec<JoinHandle<io::Result<()>>>,
    /// What the writers are started with, at the first full buffer: a
    /// blob smaller than one buffer starts no thread, and until then this
    /// process stays single-threaded (a layer commit's helper is forked
    /// then, see `cairn_sandbox::spawn`).
    unstarted: Option<WriterEnds>,
}

/// The writers' ends of the channels, and how many writers.
struct WriterEnds {
    count: usize,
    from_caller: Arc<Mutex<Receiver<(u64, AlignedBuf)>>>,
    to_caller: SyncSender<AlignedBuf>,
}

impl PipedFile {
    /// `try_direct`: use `O_DIRECT` if the filesystem takes it.
    pub fn with_direct(file: File, try_direct: bool) -> io::Result<Self> {
        let direct = try_direct && set_direct(&file, true).is_ok();
        // Through the page cache a write is a memory copy: one writer keeps
        // up, and its writeback ranges stay contiguous.
        let nwriters = if direct { WRITERS } else { 1 };
        let file = Arc::new(file);
        let (to_writers, from_caller) = sync_channel::<(u64, AlignedBuf)>(DEPTH);
        let from_caller = Arc::new(Mutex::new(from_caller));
        let (to_caller, spare) = sync_channel::<AlignedBuf>(DEPTH + nwriters + 1);
        Ok(PipedFile {
            buf: AlignedBuf::new(),
            offset: 0,
            file,
            direct,
            to_writers: Some(to_writers),
            spare,
            writers: Vec::with_capacity(nwriters),
            unstarted: Some(WriterEnds {
                count: nwriters,
                from_caller,
                to_caller,
            }),
        })
    }

    fn start_writers(&mut self) -> io::Result<()> {
        let Some(ends) = self.unstarted.take() else {
            return Ok(());
        };
        for _ in 0..ends.count {
            let (file, from_caller, to_caller) = (
                self.file.clone(),
                ends.from_caller.clone(),
                ends.to_caller.clone(),
            );
            let direct = self.direct;
            self.writers.push(
                std::thread::Builder::new()
                    .name("blob-writer".into())
                    .spawn(move || write_loop(&file, direct, &from_caller, &to_caller))?,
            );
        }
        Ok(())
    }

    /// Hand the buffer, which is full, to a writer.
    fn send(&mut self) -> io::Result<()> {
        self.start_writers()?;
        let next = self.spare.try_recv().unwrap_or_else(|_| AlignedBuf::new());
        let full = std::mem::replace(&mut self.buf, next);
        let at = self.offset;
        self.offset += full.len as u64;
        match self.to_writers.as_ref().map(|tx| tx.send((at, full))) {
            Some(Ok(())) => Ok(()),
            // The writers stopped on an error: `finish` reports it.
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "blob writer thread stopped",
            )),
        }
    }

    /// One `read` from `reader` straight into the buffer, with no copy in
    /// between; `seen` gets the bytes read before they are handed on.
    /// Returns what `read` returned: 0 at the end of `reader`.
    pub fn read_from<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
        seen: impl FnOnce(&[u8]),
    ) -> io::Result<usize> {
        let room = self.buf.spare();
        let n = reader.read(room)?;
        seen(&room[..n]);
        self.buf.len += n;
        if self.buf.is_full() {
            self.send()?;
        }
        Ok(n)
    }

    /// Wait for the writers, write the last partial buffer, and give back
    /// the file (or the first write error).
    pub fn finish(mut self) -> io::Result<File> {
        self.to_writers = None; // ends the writers' loops
        self.unstarted = None; // and drops their ends if none started
        let mut result = Ok(());
        for h in self.writers.drain(..) {
            let joined = h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("blob writer thread panicked")));
            result = result.and(joined);
        }
        result?;
        // The file goes back as an ordinary one: the tail, and whatever
        // the caller does with it, may be unaligned.
        if self.direct {
            set_direct(&self.file, false)?;
        }
        if self.buf.len > 0 {
            self.file.write_all_at(self.buf.filled(), self.offset)?;
        }
        Arc::try_unwrap(self.file)
            .map_err(|_| io::Error::other("blob writer threads still hold the file"))
    }
}

impl Write for PipedFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.buf.spare();
        let n = room.len().min(data.len());
        room[..n].copy_from_slice(&data[..n]);
        self.buf.len += n;
        if self.buf.is_full() {
            self.send()?;
        }
        Ok(n)
    }

    /// Nothing to do: only full buffers can be written directly; the rest
    /// waits for [`PipedFile::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_loop(
    file: &File,
    direct: bool,
    from_caller: &Mutex<Receiver<(u64, AlignedBuf)>>,
    to_caller: &SyncSender<AlignedBuf>,
) -> io::Result<()> {
    // Through the page cache: the range written but not yet sent to writeback.
    let mut pending: Option<(u64, u64)> = None;
    loop {
        // The lock is held only while waiting for the next buffer.
        let next = from_caller
            .lock()
            .map_err(|_| io::Error::other("blob writer lock poisoned"))?
            .recv();
        let Ok((at, mut buf)) = next else { break };
        match file.write_all_at(buf.filled(), at) {
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                // The filesystem took O_DIRECT at open but not for this
                // write: go through the page cache from here on.
                set_direct(file, false)?;
                file.write_all_at(buf.filled(), at)?;
            }
            r => r?,
        }
        if !direct {
            let len = buf.len as u64;
            let (from, so_far) = match pending {
                Some((from, so_far)) if from + so_far == at => (from, so_far + len),
                _ => (at, len),
            };
            if so_far >= WRITEBACK_CHUNK {
                start_writeback(file, from, so_far);
                pending = None;
            } else {
                pending = Some((from, so_far));
            }
        }
        buf.len = 0;
        let _ = to_caller.try_send(buf); // recycle; dropped if the caller has enough
    }
    Ok(())
}

/// Turn `O_DIRECT` on or off for `file`'s open file description.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ask the kernel to start writing a range back, without waiting for it.
fn start_writeback(file: &File, from: u64, len: u64) {
    let fd = file.as_raw_fd();
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
    use std::io::{Read, Seek};

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn read_back(mut file: File) -> Vec<u8> {
        let mut back = Vec::new();
        file.seek(io::SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        back
    }

    fn disk_file() -> File {
        tempfile::tempfile().unwrap()
    }

    #[test]
    fn bytes_arrive_in_order_across_buffers() {
        for direct in [true, false] {
            for len in [0, 1, 4095, 4097, BUFFER, 3 * BUFFER + 12345, 9 * BUFFER] {
                let want = data(len);
                let mut pipe = PipedFile::with_direct(disk_file(), direct).unwrap();
                for chunk in want.chunks(70_001) {
                    pipe.write_all(chunk).unwrap();
                }
                let got = read_back(pipe.finish().unwrap());
                assert!(got == want, "direct {direct}, {len} bytes");
            }
        }
    }

    /// Hands out at most 65537 bytes per read, as sockets and archives may.
    struct OddReads<'a>(&'a [u8]);

    impl Read for OddReads<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(65_537);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn read_from_sees_every_byte_once() {
        for direct in [true, false] {
            for len in [0, 4096, BUFFER - 1, 5 * BUFFER + 7] {
                let want = data(len);
                let mut pipe = PipedFile::with_direct(disk_file(), direct).unwrap();
                let mut seen = Vec::new();
                let mut reader = OddReads(&want[..]);
                while pipe
                    .read_from(&mut reader, |d| seen.extend_from_slice(d))
                    .unwrap()
                    > 0
                {}
                assert!(seen == want, "direct {direct}, {len} bytes seen");
                let got = read_back(pipe.finish().unwrap());
                assert!(got == want, "direct {direct}, {len} bytes written");
            }
        }
    }
}
