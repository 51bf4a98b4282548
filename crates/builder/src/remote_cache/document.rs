//! The cache manifest's config document: cache key -> the layer a step made
//! and what a local cache entry needs to reuse it (diff id, media type, size,
//! the time the layer was made, its history text).
//!
//! Entries are sorted by key and layers by digest, so the same build
//! exports the same bytes and an unchanged re-export is one HEAD.
//! Everything read back is checked: an entry that is not well formed, or
//! names a layer its manifest does not list, is dropped (with a warning).

use cairn_layer::Digest;
use cairn_store::image::BlobRef;
use serde::{Deserialize, Serialize};

/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.cairn.build-cache.v1";
/// The media type of the config document.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cairn.build-cache.config.v1+json";
const VERSION: u32 = 1;

/// The layer media types an entry may name.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    entries: Vec<Entry>,
}

/// One step of a build and the layer it made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub layer: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
    /// RFC 3339: when the layer was first made (the image's created time
    /// comes from it when the step is reused, so digests carry over).
    pub created: String,
    pub created_by: String,
}

impl Entry {
    pub fn blob(&self) -> BlobRef {
        BlobRef {
            digest: self.layer,
            media_type: self.media_type.clone(),
            size: self.size,
        }
    }

    /// Why this entry cannot be used, if it cannot.
    fn defect(&self, layers: &[BlobRef]) -> Option<String> {
        if self.key.len() != 64 || !self.key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some("the key is not a sha256 hex string".into());
        }
        if !LAYER_TYPES.contains(&self.media_type.as_str()) {
            return Some(format!("layer media type {:?}", self.media_type));
        }
        if humantime::parse_rfc3339(&self.created).is_err() {
            return Some(format!("created {:?} is not RFC 3339", self.created));
        }
        if !layers.contains(&self.blob()) {
            return Some(format!("layer {} is not in the manifest", self.layer));
        }
        None
    }
}

/// The document and the layer list of `entries` (sorted, deduplicated).
pub fn encode(mut entries: Vec<Entry>) -> (Vec<u8>, Vec<BlobRef>) {
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    entries.dedup_by(|a, b| a.key == b.key);
    let mut layers: Vec<BlobRef> = entries.iter().map(Entry::blob).collect();
    layers.sort_by_key(|l| l.digest.to_string());
    layers.dedup_by(|a, b| a.digest == b.digest);
    let doc = Document {
        version: VERSION,
        entries,
    };
    // Plain strings and numbers always serialise.
    (serde_json::to_vec(&doc).unwrap_or_default(), layers)
}

/// The usable entries of a fetched document, and what was wrong with the rest.
pub fn decode(config: &[u8], layers: &[BlobRef]) -> Result<(Vec<Entry>, Vec<String>), String> {
    let doc: Document =
        serde_json::from_slice(config).map_err(|e| format!("not a cache document: {e}"))?;
    if doc.version != VERSION {
        return Err(format!(
            "cache document version {} (expected {VERSION})",
            doc.version
        ));
    }
    let mut good = Vec::new();
    let mut dropped = Vec::new();
    for entry in doc.entries {
        match entry.defect(layers) {
            None => good.push(entry),
            Some(why) => dropped.push(format!("entry {:.12}: {why}", entry.key)),
        }
    }
    Ok((good, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: char, layer: &[u8]) -> Entry {
        Entry {
            key: key.to_string().repeat(64),
            layer: Digest::of(layer),
            diff_id: Digest::of(b"diff"),
            media_type: LAYER_TYPES[1].into(),
            size: layer.len() as u64,
            created: "2026-12-05T07:00:00Z".into(),
            created_by: "RUN x".into(),
        }
    }

    #[test]
    fn same_entries_same_bytes_and_bad_ones_are_dropped() {
        let (a, layers) = encode(vec![entry('b', b"2"), entry('a', b"1"), entry('c', b"1")]);
        let (b, _) = encode(vec![entry('c', b"1"), entry('a', b"1"), entry('b', b"2")]);
        assert_eq!(a, b);
        assert_eq!(layers.len(), 2);
        let (good, dropped) = decode(&a, &layers).unwrap();
        assert_eq!(good.len(), 3);
        assert!(dropped.is_empty());
        // A layer the manifest does not list, a bad time, a bad key.
        let (good, dropped) = decode(&a, &layers[..1]).unwrap();
        assert_eq!(good.len() + dropped.len(), 3);
        assert!(!dropped.is_empty());
        let mut bad = entry('d', b"1");
        bad.created = "yesterday".into();
        let mut bad_key = entry('e', b"1");
        bad_key.key = "../x".into();
        let (doc, layers) = encode(vec![bad, bad_key]);
        let (good, dropped) = decode(&doc, &layers).unwrap();
        assert!(good.is_empty() && dropped.len() == 2, "{dropped:?}");
        assert!(decode(b"<html>", &layers).is_err());
    }
}
