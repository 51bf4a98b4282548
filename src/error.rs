//! One error type for the whole library: a [`ErrorKind`] to branch on, the
//! message, the Dockerfile position when there is one, and the sub-crate's
//! typed error as [`std::error::Error::source`].

use cairn_builder::BuildError;
use cairn_registry::RegistryError;
use cairn_sandbox::manager::ManagerError;
use cairn_sandbox::SandboxError;
use cairn_snapshot::repo::SnapshotError;
use cairn_snapshot::service::ServiceError;
use cairn_store::StoreError;

/// What kind of failure an [`Error`] is: what a service maps to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing named (image, sandbox, snapshot, file, registry repository) does not exist.
    NotFound,
    /// It exists already, or its state forbids the change (a taken name, a general snapshot).
    Conflict,
    /// The caller's input is at fault: a Dockerfile error, a bad name or value, a failed RUN.
    Invalid,
    /// The caller cancelled it (a token, or a dropped future).
    Cancelled,
    /// Something outside is missing or down: a registry, a cgroup controller, the ID ranges.
    Unavailable,
    /// A bug or a broken store: report it.
    Internal,
}

/// Where in a Dockerfile an error points (file, line, column when known).
pub use cairn_builder::Position;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of any library call.
///
/// ```
/// let err = cairn::Cairn::open(cairn::CairnOptions::new("/dev/null/store")).unwrap_err();
/// assert_eq!(err.kind(), cairn::ErrorKind::Internal);
/// assert!(err.to_string().contains("/dev/null/store"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    position: Option<Position>,
    #[source]
    source: Option<Source>,
}

/// `Result<T, cairn::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` saying `message`, without a source.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            position: None,
            source: None,
        }
    }

    fn wrap(kind: ErrorKind, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error {
            kind,
            message: source.to_string(),
            position: None,
            source: Some(Box::new(source)),
        }
    }

    /// The kind, to decide what to do (or which status to answer).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The Dockerfile position the error is about, when it is about one.
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }
}

fn store_kind(e: &StoreError) -> ErrorKind {
    match e {
        StoreError::UnknownImage(_) | StoreError::BlobMissing(_) => ErrorKind::NotFound,
        e if e.is_bad_input() => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    }
}

fn registry_kind(e: &RegistryError) -> ErrorKind {
    match e {
        RegistryError::NotFound { .. } => ErrorKind::NotFound,
        RegistryError::Denied { .. }
        | RegistryError::Transport { .. }
        | RegistryError::Unreachable { .. }
        | RegistryError::GaveUp { .. }
        | RegistryError::Status { .. } => ErrorKind::Unavailable,
        RegistryError::Store(s) => store_kind(s),
        e if e.is_bad_input() => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    }
}

fn sandbox_kind(e: &SandboxError) -> ErrorKind {
    match e {
        SandboxError::NotInitialised { .. } => ErrorKind::Invalid,
        SandboxError::IdMap { .. } | SandboxError::Cgroup { .. } => ErrorKind::Unavailable,
        SandboxError::Store(s) => store_kind(s),
        e if e.is_bad_input() => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    }
}

fn manager_kind(e: &ManagerError) -> ErrorKind {
    match e {
        ManagerError::UnknownSandbox(_) | ManagerError::OtherOrganization { .. } => {
            ErrorKind::NotFound
        }
        ManagerError::File { not_found, .. } => match not_found {
            true => ErrorKind::NotFound,
            false => ErrorKind::Invalid,
        },
        ManagerError::BadName { reason, .. } if reason.contains("exists") => ErrorKind::Conflict,
        ManagerError::Cgroup { .. } => ErrorKind::Unavailable,
        ManagerError::Store(s) => store_kind(s),
        ManagerError::Sandbox(s) => sandbox_kind(s),
        e if e.is_bad_input() => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    }
}

