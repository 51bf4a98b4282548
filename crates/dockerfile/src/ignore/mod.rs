//! `.dockerignore` with the semantics of BuildKit's reader
//! (`dockerignore.ReadAll`) and moby's `patternmatcher`.
//!
//! Reading a file: a UTF-8 BOM goes; a line whose first character is `#`
//! is a comment (only in the first column: `  #x` is the pattern `#x`);
//! each line is trimmed; blank lines go; `!` marks an exception; the rest
//! is cleaned like Go's `filepath.Clean` and loses one leading `/`.
//!
//! Matching a path: patterns apply in order and the last one that matches
//! decides; a pattern that matches a parent directory matches everything
//! below it. See `matcher` for the pattern language.

mod clean;
mod glob;
mod matcher;
mod regex;
#[cfg(test)]
mod tests;

use clean::clean_path;
use matcher::Matcher;
use regex::RegexError;

/// A `.dockerignore` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A line that is only `!` (after cleaning), which excludes nothing.
    #[error("line {line}: illegal exclusion pattern: \"!\"")]
    IllegalException {
        /// 1-based line number.
        line: usize,
    },
    /// A pattern Docker rejects too (`[` unterminated, trailing `\`, ...).
    #[error("line {line}: bad pattern {pattern:?}: {reason}")]
    BadPattern {
        /// 1-based line number.
        line: usize,
        /// The pattern after cleaning, without `!`.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// A pattern Docker accepts but Cairn does not emulate (regex escapes
    /// such as `\pL` or `\x41` that patternmatcher hands to Go's regexp).
    #[error("line {line}: pattern {pattern:?} is not supported: {reason}")]
    Unsupported {
        /// 1-based line number.
        line: usize,
        /// The pattern after cleaning, without `!`.
        pattern: String,
        /// Which construct.
        reason: String,
    },
}

/// One pattern of a `.dockerignore`.
#[derive(Debug, Clone)]
pub struct IgnorePattern {
    text: String,
    exception: bool,
    line: usize,
    matcher: Matcher,
}

impl IgnorePattern {
    /// The cleaned pattern, without the `!` of an exception.
    pub fn pattern(&self) -> &str {
        &self.text
    }

    /// Whether this is an exception (`!pattern`), which re-includes.
    pub fn is_exception(&self) -> bool {
        self.exception
    }

    /// The 1-based line it comes from.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Whether the pattern matches `path` or one of its parent directories
    /// (patternmatcher's `MatchesOrParentMatches` for one pattern).
    fn matches_or_parent(&self, path: &str) -> bool {
        self.matcher.matches_path_or_parent(path)
    }
}

/// The parsed rules of a `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<IgnorePattern>,
}

impl DockerIgnore {
    /// Reads the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<DockerIgnore, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines = text
            .split('\n')
            .enumerate()
            .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)));
        let mut patterns = Vec::new();
        for (line_number, line) in lines {
            if let Some(pattern) = read_line(line) {
                patterns.push(compile_pattern(&pattern, line_number)?);
            }
        }
        Ok(DockerIgnore { patterns })
    }

    /// Builds the rules from patterns as given to patternmatcher directly
    /// (`COPY --exclude` takes this path): each is trimmed and cleaned but
    /// keeps a leading `/`. Errors number the patterns from 1 as lines.
    pub fn from_patterns<I, S>(patterns: I) -> Result<DockerIgnore, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut compiled = Vec::new();
        for (index, pattern) in patterns.into_iter().enumerate() {
            let pattern = pattern.as_ref().trim();
            if !pattern.is_empty() {
                compiled.push(compile_pattern(pattern, index + 1)?);
            }
        }
        Ok(DockerIgnore { patterns: compiled })
    }

    /// The patterns in order.
    pub fn patterns(&self) -> &[IgnorePattern] {
        &self.patterns
    }

    /// Whether there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exception.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `rel_path` (relative to the context root, `/`-separated) is
    /// left out of the context. The path is cleaned first; the root itself
    /// (`""`, `.`, `/`) is never excluded.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let cleaned = clean_path(rel_path);
        let path = cleaned.trim_start_matches('/');
        if path.is_empty() || path == "." {
            return false;
        }
        let mut excluded = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an excluded path, nor an exception
            // an included one: skip the work.
            if pattern.exception != excluded {
                continue;
            }
            if pattern.matches_or_parent(path) {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Whether a walker may skip the directory `rel_dir` without looking
    /// inside: it is excluded and no exception can match anything below
    /// it. The answer errs on the side of `false` (walk and test each path).
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        if !self.is_excluded(rel_dir) {
            return false;
        }
        let cleaned = clean_path(rel_dir);
        let dir_slash = format!("{}/", cleaned.trim_start_matches('/'));
        self.patterns.iter().filter(|p| p.exception).all(|p| {
            let prefix = p.matcher.literal_prefix(&p.text);
            // The exception's matches all start with `prefix`; they can
            // only lie below the directory if it is compatible with it.
            !(dir_slash.starts_with(&prefix) || prefix.starts_with(&dir_slash))
        })
    }
}

/// `ReadAll`'s treatment of one line: `None` for comments and blank lines,
/// else the pattern with its `!`, cleaned and without a leading `/`.
fn read_line(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return None;
    }
    let (exception, body) = match trimmed.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, trimmed),
    };
    let mut pattern = String::new();
    if !body.is_empty() {
        let cleaned = clean_path(body);
        pattern = match cleaned.strip_prefix('/') {
            Some(rest) if !rest.is_empty() => rest.to_string(),
            _ => cleaned,
        };
    }
    Some(if exception {
        format!("!{pattern}")
    } else {
        pattern
    })
}

/// patternmatcher's `New` for one pattern: trim, clean (with the `!`),
/// split off the `!`, check the syntax, compile.
fn compile_pattern(raw: &str, line: usize) -> Result<IgnorePattern, IgnoreError> {
    let cleaned = clean_path(raw.trim());
    let (exception, text) = match cleaned.strip_prefix('!') {
        Some("") => return Err(IgnoreError::IllegalException { line }),
        Some(rest) => (true, rest.to_string()),
        None => (false, cleaned),
    };
    if let Err(reason) = glob::check_glob_syntax(&text) {
        return Err(IgnoreError::BadPattern {
            line,
            pattern: text,
            reason: reason.to_string(),
        });
    }
    // patternmatcher compiles lazily, at the first match, and fails the
    // build then; compiling here reports the same patterns earlier.
    let matcher = match Matcher::compile(&text) {
        Ok(matcher) => matcher,
        Err(RegexError::Syntax(reason)) => {
            return Err(IgnoreError::BadPattern {
                line,
                pattern: text,
                reason,
            })
        }
        Err(RegexError::Unsupported(reason)) => {
            return Err(IgnoreError::Unsupported {
                line,
                pattern: text,
                reason,
            })
        }
    };
    Ok(IgnorePattern {
        text,
        exception,
        line,
        matcher,
    })
}

/// The ignore files BuildKit looks for, in order of precedence: the
/// Dockerfile's own (`<path to Dockerfile>.dockerignore`, next to it), then
/// `.dockerignore` at the context root. The first that exists is used and
/// the other is not read at all.
pub fn ignore_file_candidates(dockerfile_path: &str) -> Vec<String> {
    let root = ".dockerignore".to_string();
    if dockerfile_path.is_empty() {
        return vec![root];
    }
    vec![format!("{dockerfile_path}.dockerignore"), root]
}
