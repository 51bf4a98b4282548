//! Word splitting the way BuildKit's line parsers do it, before any
//! variable expansion: quotes and escapes stay in the words.

/// Go's `unicode.IsSpace`, which BuildKit uses to trim and split.
pub(crate) fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    ) || (c > '\u{ff}' && c.is_whitespace())
}

/// The `[\t\v\f\r ]` class BuildKit splits instruction words on.
pub(crate) fn is_token_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// A word and its byte offset in the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub text: String,
    pub offset: usize,
}

/// BuildKit's `parseWords` (ENV, LABEL, ARG): split on whitespace outside
/// quotes; quote characters and escape+char pairs are kept in the word; an
/// escape at the very end is dropped. Also reports whether the text ended
/// inside a quote (BuildKit's lexer rejects that when it expands the word).
pub(crate) fn parse_words(rest: &str, escape: char) -> (Vec<Word>, bool) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut start = 0;
    let mut blank_ok = false;
    let mut chars = rest.char_indices().peekable();
    while let Some((pos, ch)) = chars.next() {
        if phase == Phase::Spaces {
            if is_space(ch) {
                continue;
            }
            phase = Phase::Word;
            start = pos;
        }
        match phase {
            Phase::Word => {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(Word {
                            text: std::mem::take(&mut word),
                            offset: start,
                        });
                    }
                    word.clear();
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    match chars.next() {
                        None => continue,
                        Some((_, next)) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                }
                if ch == escape && q != '\'' {
                    match chars.next() {
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                        Some((_, next)) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Spaces => {}
        }
    }
    let unterminated = matches!(phase, Phase::Quote(_));
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(Word {
            text: word,
            offset: start,
        });
    }
    (words, unterminated)
}

/// Split on runs of `[\t\v\f\r ]` (BuildKit's `parseStringsWhitespaceDelimited`).
pub(crate) fn split_token_space(rest: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in rest.char_indices() {
        if is_token_space(c) {
            if let Some(s) = start.take() {
                out.push(Word {
                    text: rest[s..i].to_string(),
                    offset: s,
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(Word {
            text: rest[s..].to_string(),
            offset: s,
        });
    }
    // Go's regexp.Split keeps an empty word where the text starts with a
    // separator; the texts we split are already trimmed, so that never happens.
    out
}

/// Does the word leave a quote open, reading it as BuildKit's shell lexer
/// would (single quotes take everything literally, the escape character
/// escapes the next character elsewhere)? Returns the quote character.
pub(crate) fn open_quote(word: &str, escape: char) -> Option<char> {
    let mut quote: Option<char> = None;
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match quote {
            None => {
                if c == escape {
                    chars.next();
                } else if c == '\'' || c == '"' {
                    quote = Some(c);
                }
            }
            Some('\'') => {
                if c == '\'' {
                    quote = None;
                }
            }
            Some(q) => {
                if c == escape {
                    chars.next();
                } else if c == q {
                    quote = None;
                }
            }
        }
    }
    quote
}

/// Words of a line as BuildKit's heredoc detection sees them: its shell
/// lexer with raw quotes and raw escapes (escape is always `\` there).
/// Returns None where that lexer fails (open quote, unclosed `${`), in
/// which case BuildKit finds no heredocs on the line.
pub(crate) fn raw_shell_words(line: &str) -> Option<Vec<Word>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut start: Option<usize> = None;
    let mut chars = line.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        if is_space(c) {
            if let Some(s) = start.take() {
                words.push(Word {
                    text: std::mem::take(&mut word),
                    offset: s,
                });
            }
            continue;
        }
        if start.is_none() {
            start = Some(pos);
        }
        word.push(c);
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    word.push(n);
                }
            }
            '\'' => loop {
                let (_, n) = chars.next()?;
                word.push(n);
                if n == '\'' {
                    break;
                }
            },
            '"' => loop {
                let (_, n) = chars.next()?;
                word.push(n);
                if n == '\\' {
                    if let Some((_, e)) = chars.next() {
                        word.push(e);
                    }
                } else if n == '"' {
                    break;
                }
            },
            '$' => {
                if let Some(&(_, '{')) = chars.peek() {
                    let mut depth = 0usize;
                    loop {
                        let (_, n) = chars.next()?;
                        word.push(n);
                        match n {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            '\\' => {
                                if let Some((_, e)) = chars.next() {
                                    word.push(e);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(Word {
            text: word,
            offset: s,
        });
    }
    Some(words)
}

/// Remove quotes and escapes from a heredoc delimiter word the way
/// BuildKit's lexer does (escape `\`). Returns the word and whether any
/// quote was removed. None if the word is not exactly one word.
pub(crate) fn unquote_delimiter(word: &str) -> Option<(String, bool)> {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '\'' => {
                quoted = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        n => out.push(n),
                    }
                }
            }
            '"' => {
                quoted = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => {
                            let n = chars.next()?;
                            // Inside double quotes only these are escapable.
                            if !matches!(n, '"' | '\\' | '$' | '`') {
                                out.push('\\');
                            }
                            out.push(n);
                        }
                        n => out.push(n),
                    }
                }
            }
            c if c.is_whitespace() => return None,
            c => out.push(c),
        }
    }
    // BuildKit's lexer makes no word of an empty quoted string, so `<<""`
    // is not a heredoc.
    if out.is_empty() {
        return None;
    }
    Some((out, quoted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(w: &[Word]) -> Vec<&str> {
        w.iter().map(|w| w.text.as_str()).collect()
    }

    #[test]
    fn parse_words_keeps_quotes_and_escapes() {
        let (w, open) = parse_words(r#"a="b c" d=e\ f  g='h\'"#, '\\');
        assert_eq!(texts(&w), vec![r#"a="b c""#, r"d=e\ f", r"g='h\'"]);
        assert!(!open);
        let (w, open) = parse_words(r#"a="b"#, '\\');
        assert_eq!(texts(&w), vec![r#"a="b"#]);
        assert!(open);
    }

    #[test]
    fn parse_words_backtick_escape() {
        let (w, _) = parse_words("a=b` c d", '`');
        assert_eq!(texts(&w), vec!["a=b` c", "d"]);
    }

    #[test]
    fn raw_words_and_delimiters() {
        let w = raw_shell_words(r#"RUN cat <<"EOF" | x <<-'E O' ${a b}"#).unwrap();
        assert_eq!(
            texts(&w),
            vec!["RUN", "cat", r#"<<"EOF""#, "|", "x", "<<-'E O'", "${a b}"]
        );
        assert!(raw_shell_words("RUN echo \"open").is_none());
        assert_eq!(unquote_delimiter(r#""EOF""#), Some(("EOF".into(), true)));
        assert_eq!(unquote_delimiter(r"E'O'F"), Some(("EOF".into(), true)));
        assert_eq!(unquote_delimiter(r"\EOF"), Some(("EOF".into(), false)));
        assert_eq!(unquote_delimiter("\"\""), None);
    }

    #[test]
    fn open_quotes() {
        assert_eq!(open_quote("it's", '\\'), Some('\''));
        assert_eq!(open_quote(r"it\'s", '\\'), None);
        assert_eq!(open_quote(r#""a\"b""#, '\\'), None);
    }
}
