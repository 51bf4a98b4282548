//! Errors of registry work. Every one that comes from the network names the
//! registry, the repository and what was being moved (a blob digest or a
//! manifest reference), and the HTTP status when there was one.

use crate::auth::AuthError;
use cairn_store::StoreError;

pub type Result<T> = std::result::Result<T, RegistryError>;

/// What a request was about, for error messages.
#[derive(Clone, Debug)]
pub struct Target {
    pub registry: String,
    pub repository: String,
    /// "blob sha256:...", "manifest v1", "upload of sha256:..."
    pub what: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {}/{}", self.what, self.registry, self.repository)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("bad image reference {input:?}: {reason}")]
    BadReference { input: String, reason: String },

    #[error("{target}: not found in the registry (HTTP 404)")]
    NotFound { target: Target },

    #[error("{target}: the registry refused access (HTTP {status}){hint}")]
    Denied {
        target: Target,
        status: u16,
        /// Which credentials were sent, or how to send some.
        hint: String,
    },

    #[error("{target}: HTTP {status}: {message}")]
    Status {
        target: Target,
        status: u16,
        message: String,
    },

    /// Connection-level failures worth retrying (reset, timeout, refused).
    #[error("{target}: {message}")]
    Transport { target: Target, message: String },

    /// The registry's host name does not resolve.
    #[error("{target}: cannot reach the registry: {message}")]
    Unreachable { target: Target, message: String },

    #[error("{target}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        target: Target,
        attempts: u32,
        last: Box<RegistryError>,
    },

    #[error("{target}: content has digest {actual}, expected {expected}")]
    DigestMismatch {
        target: Target,
        expected: String,
        actual: String,
    },

    #[error("{reference}: no image for platform {platform} in its index (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },

    #[error("{reference}: unsupported manifest media type {media_type:?}")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },

    #[error("{reference}: {reason}")]
    BadManifest { reference: String, reason: String },

    /// A manifest, index or config over the in-memory cap.
    #[error("{target}: larger than the limit of {limit} bytes for a manifest, index or config")]
    TooLarge { target: Target, limit: u64 },

    #[error("unknown region {region:?} (regions file {file}: {known})")]
    UnknownRegion {
        region: String,
        file: String,
        known: String,
    },

    #[error("regions file {file}: {reason}")]
    BadRegions { file: String, reason: String },

    #[error("credentials: {0}")]
    Auth(#[from] AuthError),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Other(String),
}

impl RegistryError {
    /// Bad input from the user (exit code 2): a malformed reference, an image
    /// or tag the registry does not have, an unknown region or platform.
    pub fn is_bad_input(&self) -> bool {
        match self {
            RegistryError::BadReference { .. }
            | RegistryError::NotFound { .. }
            | RegistryError::NoPlatform { .. }
            | RegistryError::TooLarge { .. }
            | RegistryError::UnknownRegion { .. }
            | RegistryError::BadRegions { .. } => true,
            RegistryError::GaveUp { last, .. } => last.is_bad_input(),
            RegistryError::Store(e) => e.is_bad_input(),
            _ => false,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| RegistryError::Io { context, source }
    }
}
