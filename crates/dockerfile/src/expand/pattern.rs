//! Shell patterns of `${V#p}`, `${V%p}` and `${V/p/r}`.
//!
//! BuildKit turns these patterns into a Go regular expression: `*` becomes
//! `.*` (or the lazy `.*?`), `?` becomes `.`, every other character is
//! literal, and a backslash escapes `*`, `?` or itself (a backslash before `}`
//! or `/` is dropped; any other escape is an error). There are no bracket
//! expressions. Go's `.` does not match a newline, so neither `*` nor `?`
//! crosses one; we keep that.
//!
//! Instead of a regex engine we run the pattern as a small NFA over the value:
//! with only `*`, `?` and literals, the leftmost-first match of an all-greedy
//! regex is the longest match at the leftmost start, and an all-lazy one is
//! the shortest, so a set of reachable end positions is all we need.

/// One element of a compiled shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters other than a newline.
    Star,
    /// `?`: one character other than a newline.
    Any,
    /// A character matched as is.
    Literal(char),
}

/// A compiled shell pattern.
#[derive(Debug, Clone)]
pub(super) struct ShellPattern {
    tokens: Vec<Token>,
}

impl ShellPattern {
    /// Compiles `pattern` the way BuildKit's `convertShellPatternToRegex` reads it.
    /// The error is the reason text (BuildKit's "invalid escape '\x'").
    pub(super) fn compile(pattern: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(ch) = chars.next() {
            match ch {
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::Any),
                '\\' => match chars.peek().copied() {
                    // `\}` and `\/` protect the delimiters of `${}`; the
                    // backslash is not part of the pattern.
                    Some('}') | Some('/') => {}
                    Some(next @ ('*' | '?' | '\\')) => {
                        chars.next();
                        tokens.push(Token::Literal(next));
                    }
                    Some(other) => return Err(format!("invalid escape '\\{other}'")),
                    None => return Err("invalid escape '\\' at end of pattern".to_string()),
                },
                other => tokens.push(Token::Literal(other)),
            }
        }
        Ok(ShellPattern { tokens })
    }

    /// Adds the states reachable from `states` without consuming input: a
    /// `*` may match nothing.
    fn close(&self, states: &mut [bool]) {
        for i in 0..self.tokens.len() {
            if states[i] && self.tokens[i] == Token::Star {
                states[i + 1] = true;
            }
        }
    }

    /// The states after reading `ch` from `states`.
    fn step(&self, states: &[bool], ch: char, next: &mut [bool]) {
        next.iter_mut().for_each(|s| *s = false);
        for (i, token) in self.tokens.iter().enumerate() {
            if !states[i] {
                continue;
            }
            match *token {
                Token::Star if ch != '\n' => next[i] = true,
                Token::Any if ch != '\n' => next[i + 1] = true,
                Token::Literal(lit) if lit == ch => next[i + 1] = true,
                _ => {}
            }
        }
        self.close(next);
    }

    /// The end (byte offset in `text`) of the shortest or longest match that
    /// starts at byte `start`, if any.
    fn match_end_at(&self, text: &str, start: usize, longest: bool) -> Option<usize> {
        let accept = self.tokens.len();
        let mut states = vec![false; accept + 1];
        let mut next = vec![false; accept + 1];
        states[0] = true;
        self.close(&mut states);
        let mut best = None;
        if states[accept] {
            if !longest {
                return Some(start);
            }
            best = Some(start);
        }
        let rest = text.get(start..)?;
        for (offset, ch) in rest.char_indices() {
            self.step(&states, ch, &mut next);
            std::mem::swap(&mut states, &mut next);
            if !states.iter().any(|s| *s) {
                break;
            }
            if states[accept] {
                let end = start + offset + ch.len_utf8();
                if !longest {
                    return Some(end);
                }
                best = Some(end);
            }
        }
        best
    }

    /// The leftmost match at or after byte `from`, longest at that start:
    /// what Go's `FindStringIndex` gives for the greedy regex.
    ///
    /// One pass over the text: each NFA state remembers the earliest start
    /// that reaches it (a later start through the same state can only do
    /// worse), a new attempt starts at each position until a match is
    /// found, and the scan stops once no attempt that could still beat the
    /// best match is alive.
    fn find_from(&self, text: &str, from: usize) -> Option<(usize, usize)> {
        let tail = text.get(from..)?;
        let accept = self.tokens.len();
        let mut states: Vec<Option<usize>> = vec![None; accept + 1];
        let mut next: Vec<Option<usize>> = vec![None; accept + 1];
        let mut best: Option<(usize, usize)> = None;
        let positions = tail
            .char_indices()
            .map(|(i, ch)| (from + i, Some(ch)))
            .chain(std::iter::once((text.len(), None)));
        for (pos, ch) in positions {
            if best.is_none() && states[0].is_none() {
                states[0] = Some(pos);
            }
            self.close_starts(&mut states);
            if let Some(start) = states[accept] {
                if best.is_none_or(|(best_start, _)| start <= best_start) {
                    best = Some((start, pos));
                }
            }
            if let Some((best_start, _)) = best {
                // Attempts that began after the best match cannot win.
                for state in states.iter_mut() {
                    if state.is_some_and(|start| start > best_start) {
                        *state = None;
                    }
                }
                if states.iter().all(Option::is_none) {
                    break;
                }
            }
            let Some(ch) = ch else { break };
            next.iter_mut().for_each(|s| *s = None);
            for (i, token) in self.tokens.iter().enumerate() {
                let Some(start) = states[i] else { continue };
                let target = match *token {
                    Token::Star if ch != '\n' => i,
                    Token::Any if ch != '\n' => i + 1,
                    Token::Literal(lit) if lit == ch => i + 1,
                    _ => continue,
                };
                next[target] = Some(next[target].map_or(start, |s| s.min(start)));
            }
            std::mem::swap(&mut states, &mut next);
        }
        best
    }

    /// `close` for states that carry the start of their attempt.
    fn close_starts(&self, states: &mut [Option<usize>]) {
        for i in 0..self.tokens.len() {
            if let (Some(start), Token::Star) = (states[i], self.tokens[i]) {
                states[i + 1] = Some(states[i + 1].map_or(start, |s| s.min(start)));
            }
        }
    }
}

