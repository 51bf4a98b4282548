//! The store's error type: every variant names the thing it is about.

use cairn_layer::digest::Digest;
use std::path::PathBuf;

/// Anything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store metadata database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store at {path} has schema version {found}, newer than this cairn understands ({supported})")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{path} is not a valid store: {reason}")]
    BadLayout { path: PathBuf, reason: String },
    #[error("blob {expected} does not match its content: got {actual} ({actual_size} bytes, expected {expected_size} bytes)")]
    DigestMismatch {
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },
    #[error("blob {0} is not in the store")]
    BlobMissing(Digest),
    #[error("blob {digest} is {size} bytes, more than the {limit} bytes allowed for {what}")]
    BlobTooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
        what: &'static str,
    },
    #[error("manifest {digest}: {reason}")]
    BadManifest { digest: Digest, reason: String },
    #[error("manifest {manifest} names {child}, which is not in the store")]
    ManifestChildMissing { manifest: Digest, child: Digest },
    #[error("invalid image reference {input:?}: {reason}")]
    BadReference { input: String, reason: String },
    #[error("no such image: {0}")]
    UnknownImage(String),
    #[error("invalid size {input:?}: {reason}")]
    BadSize { input: String, reason: String },
    #[error("invalid transport {input:?}: {reason}")]
    BadTransport { input: String, reason: String },
    #[error("{source_name}: {reason}")]
    BadSource { source_name: String, reason: String },
    /// An archive broke an import limit (`CAIRN_MAX_EXTRACT_SIZE`, ...).
    #[error("{source_name}: archive has {exceeded}")]
    ArchiveLimit {
        source_name: String,
        exceeded: cairn_layer::LimitExceeded,
    },
    /// The manifest is an index where one image was needed.
    #[error("{0} is an image index, not an image (name one platform's image)")]
    NotAnImage(Digest),
    #[error("image {manifest}: config {config} is not an image config: {reason}")]
    BadImageConfig {
        manifest: Digest,
        config: Digest,
        reason: String,
    },
    /// The config's `rootfs.diff_ids` do not name the manifest's layers.
    #[error("image {manifest}: {source}")]
    DiffIds {
        manifest: Digest,
        #[source]
        source: crate::image_config::DiffIdError,
    },
    /// A layer writer's report disagrees with the blob the store received.
    #[error("layer of {dir}: {reason}")]
    LayerMismatch { dir: PathBuf, reason: String },
    #[error("invalid layer diff id {0:?}")]
    BadDiffId(String),
    #[error("garbage collection needs the store lock held exclusively (open the store with Store::open_exclusive)")]
    NotExclusive,
    #[error("JSON {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// Wrap an I/O error with the action and the path it concerns.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }

    /// True when the error is the caller's fault (bad name, bad file, unknown image):
    /// the CLI maps these to exit code 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::BadReference { .. }
                | StoreError::UnknownImage(_)
                | StoreError::BadSize { .. }
                | StoreError::BadTransport { .. }
                | StoreError::BadSource { .. }
                | StoreError::ArchiveLimit { .. }
                | StoreError::DigestMismatch { .. }
                | StoreError::BadManifest { .. }
                | StoreError::ManifestChildMissing { .. }
                | StoreError::NotAnImage(_)
                | StoreError::BadImageConfig { .. }
                | StoreError::DiffIds { .. }
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
