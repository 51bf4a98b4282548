//! Validating names of entries in archives: relative, no `..`, no games.

use crate::blob::BlobInfo;
use crate::error::{Result, StoreError};
use crate::{Digest, Store};
use cairn_layer::limits::{ExtractLimits, LimitKind};
use cairn_layer::meter::Meter;
use std::io::Read;
use std::path::{Component, Path};

/// Walk the entries of an archive from outside under `limits`: extension
/// headers bounded while the tar reader looks for the next entry, the entry
/// count and the sum of entry sizes checked before an entry is handled,
/// each entry's unread data drained outside the header budget.
pub(crate) fn for_each_entry<R: Read>(
    reader: R,
    limits: &ExtractLimits,
    source_name: &str,
    mut handle: impl FnMut(&mut tar::Entry<'_, crate::transport::tar_entry::Metered<R>>) -> Result<()>,
) -> Result<()> {
    let bad = |reason: String| StoreError::BadSource {
        source_name: source_name.to_string(),
        reason,
    };
    let meter = Meter::default();
    let mut archive = tar::Archive::new(Metered {
        inner: reader,
        meter: meter.clone(),
    });
    let mut entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    let (mut count, mut total) = (0u64, 0u64);
    loop {
        meter.arm(limits.max_header_size);
        let next = entries.next();
        meter.disarm();
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(|e| match limits.max_header_size {
            Some(limit) if meter.tripped() => {
                limit_error(source_name, LimitKind::HeaderSize, limit)
            }
            _ => bad(format!("reading the archive: {e}")),
        })?;
        count += 1;
        total = total.saturating_add(entry.size());
        if let Some(limit) = limits.max_entries.filter(|l| count > *l) {
            return Err(limit_error(source_name, LimitKind::Entries, limit));
        }
        if let Some(limit) = limits.max_size.filter(|l| total > *l) {
            return Err(limit_error(source_name, LimitKind::Size, limit));
        }
        handle(&mut entry)?;
        std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| bad(format!("reading the archive: {e}")))?;
    }
    Ok(())
}

fn limit_error(source_name: &str, kind: LimitKind, limit: u64) -> StoreError {
    StoreError::ArchiveLimit {
        source_name: source_name.to_string(),
        exceeded: cairn_layer::LimitExceeded {
            kind,
            limit,
            entry: None,
        },
    }
}

/// An archive reader whose reads draw on a [`Meter`] (owned, unlike the
/// layer crate's borrowed one, so the archive can own it).
pub(crate) struct Metered<R> {
    inner: R,
    meter: Meter,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.meter.reader(&mut self.inner).read(buf)
    }
}

/// The entry's path as a clean relative `a/b/c` string (`""` for the archive
/// root, `./`), or `None` if it is absolute or climbs out with `..`.
pub(crate) fn clean(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir => {}
            // `..` may step back inside the archive (`id3/../id1/layer.tar`), never out.
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Stream one archive entry into the store as a blob. With `expected`, the
/// digest (from the entry's name) is verified, and an existing blob is
/// skipped without reading. A short entry (truncated archive) is an error.
pub(crate) fn ingest_entry<R: Read>(
    store: &Store,
    entry: &mut tar::Entry<'_, R>,
    expected: Option<Digest>,
    source_name: &str,
    name: &str,
) -> Result<BlobInfo> {
    let size = entry.size();
    if let Some(d) = expected {
        if store.blob_size(&d).ok() == Some(size) {
            return Ok(BlobInfo { digest: d, size });
        }
    }
    let mut w = store.blob_writer()?;
    let copied = w.copy_from(entry).map_err(|e| StoreError::BadSource {
        source_name: source_name.to_string(),
        reason: format!("reading {name}: {e}"),
    })?;
    if copied != size {
        return Err(StoreError::BadSource {
            source_name: source_name.to_string(),
            reason: format!(
                "{name} ends after {copied} of its {size} bytes: the archive is truncated"
            ),
        });
    }
    w.commit(expected.map(|d| (d, size)))
}

/// Read a small entry (index.json, manifest.json) into memory.
pub(crate) fn read_small<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    source_name: &str,
    name: &str,
) -> Result<Vec<u8>> {
    let bad = |reason: String| StoreError::BadSource {
        source_name: source_name.to_string(),
        reason,
    };
    let size = entry.size();
    if size > crate::blob::MAX_JSON_BLOB {
        return Err(bad(format!("{name} is {size} bytes, too large")));
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut buf)
        .map_err(|e| bad(format!("reading {name}: {e}")))?;
    if buf.len() as u64 != size {
        return Err(bad(format!(
            "{name} is cut short: the archive is truncated"
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            clean(Path::new("./blobs/sha256/ab")).as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(clean(Path::new("../etc/passwd")), None);
        assert_eq!(clean(Path::new("/abs")), None);
        assert_eq!(clean(Path::new("a/../../b")), None);
        assert_eq!(
            clean(Path::new("id3/../id1/layer.tar")).as_deref(),
            Some("id1/layer.tar")
        );
        assert_eq!(clean(Path::new("./")).as_deref(), Some(""));
    }
}