/// `${V#p}` / `${V##p}`: removes the shortest (longest when `greedy`) prefix
/// of `value` matching `pattern`.
pub(super) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let compiled = ShellPattern::compile(pattern)?;
    Ok(match compiled.match_end_at(value, 0, greedy) {
        Some(end) => value[end..].to_string(),
        None => value.to_string(),
    })
}

/// `${V%p}` / `${V%%p}`: removes the shortest (longest) suffix. Like
/// BuildKit, reverses pattern and value and trims a prefix.
pub(super) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern but keeps each backslash escape in front of the
/// character it escapes (`a\*c` -> `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        units.push(&chars[i..i + len]);
        i += len;
    }
    units.iter().rev().flat_map(|unit| unit.iter()).collect()
}

/// `${V/p/r}`: replaces the first match of `pattern` with `replacement`,
/// taken literally.
pub(super) fn replace_first(
    value: &str,
    pattern: &str,
    replacement: &str,
) -> Result<String, String> {
    let compiled = ShellPattern::compile(pattern)?;
    Ok(match compiled.find_from(value, 0) {
        Some((start, end)) => format!("{}{}{}", &value[..start], replacement, &value[end..]),
        None => value.to_string(),
    })
}

/// `${V//p/r}`: replaces every match, as Go's `Regexp.ReplaceAllString`
/// does: the replacement is a template (`$0`/`${0}` is the match, `$$` a
/// dollar, other names are empty), an empty match right after a match is
/// not replaced, and the search always advances by at least one character.
///
/// Stops early once the output is longer than `limit` (nested replacements
/// multiply lengths); the caller rejects such a result.
pub(super) fn replace_all(
    value: &str,
    pattern: &str,
    replacement: &str,
    limit: usize,
) -> Result<String, String> {
    let compiled = ShellPattern::compile(pattern)?;
    let mut out = String::with_capacity(value.len());
    let mut last_match_end = 0;
    let mut search_pos = 0;
    while search_pos <= value.len() {
        let Some((start, end)) = compiled.find_from(value, search_pos) else {
            break;
        };
        out.push_str(&value[last_match_end..start]);
        if end > last_match_end || start == 0 {
            expand_template(&mut out, replacement, &value[start..end]);
        }
        last_match_end = end;
        if out.len() > limit {
            return Ok(out);
        }
        let width = value[search_pos..].chars().next().map_or(0, char::len_utf8);
        search_pos = if search_pos + width > end {
            search_pos + width
        } else if search_pos + 1 > end {
            // Only at the end of the value, where there is no next character.
            search_pos + 1
        } else {
            end
        };
    }
    out.push_str(&value[last_match_end..]);
    Ok(out)
}

