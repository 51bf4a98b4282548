//! The deterministic tar writer: ustar headers, PAX records where ustar cannot
//! say it (long names and links, big sizes and IDs, xattrs), no uname/gname,
//! no atime/ctime, mtimes clamped.

use crate::capture::{Entry, Kind};
use crate::error::LayerError;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use tar::{EntryType, Header};

/// The largest value an 8-byte octal ustar field holds.
const MAX_OCTAL_ID: u64 = 0o7777777;
/// The largest value the 12-byte octal size field holds.
const MAX_OCTAL_SIZE: u64 = 0o77777777777;
const COPY_BUFFER: usize = 256 * 1024;

/// Write all entries and the end-of-archive blocks; returns the inner writer.
pub(crate) fn write_tar<W: Write>(
    entries: &[Entry],
    timestamp: Option<i64>,
    out: W,
) -> Result<W, LayerError> {
    let mut builder = tar::Builder::new(out);
    for entry in entries {
        write_entry(&mut builder, entry, timestamp)?;
    }
    builder.into_inner().map_err(LayerError::Sink)
}

/// Split a path into ustar (prefix, name), if it fits.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    // The prefix must end at a '/', be at most 155 bytes, and leave at most 100.
    let lowest = path.len().saturating_sub(101);
    path.iter()
        .enumerate()
        .skip(lowest)
        .take_while(|(i, _)| *i <= 155)
        .find(|(i, &b)| b == b'/' && path.len() - i - 1 <= 100 && *i > 0 && *i + 1 < path.len())
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
}

fn write_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &Entry,
    timestamp: Option<i64>,
) -> Result<(), LayerError> {
    let mut name = entry.path.clone();
    if entry.kind == Kind::Dir {
        name.push(b'/');
    }
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut header = Header::new_ustar();

    match ustar_split(&name) {
        Some((prefix, base)) => {
            let ustar = header
                .as_ustar_mut()
                .ok_or_else(|| sink_bug("ustar header"))?;
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            ustar.name[..base.len()].copy_from_slice(base);
        }
        None => {
            pax.push(("path".into(), name.clone()));
            let short = &name[..100.min(name.len())];
            header.as_old_mut().name[..short.len()].copy_from_slice(short);
        }
    }

    let (entry_type, size, link) = match &entry.kind {
        Kind::Dir => (EntryType::Directory, 0, None),
        Kind::File { size, .. } => (EntryType::Regular, *size, None),
        Kind::Marker => (EntryType::Regular, 0, None),
        Kind::Symlink(t) => (EntryType::Symlink, 0, Some(t)),
        Kind::HardLink(t) => (EntryType::Link, 0, Some(t)),
        Kind::Fifo => (EntryType::Fifo, 0, None),
        Kind::Char { .. } => (EntryType::Char, 0, None),
        Kind::Block { .. } => (EntryType::Block, 0, None),
    };
    header.set_entry_type(entry_type);
    if let Some(target) = link {
        if target.len() <= 100 {
            header.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        } else {
            pax.push(("linkpath".into(), target.clone()));
        }
    }
    if size > MAX_OCTAL_SIZE {
        pax.push(("size".into(), size.to_string().into_bytes()));
        header.set_size(0);
    } else {
        header.set_size(size);
    }
    for (key, id, set) in [
        ("uid", entry.uid, Header::set_uid as fn(&mut Header, u64)),
        ("gid", entry.gid, Header::set_gid as fn(&mut Header, u64)),
    ] {
        if u64::from(id) > MAX_OCTAL_ID {
            pax.push((key.into(), id.to_string().into_bytes()));
            set(&mut header, 0);
        } else {
            set(&mut header, u64::from(id));
        }
    }
    header.set_mode(entry.mode & 0o7777);
    let mtime = match timestamp {
        Some(ts) => entry.mtime.min(ts),
        None => entry.mtime,
    };
    // Pre-1970 times are recorded as the epoch: ustar has no sign.
    header.set_mtime(mtime.max(0) as u64);
    if let Kind::Char { major, minor } | Kind::Block { major, minor } = entry.kind {
        header.set_device_major(major).map_err(LayerError::Sink)?;
        header.set_device_minor(minor).map_err(LayerError::Sink)?;
    } else {
        header.set_device_major(0).map_err(LayerError::Sink)?;
        header.set_device_minor(0).map_err(LayerError::Sink)?;
    }
    for (k, v) in &entry.xattrs {
        pax.push((
            format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)),
            v.clone(),
        ));
    }
    header.set_cksum();

    if !pax.is_empty() {
        builder
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(LayerError::Sink)?;
    }
    match &entry.kind {
        Kind::File { source, size } if *size > 0 => append_file(builder, &header, source, *size),
        _ => builder
            .append(&header, io::empty())
            .map_err(LayerError::Sink),
    }
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &Header,
    source: &std::path::Path,
    size: u64,
) -> Result<(), LayerError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(source)
        .map_err(|e| LayerError::source_io(source, e))?;
    let mut reader = BufReader::with_capacity(
        COPY_BUFFER.min(size as usize + 1),
        ReadErr {
            inner: file.take(size),
            error: None,
        },
    );
    let res = builder.append(header, &mut reader);
    let inner = reader.into_inner();
    // A read error is the source's fault, not the sink's: report it as such.
    if let Some(e) = inner.error {
        return Err(LayerError::source_io(source, e));
    }
    res.map_err(LayerError::Sink)?;
    let read = size - inner.inner.limit();
    if read != size {
        return Err(LayerError::ChangedDuringCapture {
            path: source.to_path_buf(),
            expected: size,
            read,
        });
    }
    Ok(())
}

/// Remembers a read error so it can be told apart from a write error.
struct ReadErr<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: Read> Read for ReadErr<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let kind = e.kind();
            self.error = Some(e);
            io::Error::from(kind)
        })
    }
}

fn sink_bug(what: &str) -> LayerError {
    LayerError::Sink(io::Error::other(format!("internal: {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_split_rules() {
        assert_eq!(ustar_split(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let long = [vec![b'd'; 120], b"/".to_vec(), vec![b'f'; 50]].concat();
        assert_eq!(
            ustar_split(&long).map(|(p, n)| (p.len(), n.len())),
            Some((120, 50))
        );
        let no_slash = vec![b'x'; 150];
        assert_eq!(ustar_split(&no_slash), None);
        let too_long = [vec![b'd'; 160], b"/".to_vec(), vec![b'f'; 50]].concat();
        assert_eq!(ustar_split(&too_long), None);
    }
}
