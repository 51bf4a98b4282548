//! The walk shared by every transport: a manifest and everything it names,
//! children before parents, so a manifest is recorded only after its blobs.

use crate::error::{Result, StoreError};
use crate::image::{parse_manifest, BlobRef, ManifestKind};
use crate::{Digest, Store};

/// Where an import gets blobs from.
pub(crate) trait BlobSource {
    /// Make sure the blob is in the store, verified against digest and size.
    fn ensure(&mut self, store: &Store, blob: &BlobRef) -> Result<()>;
}

/// Blobs an archive pass already streamed into the store: only check they came.
pub(crate) struct AlreadyIngested {
    pub source_name: String,
}

impl BlobSource for AlreadyIngested {
    fn ensure(&mut self, store: &Store, blob: &BlobRef) -> Result<()> {
        match store.blob_size(&blob.digest) {
            Ok(size) if size == blob.size => Ok(()),
            Ok(size) => Err(StoreError::BadSource {
                source_name: self.source_name.clone(),
                reason: format!(
                    "blob {} is {size} bytes, its descriptor says {}",
                    blob.digest, blob.size
                ),
            }),
            Err(StoreError::BlobMissing(d)) => Err(StoreError::BadSource {
                source_name: self.source_name.clone(),
                reason: format!(
                    "blob {d} is named but not in the archive (truncated or incomplete?)"
                ),
            }),
            Err(e) => Err(e),
        }
    }
}

/// Bring in the manifest `desc` and, first, everything it names; then record it.
pub(crate) fn import_manifest(
    store: &Store,
    src: &mut dyn BlobSource,
    desc: &BlobRef,
) -> Result<Digest> {
    import_manifest_depth(store, src, desc, 0)
}

fn import_manifest_depth(
    store: &Store,
    src: &mut dyn BlobSource,
    desc: &BlobRef,
    depth: usize,
) -> Result<Digest> {
    if depth > 4 {
        return Err(StoreError::BadManifest {
            digest: desc.digest,
            reason: "indexes nested more than 4 deep".into(),
        });
    }
    src.ensure(store, desc)?;
    let bytes = store.read_blob_bytes(&desc.digest)?;
    let parsed = parse_manifest(&bytes, Some(&desc.media_type))?;
    match parsed.kind {
        ManifestKind::Image => {
            for b in parsed.config.iter().chain(&parsed.children) {
                src.ensure(store, b)?;
            }
        }
        ManifestKind::Index => {
            for child in &parsed.children {
                import_manifest_depth(store, src, child, depth + 1)?;
            }
        }
    }
    store.record_manifest(&bytes, Some(&desc.media_type))?;
    Ok(parsed.digest)
}

/// Every blob of a recorded image, each once: children first, the top
/// manifest last.
pub(crate) fn closure(store: &Store, digest: &Digest) -> Result<Vec<BlobRef>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    closure_into(store, digest, &mut out, &mut seen, 0)?;
    Ok(out)
}

fn closure_into(
    store: &Store,
    digest: &Digest,
    out: &mut Vec<BlobRef>,
    seen: &mut std::collections::HashSet<Digest>,
    depth: usize,
) -> Result<()> {
    if depth > 4 || !seen.insert(*digest) {
        return Ok(());
    }
    let (bytes, parsed) = store.manifest(digest)?;
    match parsed.kind {
        ManifestKind::Image => {
            for b in parsed.config.iter().chain(&parsed.children) {
                if seen.insert(b.digest) {
                    out.push(b.clone());
                }
            }
        }
        ManifestKind::Index => {
            for child in &parsed.children {
                closure_into(store, &child.digest, out, seen, depth + 1)?;
            }
        }
    }
    out.push(BlobRef {
        digest: *digest,
        media_type: parsed.media_type,
        size: bytes.len() as u64,
    });
    Ok(())
}
