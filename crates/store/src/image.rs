//! Images: manifests (OCI and Docker schema 2, single or index/list) recorded
//! in meta.db with what they name, and tags pointing at them.
//!
//! The invariant: a manifest is recorded only after every blob it names is in
//! the store (and so complete and verified), and a tag only names a recorded
//! manifest. Both are checked here, not left to callers.

use crate::error::{Result, StoreError};
use crate::image_config::{layer_diff_ids, DiffIdError, ImageConfig};
use crate::reference::ImageRef;
use crate::{index_json, now_rfc3339, Digest, Store};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use rusqlite::{params, OptionalExtension};
use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The OCI media type of a layer named by a Docker (or OCI) media type.
pub fn oci_layer_media_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        other => other,
    }
}

/// A single-platform image manifest, or an index / manifest list of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// A reference from a manifest to a blob it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A parsed manifest: what it is and what it names.
#[derive(Clone, Debug)]
pub struct ParsedManifest {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub kind: ManifestKind,
    /// Image: the config. Index: none.
    pub config: Option<BlobRef>,
    /// Image: the layers, in order. Index: the child manifests.
    pub children: Vec<BlobRef>,
}

/// A recorded image, as `cairn images` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageRecord {
    pub names: Vec<String>,
    pub digest: Digest,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Bytes of config + layers as stored (for an index, of its children).
    pub size: u64,
    /// RFC 3339: from the config, else when the store recorded it.
    pub created: String,
}

/// An image read through [`Store::image`].
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: ParsedManifest,
    /// The config blob.
    pub config_ref: BlobRef,
    pub config: ImageConfig,
    /// Lowest first.
    pub layers: Vec<ImageLayer>,
}

/// One layer of an [`Image`]: its blob and the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageLayer {
    pub blob: BlobRef,
    pub diff_id: Digest,
}

impl Image {
    /// The layers' diff ids, lowest first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id).collect()
    }

    /// The layers' blobs, lowest first.
    pub fn blobs(&self) -> Vec<BlobRef> {
        self.layers.iter().map(|l| l.blob.clone()).collect()
    }
}

/// The parts of an image config the store needs. Deliberately not
/// oci-spec's `ImageConfiguration`: that one requires `architecture`/`os`,
/// and the store must record any well-formed image whatever its config says.
#[derive(Deserialize, Default)]
struct ConfigView {
    created: Option<String>,
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn blob_ref(manifest: &Digest, d: &Descriptor) -> Result<BlobRef> {
    let digest: Digest = d
        .digest()
        .to_string()
        .parse()
        .map_err(|_| StoreError::BadManifest {
            digest: *manifest,
            reason: format!("names {}, which is not a sha256 digest", d.digest()),
        })?;
    Ok(BlobRef {
        digest,
        media_type: d.media_type().to_string(),
        size: d.size(),
    })
}

/// Parse manifest bytes. `hint` is the media type the referring descriptor gave.
pub fn parse_manifest(bytes: &[u8], hint: Option<&str>) -> Result<ParsedManifest> {
    let digest = Digest::of(bytes);
    let bad = |reason: String| StoreError::BadManifest { digest, reason };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let declared = v.get("mediaType").and_then(|m| m.as_str());
    let media_type = declared.or(hint).map(str::to_string).unwrap_or_else(|| {
        if v.get("manifests").is_some() {
            OCI_INDEX.to_string()
        } else {
            OCI_MANIFEST.to_string()
        }
    });
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Image,
        OCI_INDEX | DOCKER_LIST => ManifestKind::Index,
        other => return Err(bad(format!("unsupported manifest media type {other}"))),
    };
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err(bad("schemaVersion is not 2".into()));
    }
    match kind {
        ManifestKind::Image => {
            let m = ImageManifest::from_reader(bytes)
                .map_err(|e| bad(format!("not an image manifest: {e}")))?;
            Ok(ParsedManifest {
                digest,
                size: bytes.len() as u64,
                media_type,
                kind,
                config: Some(blob_ref(&digest, m.config())?),
                children: m
                    .layers()
                    .iter()
                    .map(|l| blob_ref(&digest, l))
                    .collect::<Result<_>>()?,
            })
        }
        ManifestKind::Index => {
            let i = ImageIndex::from_reader(bytes)
                .map_err(|e| bad(format!("not an image index: {e}")))?;
            Ok(ParsedManifest {
                digest,
                size: bytes.len() as u64,
                media_type,
                kind,
                config: None,
                children: i
                    .manifests()
                    .iter()
                    .map(|l| blob_ref(&digest, l))
                    .collect::<Result<_>>()?,
            })
        }
    }
}

