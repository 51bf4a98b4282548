//! Dockerfile front end: Dockerfile text to a syntax tree read the way
//! BuildKit's dockerfile:1 frontend reads it, ARG scoping, word
//! expansion, and `.dockerignore` matching. A pure library: no I/O.

pub mod ast;
pub mod error;
// Word expansion (BuildKit's shell lexer), used by `scope`.
pub mod expand;
pub mod ignore;
mod parser;
pub mod scope;

pub use ast::{Directives, Dockerfile, Flags, Form, GlobalArg, Heredoc, Instruction, Pair, Stage};
pub use error::ParseError;
pub use parser::{parse, parse_deferring_quotes};

/// The syntax tree as the pretty-printed JSON of the `cairn parse` contract.
pub fn to_json(doc: &Dockerfile) -> String {
    // Serialising plain strings, numbers and maps with string keys cannot fail.
    serde_json::to_string_pretty(doc)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}
