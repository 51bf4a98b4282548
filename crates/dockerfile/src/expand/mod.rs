//! Word expansion with the semantics of BuildKit's shell lexer
//! (`frontend/dockerfile/shell/lex.go`): `$V`, `${V}`, the modifiers
//! `:- - :+ + :? ? # ## % %% / //`, the escape character, single and double
//! quotes, and word splitting after expansion.
//!
//! The lexer is a direct reading of BuildKit's state machine, including its
//! quirks (which the tests pin): `$$` and `$1` are variables that are
//! normally unset, `""` never makes a word of its own, whitespace inside an
//! unquoted expansion splits words, `${V:#p}` acts as `${V#p}`.

mod pattern;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// Where variable values come from.
pub trait Vars {
    /// The value of `name`, or `None` when it is unset (an empty value is set).
    fn get(&self, name: &str) -> Option<String>;
}

impl Vars for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Vars for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl<T: Vars + ?Sized> Vars for &T {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    /// `${` (or a `${V:-...` word) runs to the end of the input.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${V/pattern` runs to the end of the input.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:...}`, `${{...}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A quote without its closing quote.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    /// `${V:x}`, `${V=w}` and other forms BuildKit does not support.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${V?msg}` with `V` unset, or `${V:?msg}` with `V` unset or empty.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The word after `?`, or BuildKit's default message.
        message: String,
    },
    /// Expansions nested deeper than [`MAX_NESTING`]; a guard for the stack
    /// that BuildKit (with Go's growable stacks) does not need.
    #[error("expansions nested more than {MAX_NESTING} deep")]
    TooDeep,
    /// An expansion longer than [`MAX_EXPANDED_LEN`] bytes.
    #[error("expansion longer than {MAX_EXPANDED_LEN} bytes")]
    TooLarge,
    /// A `#`, `%` or `/` pattern with a bad backslash escape.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern after expansion.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How deeply `${...}` may nest inside the word of another `${...}`.
pub const MAX_NESTING: usize = 200;

/// The longest result (and intermediate value) an expansion may produce.
/// Nested `${V//p/r}` multiply lengths, so a short word could otherwise ask
/// for gigabytes; Linux refuses any single argument or environment string
/// over 128 KiB, so nothing useful is lost.
pub const MAX_EXPANDED_LEN: usize = 1 << 20;

/// A word that could not be expanded: what went wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind} (at byte {offset})")]
pub struct ExpandError {
    /// The word as given.
    pub word: String,
    /// Byte offset in `word` of the construct in error (the `$` of an
    /// expansion, the opening quote).
    pub offset: usize,
    /// What went wrong.
    pub kind: ExpandErrorKind,
}

/// An error before the word it belongs to is known.
#[derive(Debug)]
struct LexError {
    offset: usize,
    kind: ExpandErrorKind,
}

type LexResult<T> = Result<T, LexError>;

/// Expands `word` and removes its quotes and escapes (BuildKit's
/// `ProcessWord`). Whitespace is kept.
pub fn expand_word(word: &str, vars: &dyn Vars, escape: char) -> Result<String, ExpandError> {
    Lexer::new(word, vars, escape).run().map(|(text, _)| text)
}

/// Expands `word` and splits it on whitespace that is neither quoted nor
/// escaped (BuildKit's `ProcessWords`). Splitting happens after expansion, so
/// an unquoted `$V` holding spaces gives several words.
pub fn expand_words(word: &str, vars: &dyn Vars, escape: char) -> Result<Vec<String>, ExpandError> {
    Lexer::new(word, vars, escape).run().map(|(_, words)| words)
}

/// The variables `word` refers to, in order of first use, without repeats.
/// A word with a syntax error yields the names seen before the error.
pub fn referenced_vars(word: &str, escape: char) -> Vec<String> {
    let recorder = Recorder::default();
    // Every variable looks set and non-empty, so `${V:?}` never stops the
    // walk; the result of the expansion itself is thrown away.
    let _ = expand_word(word, &recorder, escape);
    recorder.names.into_inner()
}

/// A `Vars` that records the names asked for.
#[derive(Default)]
struct Recorder {
    names: RefCell<Vec<String>>,
}

impl Vars for Recorder {
    fn get(&self, name: &str) -> Option<String> {
        let mut names = self.names.borrow_mut();
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
        Some("x".to_string())
    }
}

/// Fails once an expansion result grows past [`MAX_EXPANDED_LEN`].
fn check_len(text: &str, offset: usize) -> LexResult<()> {
    if text.len() > MAX_EXPANDED_LEN {
        return Err(LexError {
            offset,
            kind: ExpandErrorKind::TooLarge,
        });
    }
    Ok(())
}