impl Store {
    /// Store `config` and an OCI manifest naming it and `layers` (whose blobs
    /// must be in the store), and record the image. Docker layer media types
    /// become their OCI equivalents. Returns the manifest digest.
    pub fn record_oci_image(&self, config: &[u8], layers: &[BlobRef]) -> Result<Digest> {
        let config = self.ingest_bytes(config, None)?;
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": oci_layer_media_type(&l.media_type),
                    "digest": l.digest,
                    "size": l.size,
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| StoreError::BadManifest {
            digest: config.digest,
            reason: format!("cannot encode the manifest: {e}"),
        })?;
        Ok(self.record_manifest(&bytes, Some(OCI_MANIFEST))?.digest)
    }

    /// Record an image from a typed config (in the bytes Cairn writes, see
    /// [`ImageConfig::to_bytes`]) and `layers`: the one way builds, sandbox
    /// commits and snapshots record the images they make.
    pub fn record_image(&self, config: &ImageConfig, layers: &[BlobRef]) -> Result<Digest> {
        let bytes = config.to_bytes().map_err(|source| StoreError::Json {
            what: "image config".into(),
            source,
        })?;
        self.record_oci_image(&bytes, layers)
    }

    /// Record a manifest whose blobs are all in the store: store its bytes as a
    /// blob and its references in meta.db. For an index, every child manifest
    /// must have been recorded first. Recording the same manifest twice is a no-op.
    pub fn record_manifest(&self, bytes: &[u8], hint: Option<&str>) -> Result<ParsedManifest> {
        let parsed = parse_manifest(bytes, hint)?;
        let mut created = None;
        let mut diff_ids = Vec::new();
        let mut total: u64 = 0;
        match parsed.kind {
            ManifestKind::Image => {
                let config = parsed
                    .config
                    .as_ref()
                    .ok_or_else(|| StoreError::BadManifest {
                        digest: parsed.digest,
                        reason: "no config".into(),
                    })?;
                for r in std::iter::once(config).chain(&parsed.children) {
                    self.check_child_blob(&parsed.digest, r)?;
                    total += r.size;
                }
                let config_bytes = self.read_blob_bytes(&config.digest)?;
                // A config that is not an image config (an artifact) is fine:
                // it just has no created time and no diff ids.
                let view: ConfigView = serde_json::from_slice(&config_bytes).unwrap_or_default();
                created = view.created;
                let ids = view.rootfs.map(|r| r.diff_ids).unwrap_or_default();
                match layer_diff_ids(&ids, parsed.children.len()) {
                    Ok(ids) => diff_ids = ids,
                    Err(DiffIdError::Count { .. }) => {}
                    Err(source) => {
                        return Err(StoreError::DiffIds {
                            manifest: parsed.digest,
                            source,
                        })
                    }
                }
            }
            ManifestKind::Index => {
                for child in &parsed.children {
                    match self.manifest_total_size(&child.digest)? {
                        Some(size) => total += size,
                        None => {
                            return Err(StoreError::ManifestChildMissing {
                                manifest: parsed.digest,
                                child: child.digest,
                            })
                        }
                    }
                }
            }
        }
        self.ingest_bytes(bytes, Some((parsed.digest, parsed.size)))?;

        let db_err = self.db_err();
        let mut conn = self.db();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&db_err)?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO manifests(digest, media_type, size, config, created, total_size, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    parsed.digest.to_string(),
                    parsed.media_type,
                    parsed.size as i64,
                    parsed.config.as_ref().map(|c| c.digest.to_string()),
                    created,
                    total as i64,
                    now_rfc3339(),
                ],
            )
            .map_err(&db_err)?;
        if inserted == 1 {
            let mut add = tx
                .prepare(
                    "INSERT INTO manifest_refs(manifest, kind, position, digest, media_type, size)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(&db_err)?;
            let m = parsed.digest.to_string();
            if let Some(c) = &parsed.config {
                add.execute(params![
                    m,
                    "config",
                    0,
                    c.digest.to_string(),
                    c.media_type,
                    c.size as i64
                ])
                .map_err(&db_err)?;
            }
            let child_kind = match parsed.kind {
                ManifestKind::Image => "layer",
                ManifestKind::Index => "manifest",
            };
            for (i, c) in parsed.children.iter().enumerate() {
                add.execute(params![
                    m,
                    child_kind,
                    i as i64,
                    c.digest.to_string(),
                    c.media_type,
                    c.size as i64
                ])
                .map_err(&db_err)?;
            }
            let mut layer = tx
                .prepare("INSERT OR IGNORE INTO layers(digest, diff_id) VALUES (?1, ?2)")
                .map_err(&db_err)?;
            for (l, id) in parsed.children.iter().zip(&diff_ids) {
                layer
                    .execute(params![l.digest.to_string(), id.to_string()])
                    .map_err(&db_err)?;
            }
        }
        tx.commit().map_err(&db_err)?;
        Ok(parsed)
    }

    fn check_child_blob(&self, manifest: &Digest, r: &BlobRef) -> Result<()> {
        match self.blob_size(&r.digest) {
            Ok(size) if size == r.size => Ok(()),
            Ok(size) => Err(StoreError::BadManifest {
                digest: *manifest,
                reason: format!(
                    "names {} with size {}, but that blob is {size} bytes",
                    r.digest, r.size
                ),
            }),
            Err(StoreError::BlobMissing(_)) => Err(StoreError::ManifestChildMissing {
                manifest: *manifest,
                child: r.digest,
            }),
            Err(e) => Err(e),
        }
    }

    fn manifest_total_size(&self, digest: &Digest) -> Result<Option<u64>> {
        self.db()
            .query_row(
                "SELECT total_size FROM manifests WHERE digest = ?1",
                [digest.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|o| o.map(|v| v as u64))
            .map_err(self.db_err())
    }

    /// Is this manifest recorded?
    pub fn has_manifest(&self, digest: &Digest) -> Result<bool> {
        Ok(self.manifest_total_size(digest)?.is_some())
    }

    /// A recorded manifest's media type.
    pub fn manifest_media_type(&self, digest: &Digest) -> Result<String> {
        self.db()
            .query_row(
                "SELECT media_type FROM manifests WHERE digest = ?1",
                [digest.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db_err())?
            .ok_or_else(|| StoreError::UnknownImage(digest.to_string()))
    }

    /// Read and parse a recorded manifest.
    pub fn manifest(&self, digest: &Digest) -> Result<(Vec<u8>, ParsedManifest)> {
        let media_type = self.manifest_media_type(digest)?;
        let bytes = self.read_blob_bytes(digest)?;
        let parsed = parse_manifest(&bytes, Some(&media_type))?;
        Ok((bytes, parsed))
    }

    /// The image `manifest` names, as its producers use it: its typed
    /// config and each layer with its diff id. The one reading of manifest
    /// -> config -> diff ids (builds, sandboxes, snapshots); an index, a
    /// config that does not parse, or diff ids that do not name the layers
    /// one for one are typed errors.
    pub fn image(&self, manifest: &Digest) -> Result<Image> {
        let (_, parsed) = self.manifest(manifest)?;
        if parsed.kind != ManifestKind::Image {
            return Err(StoreError::NotAnImage(*manifest));
        }
        let config_ref = parsed.config.clone().ok_or(StoreError::BadManifest {
            digest: *manifest,
            reason: "no config".into(),
        })?;
        let config =
            ImageConfig::from_slice(&self.read_blob_bytes(&config_ref.digest)?).map_err(|e| {
                StoreError::BadImageConfig {
                    manifest: *manifest,
                    config: config_ref.digest,
                    reason: e.to_string(),
                }
            })?;
        let diff_ids = config
            .layer_diff_ids(parsed.children.len())
            .map_err(|source| StoreError::DiffIds {
                manifest: *manifest,
                source,
            })?;
        let layers = parsed
            .children
            .iter()
            .zip(diff_ids)
            .map(|(blob, diff_id)| ImageLayer {
                blob: blob.clone(),
                diff_id,
            })
            .collect();
        Ok(Image {
            manifest: parsed,
            config_ref,
            config,
            layers,
        })
    }

    /// The layer blob -> diff id mapping recorded from configs.
    pub fn diff_id_of(&self, layer: &Digest) -> Result<Option<Digest>> {
        let id: Option<String> = self
            .db()
            .query_row(
                "SELECT diff_id FROM layers WHERE digest = ?1",
                [layer.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db_err())?;
        Ok(id.and_then(|s| s.parse().ok()))
    }

    /// Point `name` at a recorded manifest (replacing what it named).
    pub fn tag(&self, name: &ImageRef, manifest: &Digest) -> Result<()> {
        self.tag_many(&[(name.clone(), *manifest)])
    }

    /// Set several tags in one transaction (and one index.json rewrite).
    pub fn tag_many(&self, tags: &[(ImageRef, Digest)]) -> Result<()> {
        for (name, _) in tags {
            if name.tag().is_none() {
                return Err(StoreError::BadReference {
                    input: name.to_string(),
                    reason: "a tag name needs a tag, not only a digest".into(),
                });
            }
        }
        let db_err = self.db_err();
        let mut conn = self.db();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&db_err)?;
        for (name, manifest) in tags {
            let known: bool = tx
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM manifests WHERE digest = ?1)",
                    [manifest.to_string()],
                    |r| r.get(0),
                )
                .map_err(&db_err)?;
            if !known {
                return Err(StoreError::UnknownImage(manifest.to_string()));
            }
            tx.execute(
                "INSERT INTO tags(name, manifest, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET manifest = excluded.manifest, updated_at = excluded.updated_at",
                params![name.to_string(), manifest.to_string(), now_rfc3339()],
            )
            .map_err(&db_err)?;
        }
        index_json::rewrite(self, &tx)?;
        tx.commit().map_err(&db_err)
    }

    /// Remove a tag. `UnknownImage` if there is no such tag.
    pub fn untag(&self, name: &ImageRef) -> Result<Digest> {
        let db_err = self.db_err();
        let mut conn = self.db();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&db_err)?;
        let manifest: Option<String> = tx
            .query_row(
                "DELETE FROM tags WHERE name = ?1 RETURNING manifest",
                [name.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(&db_err)?;
        let Some(manifest) = manifest else {
            return Err(StoreError::UnknownImage(name.to_string()));
        };
        index_json::rewrite(self, &tx)?;
        tx.commit().map_err(&db_err)?;
        manifest.parse().map_err(|_| {
            StoreError::UnknownImage(format!("{name} pointed at a bad digest {manifest}"))
        })
    }

    /// Remove every tag naming `manifest`; returns the names removed.
    pub fn untag_manifest(&self, manifest: &Digest) -> Result<Vec<String>> {
        let db_err = self.db_err();
        let mut conn = self.db();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&db_err)?;
        let names: Vec<String> = {
            let mut stmt = tx
                .prepare("DELETE FROM tags WHERE manifest = ?1 RETURNING name")
                .map_err(&db_err)?;
            let rows = stmt
                .query_map([manifest.to_string()], |r| r.get(0))
                .map_err(&db_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(&db_err)?
        };
        if names.is_empty() {
            return Err(StoreError::UnknownImage(manifest.to_string()));
        }
        index_json::rewrite(self, &tx)?;
        tx.commit().map_err(&db_err)?;
        Ok(names)
    }

    /// The manifest a tag names, if any (one indexed lookup).
    pub fn lookup_tag(&self, name: &ImageRef) -> Result<Option<Digest>> {
        let s: Option<String> = self
            .db()
            .prepare_cached("SELECT manifest FROM tags WHERE name = ?1")
            .and_then(|mut st| st.query_row([name.to_string()], |r| r.get(0)).optional())
            .map_err(self.db_err())?;
        Ok(s.and_then(|s| s.parse().ok()))
    }

    /// Resolve what a user typed (`busybox`, `name@sha256:...`, `sha256:...`)
    /// to a recorded manifest.
    pub fn resolve(&self, input: &str) -> Result<Digest> {
        if let Ok(d) = input.parse::<Digest>() {
            return if self.has_manifest(&d)? {
                Ok(d)
            } else {
                Err(StoreError::UnknownImage(input.to_string()))
            };
        }
        let r = ImageRef::parse(input)?;
        if let Some(d) = r.digest() {
            return if self.has_manifest(&d)? {
                Ok(d)
            } else {
                Err(StoreError::UnknownImage(input.to_string()))
            };
        }
        self.lookup_tag(&r)?
            .ok_or_else(|| StoreError::UnknownImage(r.to_string()))
    }

    /// Every image: tagged ones, and untagged ones that are not an index's child.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let db_err = self.db_err();
        let conn = self.db();
        let mut stmt = conn
            .prepare(
                "SELECT m.digest, m.media_type, m.total_size, COALESCE(m.created, m.recorded_at),
                        (SELECT group_concat(name, char(10)) FROM (SELECT name FROM tags WHERE manifest = m.digest ORDER BY name))
                 FROM manifests m
                 WHERE EXISTS(SELECT 1 FROM tags t WHERE t.manifest = m.digest)
                    OR NOT EXISTS(SELECT 1 FROM manifest_refs r WHERE r.kind = 'manifest' AND r.digest = m.digest)
                 ORDER BY m.recorded_at DESC, m.digest",
            )
            .map_err(&db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(&db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (digest, media_type, size, created, names) = row.map_err(&db_err)?;
            let Ok(digest) = digest.parse() else { continue };
            out.push(ImageRecord {
                names: names
                    .map(|n| n.split('\n').map(str::to_string).collect())
                    .unwrap_or_default(),
                digest,
                media_type,
                size: size as u64,
                created,
            });
        }
        Ok(out)
    }
}
