//! Why a build failed, with structure: a kind to branch on and, when the
//! failure is about a Dockerfile line, its position as fields, so callers
//! (the facade, the CLI's exit codes, services) never parse the text.

use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of failure a [`BuildError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The Dockerfile, a flag, a build arg, a context path: the caller's input.
    BadInput,
    /// Something named does not exist: a stage, an image, a context file.
    NotFound,
    /// The request collides with what exists or is allowed.
    Conflict,
    /// A step ran and failed (a RUN exited non-zero).
    FailedStep,
    /// The build's cancel token fired.
    Cancelled,
    /// Something outside is down or refused: a registry, a download.
    Unavailable,
    /// Cairn cannot do this yet.
    Unsupported,
    /// A bug in Cairn, a broken store, or the host's I/O.
    Internal,
}

impl ErrorKind {
    /// The caller's input is at fault (the CLI exits 2).
    pub fn is_bad_input(self) -> bool {
        matches!(
            self,
            ErrorKind::BadInput | ErrorKind::NotFound | ErrorKind::Conflict
        )
    }
}

/// Where in a Dockerfile an error points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The Dockerfile's name as the build shows it (`Dockerfile (inline)` for text).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters), when known.
    pub column: Option<usize>,
}

impl Position {
    /// `file:line`, without a column.
    pub fn line(file: impl Into<String>, line: usize) -> Self {
        Position {
            file: file.into(),
            line,
            column: None,
        }
    }

    /// The position of a front-end error in `file`.
    pub fn of_parse(file: impl Into<String>, e: &cairn_dockerfile::ParseError) -> Self {
        Position {
            file: file.into(),
            line: e.line,
            column: Some(e.column),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(c) => write!(f, "{}:{}:{c}", self.file, self.line),
            None => write!(f, "{}:{}", self.file, self.line),
        }
    }
}

/// `position: message`, or the message alone.
fn located(position: &Option<Position>, message: &str) -> String {
    match position {
        Some(p) => format!("{p}: {message}"),
        None => message.to_string(),
    }
}

/// What Cairn cannot do yet, and the Dockerfile position that asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSupported {
    pub position: Option<Position>,
    /// What is not supported (without the position).
    pub message: String,
}

impl fmt::Display for NotSupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = format!("not supported yet: {}", self.message);
        f.write_str(&located(&self.position, &message))
    }
}

/// Not supported, at no particular position.
impl From<String> for NotSupported {
    fn from(message: String) -> Self {
        NotSupported {
            position: None,
            message,
        }
    }
}

impl From<&str> for NotSupported {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Bad input: the Dockerfile, a flag, a build arg, a source.
    #[error("{}", located(position, message))]
    Input {
        position: Option<Position>,
        message: String,
    },
    /// Something the Dockerfile or request names does not exist.
    #[error("{}", located(position, message))]
    NotFound {
        position: Option<Position>,
        message: String,
    },
    /// The request collides with what exists or is allowed: a tag in
    /// another organization's snapshot namespace. (Two builds tagging one
    /// name do not conflict: the last one wins, as in docker and buildah.)
    #[error("{message}")]
    Conflict { message: String },
    /// A RUN exited non-zero.
    #[error("{file}:{line}: RUN {command:?} failed with exit code {code}")]
    RunFailed {
        file: String,
        line: usize,
        command: String,
        code: i32,
    },
    /// The build was cancelled (its [`crate::CancelToken`] fired): the
    /// running RUN was killed, its scratch dirs removed, nothing tagged.
    #[error("build cancelled")]
    Cancelled,
    /// A bug in Cairn (a stage thread panicked); the message says where.
    #[error("internal error: {0}")]
    Internal(String),
    /// Something not built yet: what, and where the Dockerfile asks for it.
    #[error("{0}")]
    Unsupported(NotSupported),
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] cairn_sandbox::SandboxError),
    #[error(transparent)]
    Manager(#[from] cairn_sandbox::manager::ManagerError),
    #[error(transparent)]
    Registry(#[from] cairn_registry::RegistryError),
    /// `ADD <url>`: the download failed or did not match `--checksum`.
    #[error(transparent)]
    Fetch(#[from] crate::FetchError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BuildError {
    /// Bad input whose message says what (and, if it has one, where).
    pub(crate) fn input(message: impl Into<String>) -> Self {
        BuildError::Input {
            position: None,
            message: message.into(),
        }
    }

    /// Bad input at a Dockerfile position.
    pub(crate) fn input_at(position: Position, message: impl Into<String>) -> Self {
        BuildError::Input {
            position: Some(position),
            message: message.into(),
        }
    }

    /// A front-end error (parse or typing) of the Dockerfile `file`.
    pub(crate) fn parse(file: impl Into<String>, e: &cairn_dockerfile::ParseError) -> Self {
        BuildError::input_at(Position::of_parse(file, e), e.message.clone())
    }

    /// An ARG/ENV value that could not be computed, at its line.
    pub(crate) fn scope(file: &str, e: cairn_dockerfile::scope::ScopeError) -> Self {
        use cairn_dockerfile::scope::ScopeError;
        match e {
            ScopeError::Expand { line, source } => {
                BuildError::input_at(Position::line(file, line), source.to_string())
            }
            // A stage index the planner made itself: a bug, not input.
            ScopeError::NoStage(stage) => BuildError::Internal(format!(
                "{file}: scope of a stage that does not exist ({stage})"
            )),
        }
    }

    /// Something Cairn cannot do yet, asked for at `position`.
    pub(crate) fn unsupported_at(position: Position, message: impl Into<String>) -> Self {
        BuildError::Unsupported(NotSupported {
            position: Some(position),
            message: message.into(),
        })
    }

    /// Something Cairn cannot do yet (placed at its line by `or_at`).
    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        BuildError::Unsupported(NotSupported {
            position: None,
            message: message.into(),
        })
    }

    /// Something named that does not exist.
    pub(crate) fn not_found(position: Option<Position>, message: impl Into<String>) -> Self {
        BuildError::NotFound {
            position,
            message: message.into(),
        }
    }

    /// A FROM line's failure, placed at the line: what `or_at` places, and
    /// a base that is not there (in the store or the registry) or not a
    /// valid reference becomes `NotFound`/`Input` at the line (its text
    /// gains the `FILE:LINE:` prefix). A registry that is down or refuses
    /// access keeps its own error (and kind): the line is not at fault.
    pub(crate) fn at_from(self, position: Position) -> Self {
        use cairn_registry::RegistryError as R;
        use cairn_store::StoreError as S;
        let store_base = |e: &S| match e {
            S::UnknownImage(_) => Some(ErrorKind::NotFound),
            S::BadReference { .. } => Some(ErrorKind::BadInput),
            _ => None,
        };
        let base = match &self {
            BuildError::Store(e) | BuildError::Registry(R::Store(e)) => store_base(e),
            BuildError::Registry(R::NotFound { .. }) => Some(ErrorKind::NotFound),
            BuildError::Registry(R::NoPlatform { .. }) => Some(ErrorKind::BadInput),
            _ => None,
        };
        match base {
            Some(ErrorKind::NotFound) => BuildError::not_found(Some(position), self.to_string()),
            Some(_) => BuildError::input_at(position, self.to_string()),
            None => self.or_at(position),
        }
    }

    /// This error, placed at `position` if it is bad input or not
    /// supported and has no position of its own (what an instruction's
    /// step failed on).
    pub(crate) fn or_at(self, position: Position) -> Self {
        match self {
            BuildError::Input {
                position: None,
                message,
            } => BuildError::input_at(position, message),
            BuildError::NotFound {
                position: None,
                message,
            } => BuildError::not_found(Some(position), message),
            BuildError::Unsupported(NotSupported {
                position: None,
                message,
            }) => BuildError::Unsupported(NotSupported {
                position: Some(position),
                message,
            }),
            // It knows its line; the Dockerfile's name is known here.
            BuildError::Fetch(e) if e.position().is_none() => {
                BuildError::Fetch(e.in_file(&position.file))
            }
            other => other,
        }
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
        move |source| BuildError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// What kind of failure this is, to branch on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BuildError::Input { .. } => ErrorKind::BadInput,
            BuildError::NotFound { .. } => ErrorKind::NotFound,
            BuildError::Conflict { .. } => ErrorKind::Conflict,
            BuildError::RunFailed { .. } => ErrorKind::FailedStep,
            BuildError::Cancelled => ErrorKind::Cancelled,
            BuildError::Unsupported(_) => ErrorKind::Unsupported,
            BuildError::Internal(_) | BuildError::Io { .. } => ErrorKind::Internal,
            BuildError::Store(e) => match e {
                cairn_store::StoreError::UnknownImage(_) => ErrorKind::NotFound,
                e if e.is_bad_input() => ErrorKind::BadInput,
                _ => ErrorKind::Internal,
            },
            BuildError::Registry(e) => match e {
                cairn_registry::RegistryError::NotFound { .. } if e.is_bad_input() => {
                    ErrorKind::NotFound
                }
                e if e.is_bad_input() => ErrorKind::BadInput,
                _ => ErrorKind::Unavailable,
            },
            BuildError::Manager(e) if e.is_bad_input() => ErrorKind::BadInput,
            BuildError::Sandbox(e) if e.is_bad_input() => ErrorKind::BadInput,
            BuildError::Manager(_) | BuildError::Sandbox(_) => ErrorKind::Internal,
            BuildError::Fetch(e) if e.is_bad_input() => ErrorKind::BadInput,
            BuildError::Fetch(_) => ErrorKind::Unavailable,
        }
    }

    /// The Dockerfile position this error is about, when it is about one.
    pub fn position(&self) -> Option<Position> {
        match self {
            BuildError::Input { position, .. } | BuildError::NotFound { position, .. } => {
                position.clone()
            }
            BuildError::RunFailed { file, line, .. } => Some(Position::line(file.clone(), *line)),
            BuildError::Unsupported(u) => u.position.clone(),
            BuildError::Fetch(e) => e.position(),
            _ => None,
        }
    }

    /// The message without its position (the whole text for other kinds).
    pub fn message(&self) -> String {
        match self {
            BuildError::Input { message, .. } | BuildError::NotFound { message, .. } => {
                message.clone()
            }
            BuildError::Unsupported(u) => format!("not supported yet: {}", u.message),
            other => other.to_string(),
        }
    }

    /// True when the user's input is at fault (exit 2 in the CLI).
    pub fn is_bad_input(&self) -> bool {
        self.kind().is_bad_input()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_the_position_first() {
        let at = BuildError::input_at(Position::line("Dockerfile", 3), "COPY x: no");
        assert_eq!(at.to_string(), "Dockerfile:3: COPY x: no");
        assert_eq!(at.message(), "COPY x: no");
        let e = cairn_dockerfile::ParseError::new(2, 7, "unknown flag: --x");
        let parsed = BuildError::parse("df", &e);
        assert_eq!(parsed.to_string(), "df:2:7: unknown flag: --x");
        assert_eq!(
            parsed.position(),
            Some(Position {
                file: "df".into(),
                line: 2,
                column: Some(7)
            })
        );
        assert_eq!(BuildError::input("plain").to_string(), "plain");
        assert_eq!(BuildError::input("plain").position(), None);
    }

    #[test]
    fn kinds_decide_bad_input() {
        let run = BuildError::RunFailed {
            file: "Dockerfile".into(),
            line: 4,
            command: "false".into(),
            code: 1,
        };
        assert_eq!(run.kind(), ErrorKind::FailedStep);
        assert!(!run.is_bad_input());
        assert_eq!(run.position().map(|p| (p.line, p.column)), Some((4, None)));
        let missing = BuildError::not_found(None, "target stage \"x\" not found");
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(missing.is_bad_input());
        assert_eq!(BuildError::Cancelled.kind(), ErrorKind::Cancelled);
        assert_eq!(
            BuildError::Unsupported("x".into()).kind(),
            ErrorKind::Unsupported
        );
        assert!(!BuildError::Unsupported("x".into()).is_bad_input());
        assert!(!BuildError::Internal("bug".into()).is_bad_input());
        let unknown = BuildError::Store(cairn_store::StoreError::UnknownImage("nope".into()));
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
        assert!(unknown.is_bad_input());
    }

    #[test]
    fn scope_errors_carry_their_line_or_are_internal() {
        use cairn_dockerfile::scope::ScopeError;
        let none = std::collections::BTreeMap::<String, String>::new();
        let bad = cairn_dockerfile::expand::expand_word("${x:?unset}", &none, '\\')
            .expect_err("a required variable that is unset");
        let at = BuildError::scope(
            "df",
            ScopeError::Expand {
                line: 5,
                source: bad,
            },
        );
        assert_eq!(at.kind(), ErrorKind::BadInput);
        assert_eq!(at.position().map(|p| p.line), Some(5));
        let bug = BuildError::scope("df", ScopeError::NoStage(9));
        assert_eq!(bug.kind(), ErrorKind::Internal);
    }
}