/// Go's `unicode.IsLetter` (categories L*). Rust's `is_alphabetic` also
/// takes letter numbers and some marks; close enough outside ASCII.
fn is_go_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    c.is_alphabetic() && !c.is_numeric()
}

/// Go's `unicode.IsDigit` (category Nd); approximated outside ASCII.
fn is_go_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    c.is_numeric() && !c.is_alphabetic()
}

/// The special parameters of POSIX sh that `$` accepts as one-char names.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Accumulates the words of `ProcessWords` next to the plain result.
#[derive(Default)]
struct Words {
    words: Vec<String>,
    word: String,
    /// Something (maybe an empty quoted string) was added since the last
    /// split; BuildKit only splits when the current word is non-empty.
    in_word: bool,
}

impl Words {
    /// A character that splits words when it is whitespace.
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, text: &str) {
        text.chars().for_each(|ch| self.add_char(ch));
    }

    fn add_raw_string(&mut self, text: &str) {
        self.word.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// The lexer state: the input, a cursor and the escape rules in force.
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    vars: &'a dyn Vars,
    escape: char,
    /// Keep escape characters in the output: set while reading the pattern
    /// of `#`, `%` and `/`, whose own escapes are read by the pattern code.
    raw_escapes: bool,
    /// How many `${...}` words enclose the cursor.
    depth: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str, vars: &'a dyn Vars, escape: char) -> Self {
        Lexer {
            src,
            pos: 0,
            vars,
            escape,
            raw_escapes: false,
            depth: 0,
        }
    }

    fn run(mut self) -> Result<(String, Vec<String>), ExpandError> {
        self.read_until(None, false).map_err(|e| ExpandError {
            word: self.src.to_string(),
            offset: e.offset,
            kind: e.kind,
        })
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Reads up to `stop` (consumed) or the end of input, expanding as it
    /// goes. With a `stop`, reaching the end is an error.
    fn read_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> LexResult<(String, Vec<String>)> {
        if self.depth > MAX_NESTING {
            return Err(LexError {
                offset: self.pos,
                kind: ExpandErrorKind::TooDeep,
            });
        }
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        self.depth += 1;
        let result = self.read_until_inner(stop);
        self.depth -= 1;
        self.raw_escapes = saved;
        result
    }

    fn read_until_inner(&mut self, stop: Option<char>) -> LexResult<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let start = self.pos;
                    let value = self.dollar()?;
                    result.push_str(&value);
                    check_len(&result, start)?;
                    words.add_string(&value);
                }
                '\'' => {
                    let value = self.single_quoted()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' => {
                    let start = self.pos;
                    let value = self.double_quoted()?;
                    result.push_str(&value);
                    check_len(&result, start)?;
                    words.add_raw_string(&value);
                }
                _ => {
                    self.next();
                    if ch != self.escape {
                        words.add_char(ch);
                        result.push(ch);
                        continue;
                    }
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // An escape at the very end escapes nothing and goes.
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                }
            }
        }
        match stop {
            None => Ok((result, words.finish())),
            Some(stop) => Err(LexError {
                offset: self.pos,
                kind: ExpandErrorKind::Unterminated(match stop {
                    '}' => "}",
                    _ => "/",
                }),
            }),
        }
    }

    /// `'...'`: everything literal up to the next `'`.
    fn single_quoted(&mut self) -> LexResult<String> {
        let start = self.pos;
        self.next();
        let mut result = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(LexError {
                        offset: start,
                        kind: ExpandErrorKind::Unterminated("single-quote"),
                    })
                }
                Some('\'') => return Ok(result),
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"..."`: literal except `$`, and the escape character before `"`,
    /// `$` or itself (elsewhere it stays).
    fn double_quoted(&mut self) -> LexResult<String> {
        let start = self.pos;
        self.next();
        let mut result = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(LexError {
                        offset: start,
                        kind: ExpandErrorKind::Unterminated("double-quote"),
                    })
                }
                Some('"') => {
                    self.next();
                    return Ok(result);
                }
                Some('$') => {
                    let dollar = self.pos;
                    result.push_str(&self.dollar()?);
                    check_len(&result, dollar)?;
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // The missing quote is reported on the next turn.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// A name after `$`: one special parameter, a run of digits, or letters,
    /// digits and `_`. Empty when none of these follows.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(digit) = self.peek().filter(|c| is_go_digit(*c)) {
                    self.next();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                name.push(ch);
                return name;
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    /// `$...` at the cursor.
    fn dollar(&mut self) -> LexResult<String> {
        let start = self.pos;
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.vars.get(&name).unwrap_or_default());
        }
        self.next();
        let err = |kind| LexError {
            offset: start,
            kind,
        };
        match self.peek() {
            None => return Err(err(ExpandErrorKind::MissingBrace)),
            Some('{' | '}' | ':') => return Err(err(ExpandErrorKind::BadSubstitution)),
            Some(_) => {}
        }
        let name = self.name();
        // BuildKit reports `${V` at the end as an unsupported modifier made
        // of the end-of-input rune; a missing brace says it better.
        let Some(modifier) = self.next() else {
            return Err(err(ExpandErrorKind::MissingBrace));
        };
        match modifier {
            '}' => Ok(self.vars.get(&name).unwrap_or_default()),
            '/' => self.substitute(start, &name),
            ':' => {
                let Some(op) = self.next() else {
                    return Err(err(ExpandErrorKind::MissingBrace));
                };
                // dockerfile 1.10+ takes `:` only before `-`, `+` and `?`:
                // `${V:#w}` was read as `${V#w}` before, now it is refused.
                if !matches!(op, '-' | '+' | '?') {
                    return Err(err(ExpandErrorKind::UnsupportedModifier(format!(":{op}"))));
                }
                self.modify(start, &name, op, true)
            }
            '+' | '-' | '?' | '#' | '%' => self.modify(start, &name, modifier, false),
            other => Err(err(ExpandErrorKind::UnsupportedModifier(other.to_string()))),
        }
    }

    /// `${name<op>word}` (`null_is_unset` for the `:` forms); the cursor is
    /// after `op`.
    fn modify(
        &mut self,
        start: usize,
        name: &str,
        op: char,
        null_is_unset: bool,
    ) -> LexResult<String> {
        let err = |kind| LexError {
            offset: start,
            kind,
        };
        let raw = op == '#' || op == '%';
        let word = match self.read_until(Some('}'), raw) {
            Ok((word, _)) => word,
            Err(_) if self.at_end() => return Err(err(ExpandErrorKind::MissingBrace)),
            Err(e) => return Err(e),
        };
        let value = self.vars.get(name);
        let empty_or_unset = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            '-' => Ok(if empty_or_unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if empty_or_unset { String::new() } else { word }),
            '?' => match value {
                Some(v) if !empty_or_unset => Ok(v),
                _ => {
                    let default = if value.is_none() {
                        "is not allowed to be unset"
                    } else {
                        "is not allowed to be empty"
                    };
                    let message = if word.is_empty() {
                        default.to_string()
                    } else {
                        word
                    };
                    Err(err(ExpandErrorKind::Required {
                        name: name.to_string(),
                        message,
                    }))
                }
            },
            '#' | '%' => {
                let value = value.unwrap_or_default();
                // `##` and `%%`: the doubled operator is the first char of the word.
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                let trimmed = if op == '%' {
                    pattern::trim_suffix(pattern, &value, greedy)
                } else {
                    pattern::trim_prefix(pattern, &value, greedy)
                };
                trimmed.map_err(|reason| {
                    err(ExpandErrorKind::InvalidPattern {
                        pattern: pattern.to_string(),
                        reason,
                    })
                })
            }
            other => {
                let shown = if null_is_unset {
                    format!(":{other}")
                } else {
                    other.to_string()
                };
                Err(err(ExpandErrorKind::UnsupportedModifier(shown)))
            }
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`; the
    /// cursor is after the first `/`.
    fn substitute(&mut self, start: usize, name: &str) -> LexResult<String> {
        let err = |kind| LexError {
            offset: start,
            kind,
        };
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.next();
        }
        let pattern = match self.read_until(Some('/'), true) {
            Ok((pattern, _)) => pattern,
            Err(_) if self.at_end() => return Err(err(ExpandErrorKind::MissingSlash)),
            Err(e) => return Err(e),
        };
        let replacement = match self.read_until(Some('}'), true) {
            Ok((replacement, _)) => replacement,
            Err(_) if self.at_end() => return Err(err(ExpandErrorKind::MissingBrace)),
            Err(e) => return Err(e),
        };
        let value = self.vars.get(name).unwrap_or_default();
        let replaced = if replace_all {
            pattern::replace_all(&value, &pattern, &replacement, MAX_EXPANDED_LEN)
        } else {
            pattern::replace_first(&value, &pattern, &replacement)
        };
        let replaced =
            replaced.map_err(|reason| err(ExpandErrorKind::InvalidPattern { pattern, reason }))?;
        if replaced.len() > MAX_EXPANDED_LEN {
            return Err(err(ExpandErrorKind::TooLarge));
        }
        Ok(replaced)
    }
}
