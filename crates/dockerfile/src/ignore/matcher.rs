//! One cleaned pattern, compiled the way patternmatcher's `compile` does.
//!
//! patternmatcher classifies each pattern: no wildcard at all is an exact
//! string comparison; `prefix**` with a literal prefix is a prefix test;
//! a pattern starting with `**` and literal after it is a suffix test
//! (`**/foo` also matches `foo` itself); everything else becomes an
//! anchored regular expression where `*` is `[^/]*`, `?` is `[^/]`, `**`
//! is `(.*/)?` (or `.*` at the end), and `[`, `]`, `\x` pass through.

use super::regex::{Regex, RegexError};

/// How a pattern is tested against a path.
#[derive(Debug, Clone)]
pub(super) enum Matcher {
    /// The path equals the pattern.
    Exact(String),
    /// The path starts with this (the pattern minus its final `**`).
    Prefix(String),
    /// The path ends with this (the pattern minus its leading `**`), or is
    /// it without its leading `/`.
    Suffix(String),
    /// The translated regular expression matches.
    Regex(Regex),
}

impl Matcher {
    /// Compiles a cleaned pattern (without its `!`).
    pub(super) fn compile(pattern: &str) -> Result<Matcher, RegexError> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Kind {
            Exact,
            Prefix,
            Suffix,
            Regex,
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut source = String::from("^");
        let mut kind = Kind::Exact;
        let mut k = 0;
        // `iteration` counts top-level steps: `**` sets a suffix test only
        // when it is the very first one.
        let mut iteration = 0;
        while k < chars.len() {
            let ch = chars[k];
            k += 1;
            match ch {
                '*' if chars.get(k) == Some(&'*') => {
                    k += 1;
                    // `**/` is read as `**`.
                    if chars.get(k) == Some(&'/') {
                        k += 1;
                    }
                    if k == chars.len() {
                        if kind == Kind::Exact {
                            kind = Kind::Prefix;
                        } else {
                            source.push_str(".*");
                            kind = Kind::Regex;
                        }
                    } else {
                        source.push_str("(.*/)?");
                        kind = Kind::Regex;
                    }
                    if iteration == 0 {
                        kind = Kind::Suffix;
                    }
                }
                '*' => {
                    source.push_str("[^/]*");
                    kind = Kind::Regex;
                }
                '?' => {
                    source.push_str("[^/]");
                    kind = Kind::Regex;
                }
                // Regex metacharacters with no glob meaning.
                '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                    source.push('\\');
                    source.push(ch);
                }
                '\\' => match chars.get(k) {
                    Some(&next) => {
                        k += 1;
                        source.push('\\');
                        source.push(next);
                        kind = Kind::Regex;
                    }
                    None => source.push_str("\\\\"),
                },
                '[' | ']' => {
                    source.push(ch);
                    kind = Kind::Regex;
                }
                other => source.push(other),
            }
            iteration += 1;
        }
        Ok(match kind {
            Kind::Exact => Matcher::Exact(pattern.to_string()),
            Kind::Prefix => Matcher::Prefix(strip_last_two_chars(pattern)),
            Kind::Suffix => Matcher::Suffix(strip_first_two_chars(pattern)),
            Kind::Regex => {
                source.push('$');
                Matcher::Regex(Regex::new(&source)?)
            }
        })
    }

    /// Whether `path` (cleaned, `/`-separated) matches.
    pub(super) fn matches(&self, path: &str) -> bool {
        match self {
            Matcher::Exact(exact) => path == exact,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|bare| path == bare)
            }
            Matcher::Regex(regex) => regex.is_match(path),
        }
    }

    /// Whether `path` or one of its parent directories matches
    /// (patternmatcher's `MatchesOrParentMatches` for one pattern).
    pub(super) fn matches_path_or_parent(&self, path: &str) -> bool {
        if let Matcher::Regex(regex) = self {
            return regex.matches_path_or_parent(path);
        }
        self.matches(path)
            || path
                .match_indices('/')
                .any(|(slash, _)| self.matches(&path[..slash]))
    }

    /// A string every matching path starts with (possibly empty). Used to
    /// decide that an exception cannot reach into a directory.
    pub(super) fn literal_prefix(&self, pattern: &str) -> String {
        match self {
            Matcher::Exact(exact) => exact.clone(),
            Matcher::Prefix(prefix) => prefix.clone(),
            Matcher::Suffix(_) => String::new(),
            Matcher::Regex(_) => pattern
                .chars()
                .take_while(|c| !matches!(c, '*' | '?' | '[' | ']' | '\\' | '^'))
                .collect(),
        }
    }
}

/// The pattern without its `**` at the end (the prefix kind ends with it).
fn strip_last_two_chars(pattern: &str) -> String {
    pattern.strip_suffix("**").unwrap_or(pattern).to_string()
}

/// The pattern without its `**` at the start (the suffix kind starts with it).
fn strip_first_two_chars(pattern: &str) -> String {
    pattern.strip_prefix("**").unwrap_or(pattern).to_string()
}