/// Go's `Regexp.Expand` for a regex without capture groups.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match extract_group_name(rest) {
            Some((name, after)) => {
                if name == "0" {
                    out.push_str(matched);
                }
                rest = after;
            }
            // Malformed reference: the dollar is literal.
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// A `name` or `{name}` at the start of `text` (letters, digits, `_`), and
/// what follows it.
fn extract_group_name(text: &str) -> Option<(&str, &str)> {
    let (braced, body) = match text.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let len: usize = body
        .chars()
        .take_while(|c| super::is_go_letter(*c) || super::is_go_digit(*c) || *c == '_')
        .map(char::len_utf8)
        .sum();
    if len == 0 {
        return None;
    }
    let name = &body[..len];
    let after = &body[len..];
    if braced {
        return after.strip_prefix('}').map(|after| (name, after));
    }
    Some((name, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_pattern_keeps_escapes_in_front() {
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
        assert_eq!(reverse_pattern("\\\\\\ab"), "b\\a\\\\");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
        assert_eq!(reverse_pattern("\\\\b"), "b\\\\");
    }

    #[test]
    fn invalid_escapes_are_errors() {
        for bad in ["\\", "\\x", "\\\\\\"] {
            assert!(ShellPattern::compile(bad).is_err(), "{bad:?}");
        }
        assert!(ShellPattern::compile("\\*\\?\\\\\\}").is_ok());
    }

    #[test]
    fn star_and_question_do_not_cross_newlines() {
        assert_eq!(trim_prefix("*", "a\nb", true).unwrap(), "\nb");
        assert_eq!(trim_prefix("??", "a\nb", true).unwrap(), "a\nb");
    }

    #[test]
    fn replace_all_handles_empty_matches_like_go() {
        assert_eq!(
            replace_all("xxyy", "", "-", usize::MAX).unwrap(),
            "-x-x-y-y-"
        );
        assert_eq!(replace_all("ab", "*", "R", usize::MAX).unwrap(), "R");
        assert_eq!(
            replace_all("abc", "b", "[$0]", usize::MAX).unwrap(),
            "a[b]c"
        );
        assert_eq!(replace_all("abc", "b", "$$", usize::MAX).unwrap(), "a$c");
        assert_eq!(replace_all("abc", "b", "$1x", usize::MAX).unwrap(), "ac");
        assert_eq!(replace_all("abc", "b", "$", usize::MAX).unwrap(), "a$c");
        assert_eq!(replace_all("abc", "b", "${0", usize::MAX).unwrap(), "a${0c");
    }

    #[test]
    fn find_from_is_leftmost_then_longest() {
        let find = |p: &str, t: &str| ShellPattern::compile(p).unwrap().find_from(t, 0);
        assert_eq!(find("b*", "abcb"), Some((1, 4)));
        assert_eq!(find("b?", "abcb"), Some((1, 3)));
        assert_eq!(find("c", "abcb"), Some((2, 3)));
        assert_eq!(find("", "ab"), Some((0, 0)));
        assert_eq!(find("x", "ab"), None);
        assert_eq!(find("a*", "xa\nay"), Some((1, 2)));
        assert_eq!(find("*b", "aab"), Some((0, 3)));
        assert_eq!(find("ab*c", "abab-c"), Some((0, 6)));
        assert_eq!(find("é?", "aéü"), Some((1, 5)));
    }

    #[test]
    fn replace_first_is_literal() {
        assert_eq!(replace_first("abcb", "b", "$0").unwrap(), "a$0cb");
    }
}
