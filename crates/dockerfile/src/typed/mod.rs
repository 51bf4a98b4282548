//! Typed instructions: one value per instruction with its flags read once,
//! the seam between this front end and the build (BuildKit's
//! `frontend/dockerfile/instructions` plays the same part).
//!
//! Built from the syntax tree by [`Instruction::typed`] and
//! [`Stage::typed_from`], so the JSON of `cairn parse` stays as it is.
//! Words that the build expands with ARG and ENV values stay unexpanded
//! here, as [`Word`]s; values BuildKit takes literally (`--network`,
//! `--security`, `--link`, HEALTHCHECK's durations) are read into types.
//! Nothing after this module matches instruction names or flag strings.
//!
//! [`Instruction::typed`]: crate::Instruction::typed
//! [`Stage::typed_from`]: crate::Stage::typed_from

mod convert;
mod mount;
#[cfg(test)]
mod tests;

pub use mount::{MountField, MountKey, MountSpec};

use crate::ast::Heredoc;
use std::time::Duration;

/// A word as written (quotes and `$VARS` in it): expand it before use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Word(pub(crate) String);

impl Word {
    /// The text as written, unexpanded.
    pub fn raw(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Word {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Word {
    fn from(s: &str) -> Self {
        Word(s.to_string())
    }
}

/// A typed instruction and where it is in the Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Typed {
    /// First line (1-based).
    pub line: usize,
    /// Column of the keyword (1-based; 1 when unknown).
    pub column: usize,
    /// Last line, continuations and heredoc bodies included.
    pub end_line: usize,
    pub command: Command,
}

/// What an instruction says, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Run),
    Copy(Copy),
    Add(Add),
    /// ENV pairs, in order.
    Env(Vec<KeyValue>),
    /// LABEL pairs, in order.
    Label(Vec<KeyValue>),
    /// ARG declarations, in order.
    Arg(Vec<ArgDecl>),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    /// SHELL's JSON array.
    Shell(Vec<String>),
    Workdir(Word),
    User(Word),
    StopSignal(Word),
    /// EXPOSE's ports (`80`, `53/udp`, `$PORT`).
    Expose(Vec<Word>),
    /// VOLUME's paths.
    Volume(Vec<Word>),
    /// MAINTAINER's text (never expanded).
    Maintainer(String),
    Healthcheck(Healthcheck),
    Onbuild(OnBuild),
}

/// `FROM [--platform=P] BASE [AS NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromLine {
    pub base: Word,
    pub platform: Option<Word>,
    /// The stage name, lowercased.
    pub alias: Option<String>,
    pub line: usize,
    pub column: usize,
}

/// A command in exec form (JSON array) or shell form (text for the SHELL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Exec(Vec<String>),
    Shell(String),
}

/// `RUN [--mount=...]... [--network=...] [--security=...] COMMAND`.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub mounts: Vec<MountSpec>,
    /// None when not given (the build's own network).
    pub network: Option<NetworkMode>,
    /// None when not given (sandboxed).
    pub security: Option<SecurityMode>,
    pub command: CommandLine,
    pub heredocs: Vec<Heredoc>,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

/// What COPY and ADD share: owner, mode, link, exclusions, the words.
#[derive(Debug, Clone, PartialEq)]
pub struct Files {
    pub chown: Option<Word>,
    pub chmod: Option<Word>,
    pub link: bool,
    pub exclude: Vec<Word>,
    pub sources: Vec<Source>,
    pub dest: Word,
    pub heredocs: Vec<Heredoc>,
}

/// One source word of COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path (context, stage) or, for ADD, a URL.
    Path(Word),
    /// `<<NAME`: the body of the heredoc with that delimiter.
    Heredoc(String),
}

/// `COPY [--from=...] [--parents] ... SRC... DEST`.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    pub from: Option<Word>,
    pub parents: bool,
    pub files: Files,
}

/// `ADD [--checksum=...] [--keep-git-dir] [--unpack] ... SRC... DEST`.
#[derive(Debug, Clone, PartialEq)]
pub struct Add {
    pub checksum: Option<Word>,
    pub keep_git_dir: bool,
    /// None when not given (local archives unpack, downloads do not).
    pub unpack: Option<bool>,
    pub files: Files,
}

/// An ENV or LABEL pair, both sides unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Word,
    pub value: Word,
}

/// `ARG NAME[=DEFAULT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<Word>,
}

/// HEALTHCHECK: NONE, or CMD with its settings (durations and retries are
/// never expanded; empty values mean "not set", as in BuildKit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// None for `HEALTHCHECK NONE`.
    pub test: Option<CommandLine>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// `ONBUILD TRIGGER`: the trigger text the image config keeps. The trigger
/// is typed when a later build runs it (BuildKit, too, checks only its name).
#[derive(Debug, Clone, PartialEq)]
pub struct OnBuild {
    pub expression: String,
}

impl Command {
    /// COPY's and ADD's shared part.
    pub fn files(&self) -> Option<&Files> {
        match self {
            Command::Copy(c) => Some(&c.files),
            Command::Add(a) => Some(&a.files),
            _ => None,
        }
    }

    /// The stages and images this instruction reads (`COPY --from`,
    /// `RUN --mount=from=`), unexpanded, for planning.
    pub fn from_names(&self) -> Vec<&str> {
        match self {
            Command::Copy(c) => c.from.iter().map(|w| w.raw()).collect(),
            Command::Run(r) => r.mounts.iter().filter_map(MountSpec::from).collect(),
            _ => Vec::new(),
        }
    }
}
