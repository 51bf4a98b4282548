//! Dockerfile front end: Dockerfile text to a syntax tree read the way
//! BuildKit's dockerfile:1 frontend reads it, ARG scoping, word
//! expansion, typed instructions (`typed`: flags read once, for the
//! build), and `.dockerignore` matching. A pure library: no I/O.

pub mod ast;
pub mod error;
// Word expansion (BuildKit's shell lexer), used by `scope`.
pub mod expand;
pub mod ignore;
mod parser;
pub mod scope;
pub mod typed;

pub use ast::{
    Directives, Dockerfile, FlagPosition, Flags, Form, GlobalArg, Heredoc, Instruction, Pair,
    Positions, Stage,
};
pub use error::ParseError;
pub use parser::{parse, parse_deferring_quotes};
pub use typed::{Command, Typed};

/// The syntax tree as the pretty-printed JSON of the `cairn parse` contract.
pub fn to_json(doc: &Dockerfile) -> String {
    // Serialising plain strings, numbers and maps with string keys cannot fail.
    serde_json::to_string_pretty(doc)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}