fn build_kind(e: &BuildError) -> ErrorKind {
    use cairn_builder::ErrorKind as Build;
    match e {
        // Nested errors keep their crate's finer kinds (e.g. a registry down).
        BuildError::Store(s) => store_kind(s),
        BuildError::Sandbox(s) => sandbox_kind(s),
        BuildError::Manager(m) => manager_kind(m),
        BuildError::Registry(r) => registry_kind(r),
        e => match e.kind() {
            Build::Cancelled => ErrorKind::Cancelled,
            Build::NotFound => ErrorKind::NotFound,
            Build::Conflict => ErrorKind::Conflict,
            // A failed RUN and what Cairn cannot do yet are the input's to change.
            Build::BadInput | Build::FailedStep | Build::Unsupported => ErrorKind::Invalid,
            Build::Unavailable => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
    }
}

fn snapshot_kind(e: &SnapshotError) -> ErrorKind {
    match e {
        SnapshotError::NotFound(_) | SnapshotError::OtherOrganization(_) => ErrorKind::NotFound,
        SnapshotError::Duplicate { .. }
        | SnapshotError::BadTransition { .. }
        | SnapshotError::General(_) => ErrorKind::Conflict,
        SnapshotError::Invalid(_) | SnapshotError::Config { .. } => ErrorKind::Invalid,
        // Another runner took the work over: the caller's view is stale.
        SnapshotError::LeaseLost { .. } => ErrorKind::Conflict,
        // The shared database is down or unreachable.
        SnapshotError::Postgres { .. } | SnapshotError::Pool { .. } => ErrorKind::Unavailable,
        SnapshotError::Db(_)
        | SnapshotError::SchemaTooNew { .. }
        | SnapshotError::Corrupt { .. } => ErrorKind::Internal,
    }
}

fn service_kind(e: &ServiceError) -> ErrorKind {
    match e {
        ServiceError::Snapshot(s) => snapshot_kind(s),
        ServiceError::Build(b) => build_kind(b),
        ServiceError::Registry(r) => registry_kind(r),
        ServiceError::Sandbox(m) => manager_kind(m),
        ServiceError::Store(s) => store_kind(s),
        ServiceError::Invalid(_) => ErrorKind::Invalid,
        ServiceError::Io { .. } => ErrorKind::Internal,
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::wrap(store_kind(&e), e)
    }
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Self {
        Error::wrap(registry_kind(&e), e)
    }
}

impl From<SandboxError> for Error {
    fn from(e: SandboxError) -> Self {
        Error::wrap(sandbox_kind(&e), e)
    }
}

impl From<ManagerError> for Error {
    fn from(e: ManagerError) -> Self {
        Error::wrap(manager_kind(&e), e)
    }
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Self {
        let position = e.position();
        let mut err = Error::wrap(build_kind(&e), e);
        err.position = position;
        err
    }
}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Self {
        Error::wrap(snapshot_kind(&e), e)
    }
}

impl From<ServiceError> for Error {
    fn from(e: ServiceError) -> Self {
        match e {
            // Keep the build's position.
            ServiceError::Build(b) => Error::from(b),
            e => Error::wrap(service_kind(&e), e),
        }
    }
}

impl From<cairn_dockerfile::ParseError> for Error {
    fn from(e: cairn_dockerfile::ParseError) -> Self {
        Error::wrap(ErrorKind::Invalid, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn kinds_follow_the_typed_errors_and_keep_them_as_sources() {
        let e = Error::from(ManagerError::UnknownSandbox("x".into()));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e
            .source()
            .and_then(|s| s.downcast_ref::<ManagerError>())
            .is_some());
        let e = Error::from(ServiceError::Snapshot(SnapshotError::Duplicate {
            name: "a".into(),
            org: "o".into(),
        }));
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let e = Error::from(BuildError::RunFailed {
            file: "Dockerfile (inline)".into(),
            line: 3,
            command: "false".into(),
            code: 1,
        });
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert_eq!(e.position().map(|p| p.line), Some(3));
        assert_eq!(
            Error::from(BuildError::Cancelled).kind(),
            ErrorKind::Cancelled
        );
    }
}
