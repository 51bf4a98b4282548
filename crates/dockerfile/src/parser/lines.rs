//! Physical lines to logical instruction lines, as BuildKit's `Parse` loop
//! reads them: parser directives at the top, comments, and continuation
//! lines joined with comment and blank lines inside them skipped.

use super::words::is_space;
use crate::ast::Directives;
use crate::error::ParseError;

/// BuildKit reads lines with a `bufio.Scanner` of 64 KiB: a longer line is an error.
const MAX_LINE: usize = 65535;

/// Where a piece of a logical line came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    /// Byte offset of the piece in the joined text.
    pub joined: usize,
    /// 1-based physical line.
    pub line: usize,
    /// Byte offset of the piece in its physical line.
    pub start: usize,
}

/// One instruction's text after joining continuation lines.
#[derive(Debug, Clone)]
pub(crate) struct LogicalLine {
    pub text: String,
    pub segments: Vec<Segment>,
    pub start_line: usize,
}

/// The physical lines of the input and a cursor over them.
pub(crate) struct Scanner<'a> {
    /// Each line with its `\n` if it had one.
    lines: Vec<&'a str>,
    next: usize,
    pub directives: DirectiveParser,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Scanner {
            lines: text.split_inclusive('\n').collect(),
            next: 0,
            directives: DirectiveParser::new(),
        }
    }

    /// Number of physical lines consumed so far (= the last line's number).
    pub fn lines_read(&self) -> usize {
        self.next
    }

    /// The physical line `n` (1-based) without its line ending.
    pub fn physical(&self, n: usize) -> &'a str {
        self.lines
            .get(n.wrapping_sub(1))
            .map(|l| trim_newline(l))
            .unwrap_or("")
    }

    /// (line, column) of a byte offset in a logical line; column in characters.
    pub fn position(&self, logical: &LogicalLine, offset: usize) -> (usize, usize) {
        let seg = logical
            .segments
            .iter()
            .rev()
            .find(|s| s.joined <= offset)
            .or(logical.segments.first());
        match seg {
            None => (logical.start_line, 1),
            Some(seg) => {
                let phys = self.physical(seg.line);
                let mut byte = seg.start + (offset - seg.joined.min(offset));
                byte = byte.min(phys.len());
                while !phys.is_char_boundary(byte) {
                    byte -= 1;
                }
                (seg.line, phys[..byte].chars().count() + 1)
            }
        }
    }

    fn take_line(&mut self) -> Result<Option<&'a str>, ParseError> {
        let Some(raw) = self.lines.get(self.next).copied() else {
            return Ok(None);
        };
        self.next += 1;
        if raw.strip_suffix('\n').unwrap_or(raw).len() > MAX_LINE {
            return Err(ParseError::new(
                self.next,
                1,
                format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
            ));
        }
        Ok(Some(raw))
    }

    /// The next instruction line, or None at the end of the input.
    pub fn next_logical(&mut self) -> Result<Option<LogicalLine>, ParseError> {
        loop {
            let Some(raw) = self.take_line()? else {
                return Ok(None);
            };
            let line_no = self.next;
            let content = trim_newline(raw);
            let lead = content.trim_start_matches(is_space);
            let lead_at = content.len() - lead.len();
            self.directives.check(lead, line_no)?;
            // Read after the directive check: the first instruction line
            // ends the directives and is continued with the escape they set.
            let escape = self.directives.escape;
            // A comment line (after leading whitespace) is dropped whole.
            let body = if lead.starts_with('#') { "" } else { lead };
            let (piece, mut ended) = trim_continuation(body, escape);
            if ended && piece.is_empty() {
                continue;
            }
            let mut logical = LogicalLine {
                text: piece.to_string(),
                segments: vec![Segment {
                    joined: 0,
                    line: line_no,
                    start: lead_at,
                }],
                start_line: line_no,
            };
            while !ended {
                let Some(raw) = self.take_line()? else { break };
                let content = trim_newline(raw);
                // Continuation lines are not left-trimmed; comment lines and
                // blank lines inside a continuation are skipped.
                let lead = content.trim_start_matches(is_space);
                if lead.starts_with('#') || lead.is_empty() {
                    continue;
                }
                let (piece, end) = trim_continuation(content, escape);
                ended = end;
                logical.segments.push(Segment {
                    joined: logical.text.len(),
                    line: self.next,
                    start: 0,
                });
                logical.text.push_str(piece);
            }
            return Ok(Some(logical));
        }
    }

    /// Read a heredoc body up to its terminator line. None if the input
    /// ends first. Lines keep their line endings, as BuildKit keeps them.
    pub fn read_heredoc(
        &mut self,
        delimiter: &str,
        strip_tabs: bool,
    ) -> Result<Option<String>, ParseError> {
        let mut body = String::new();
        while let Some(raw) = self.take_line()? {
            let mut candidate = trim_newline(raw);
            if strip_tabs {
                candidate = candidate.trim_start_matches('\t');
            }
            if candidate == delimiter {
                return Ok(Some(body));
            }
            body.push_str(raw);
        }
        Ok(None)
    }
}

