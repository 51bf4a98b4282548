//! The parse error: a message with the line and column it points at.

use thiserror::Error;

/// Why a Dockerfile was rejected, and where.
///
/// `line` and `column` are 1-based; `column` counts characters (Unicode
/// scalar values) on that physical line. Display is `LINE:COL: message`,
/// so a caller only has to prefix the file name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ParseError {
    pub fn new(line: usize, column: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            column: column.max(1),
            message: message.into(),
        }
    }
}
