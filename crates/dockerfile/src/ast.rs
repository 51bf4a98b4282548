//! The syntax tree `parse` returns; its serde form is the JSON contract of
//! `cairn parse` (documented in docs/dockerfile.md).

use serde::Serialize;
use std::collections::BTreeMap;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    /// ARGs declared before the first FROM, in order.
    pub global_args: Vec<GlobalArg>,
    pub stages: Vec<Stage>,
    /// The escape character in force (`\` or a backtick); needed to expand words.
    #[serde(skip)]
    pub escape: char,
}

/// Parser directives found at the top of the file (only those present).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Directives {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syntax: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escape: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// One name declared by an ARG before the first FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalArg {
    pub name: String,
    /// The default as written (unexpanded), or None for `ARG NAME`.
    pub default: Option<String>,
    pub line: usize,
}

/// A build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// The `AS` name, lowercased as BuildKit does.
    pub name: Option<String>,
    /// The base image as written (unexpanded).
    pub base: String,
    /// `--platform` as written (unexpanded).
    pub platform: Option<String>,
    pub line: usize,
    pub end_line: usize,
    /// The FROM line's flags.
    pub flags: Flags,
    /// The FROM instruction's source text.
    pub original: String,
    pub instructions: Vec<Instruction>,
    /// Where the FROM's keyword and flags are (not part of the JSON contract).
    #[serde(skip)]
    pub positions: Positions,
}

/// Flag name (without `--`) to its values in the order given.
pub type Flags = BTreeMap<String, Vec<String>>;

/// Whether arguments were written as a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// A JSON array of strings.
    Exec,
    /// Plain text (for RUN/CMD/ENTRYPOINT: handed to the shell).
    Shell,
}

/// One instruction inside a stage (or an ARG before the first FROM).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instruction {
    /// Lowercase instruction name, e.g. "run".
    pub name: String,
    /// First line of the instruction (1-based).
    pub line: usize,
    /// Last line, including continuation lines and heredoc bodies.
    pub end_line: usize,
    pub flags: Flags,
    /// Set for instructions that have a JSON form (RUN, CMD, ENTRYPOINT,
    /// SHELL, HEALTHCHECK CMD, COPY, ADD, VOLUME); None otherwise.
    pub form: Option<Form>,
    pub args: Vec<String>,
    /// key/value pairs of ENV, LABEL and ARG, as written (unexpanded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairs: Option<Vec<Pair>>,
    pub heredocs: Vec<Heredoc>,
    /// The instruction text after continuation lines are joined.
    pub original: String,
    /// The instruction an ONBUILD wraps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onbuild: Option<Box<Instruction>>,
    /// A quoting error [`crate::parse_deferring_quotes`] kept for later:
    /// BuildKit reports it only when it expands this instruction, i.e. when
    /// the build reaches its stage. Always None from [`crate::parse`].
    #[serde(skip)]
    pub deferred: Option<crate::ParseError>,
    /// Where the keyword and each flag are, for errors of the typed layer
    /// (not part of the JSON contract; default for an ONBUILD's trigger).
    #[serde(skip)]
    pub positions: Positions,
}

/// Source positions the JSON leaves out: the typed layer's errors name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    /// 1-based column of the instruction keyword on its first line (0 when unknown).
    pub column: usize,
    /// Each `--flag` word in the order written: its name, line and column.
    pub flags: Vec<FlagPosition>,
}

/// Where one `--flag` word starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagPosition {
    /// The flag's name without `--` and value.
    pub name: String,
    pub line: usize,
    pub column: usize,
}

/// A key and its value as written (ARG may have no value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub key: String,
    pub value: Option<String>,
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter with quotes removed.
    pub delimiter: String,
    /// The body, each line with its newline; leading tabs removed when `strip_tabs`.
    pub body: String,
    /// False when the delimiter was quoted: the body is taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines and the terminator.
    pub strip_tabs: bool,
    /// File descriptor written before `<<` (e.g. `3<<EOF`), 0 when absent.
    pub fd: u32,
}
