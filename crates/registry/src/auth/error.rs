//! The auth error type: every variant names the file, registry or helper it
//! is about, so a failed login or pull can be fixed without guessing.

use std::path::PathBuf;

/// Anything that can go wrong finding, storing or removing credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auth file {path} is malformed: {reason}")]
    MalformedFile { path: PathBuf, reason: String },
    #[error("auth file {path}: entry {key:?} is malformed: {reason}")]
    MalformedEntry {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("invalid registry {input:?}: {reason}")]
    BadRegistry { input: String, reason: String },
    #[error("cannot log in to {registry}: {reason}")]
    BadLogin { registry: String, reason: String },
    #[error(
        "nowhere to store credentials: none of REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR, \
         DOCKER_CONFIG or HOME is set (pass an explicit auth file)"
    )]
    NoWriteTarget,
    #[error("credential helper name {name:?} in {config} is not a plain name")]
    BadHelperName { name: String, config: PathBuf },
    #[error(
        "credential helper docker-credential-{helper} (named in {config}) was not found in PATH"
    )]
    HelperNotFound { helper: String, config: PathBuf },
    #[error(
        "credential helper docker-credential-{helper}: running `{action}` for {registry}: {source}"
    )]
    HelperSpawn {
        helper: String,
        action: &'static str,
        registry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper docker-credential-{helper} `{action}` for {registry} failed ({status}): {message}")]
    HelperFailed {
        helper: String,
        action: &'static str,
        registry: String,
        status: String,
        message: String,
    },
    #[error("credential helper docker-credential-{helper} `get` for {registry} printed invalid output: {reason}")]
    HelperBadOutput {
        helper: String,
        registry: String,
        reason: String,
    },
}

pub(crate) fn io_error(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> AuthError {
    let path = path.into();
    move |source| AuthError::Io {
        action,
        path,
        source,
    }
}