/// Go's `bytes.TrimRight(line, "\r\n")`.
fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// BuildKit's continuation regex `([^E])E[ \t]*$|^E[ \t]*$` (E = escape):
/// a line ending in the escape character (plus spaces/tabs) continues,
/// unless that escape is itself escaped. Returns the line without the
/// escape and whether the instruction ends here.
pub(crate) fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

/// BuildKit's directive parser: `# name=value` lines at the very top.
pub(crate) struct DirectiveParser {
    done: bool,
    pub found: Directives,
    pub escape: char,
}

impl DirectiveParser {
    fn new() -> Self {
        DirectiveParser {
            done: false,
            found: Directives::default(),
            escape: '\\',
        }
    }

    /// Look at a (left-trimmed) line while directives may still appear.
    /// Anything that is not a known directive ends the directive section.
    fn check(&mut self, line: &str, line_no: usize) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = line
            .strip_prefix('#')
            .and_then(|rest| split_directive(rest.trim_start_matches(is_space)))
        else {
            self.done = true;
            return Ok(());
        };
        let key = name.to_ascii_lowercase();
        let slot = match key.as_str() {
            "syntax" => &mut self.found.syntax,
            "escape" => &mut self.found.escape,
            "check" => &mut self.found.check,
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if slot.is_some() {
            return Err(ParseError::new(
                line_no,
                1,
                format!("only one {key} parser directive can be used"),
            ));
        }
        *slot = Some(value.to_string());
        if key == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(ParseError::new(
                        line_no,
                        1,
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    ))
                }
            };
        }
        Ok(())
    }
}

/// Match `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (Go's `\s` is ASCII `[\t\n\f\r ]`).
fn split_directive(text: &str) -> Option<(&str, &str)> {
    let is_s = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let first = text.chars().next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let name_len = text
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(name_len);
    let rest = rest.trim_start_matches(is_s).strip_prefix('=')?;
    let value = rest.trim_start_matches(is_s).trim_end_matches(is_s);
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rule() {
        assert_eq!(trim_continuation("RUN a \\", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a \\ \t", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a \\\\", '\\'), ("RUN a \\\\", true));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("RUN a `", '`'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a \\", '`'), ("RUN a \\", true));
    }

    #[test]
    fn directive_syntax() {
        assert_eq!(split_directive("escape = `"), Some(("escape", "`")));
        assert_eq!(
            split_directive("Syntax=docker/dockerfile:1  "),
            Some(("Syntax", "docker/dockerfile:1"))
        );
        assert_eq!(split_directive("escape="), None);
        assert_eq!(split_directive("1x=y"), None);
        assert_eq!(split_directive("just a comment"), None);
    }
}
