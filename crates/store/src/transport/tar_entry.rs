//! Validating names of entries in archives: relative, no `..`, no games.

use crate::blob::BlobInfo;
use crate::error::{Result, StoreError};
use crate::{Digest, Store};
use std::io::Read;
use std::path::{Component, Path};

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
