//! The syntax check patternmatcher makes with Go's `filepath.Match`.
//!
//! patternmatcher never matches with `filepath.Match`; it calls it once
//! with the name "." only to reject what that function calls a bad
//! pattern. Go splits the pattern into chunks at each `*` outside brackets
//! and parses every chunk: a `\` must escape something, and a `[` class
//! needs at least one item before its `]`, where an item is a character
//! (`\` escapes one) or a range `lo-hi`, and neither may start with `-` or
//! `]`. Go does not check that `lo <= hi`, and knows no `[!...]`.

/// Why a pattern is malformed, or `Ok` when `filepath.Match` accepts it.
pub(super) fn check_glob_syntax(pattern: &str) -> Result<(), &'static str> {
    let mut rest = pattern;
    while !rest.is_empty() {
        rest = rest.trim_start_matches('*');
        let end = chunk_end(rest);
        check_chunk(&rest[..end])?;
        rest = &rest[end..];
    }
    Ok(())
}

/// Byte length of the chunk at the start of `text`: up to the first `*`
/// outside brackets, as Go's `scanChunk` tracks them.
fn chunk_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut in_range = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    // `\` escapes skip a byte; a multi-byte character never holds `*`, `[`,
    // `]` or `\` bytes, so a stop is always on a character boundary. A skip
    // may land inside one, which we walk back out of.
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Parses one chunk (no unbracketed `*`).
fn check_chunk(chunk: &str) -> Result<(), &'static str> {
    let mut rest = chunk;
    while let Some(first) = rest.chars().next() {
        match first {
            '[' => {
                rest = &rest[1..];
                if let Some(after) = rest.strip_prefix('^') {
                    rest = after;
                }
                let mut items = 0;
                loop {
                    if items > 0 {
                        if let Some(after) = rest.strip_prefix(']') {
                            rest = after;
                            break;
                        }
                    }
                    rest = class_char(rest)?;
                    if let Some(after) = rest.strip_prefix('-') {
                        rest = class_char(after)?;
                    }
                    items += 1;
                }
            }
            '\\' => {
                rest = &rest[1..];
                let Some(escaped) = rest.chars().next() else {
                    return Err("trailing backslash");
                };
                rest = &rest[escaped.len_utf8()..];
            }
            other => rest = &rest[other.len_utf8()..],
        }
    }
    Ok(())
}

/// One character of a class (Go's `getEsc`), returning what follows it;
/// something must follow, since the class still needs its `]`.
fn class_char(text: &str) -> Result<&str, &'static str> {
    let mut rest = match text.chars().next() {
        None => return Err("unterminated character class"),
        Some('-') => return Err("'-' at the start of a character class item"),
        Some(']') => return Err("empty character class"),
        Some('\\') => &text[1..],
        Some(_) => text,
    };
    let Some(ch) = rest.chars().next() else {
        return Err("unterminated character class");
    };
    rest = &rest[ch.len_utf8()..];
    if rest.is_empty() {
        return Err("unterminated character class");
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::check_glob_syntax;

    #[test]
    fn accepts_what_filepath_match_accepts() {
        for good in [
            "abc", "*", "a*b?c", "ab[c]", "ab[b-d]", "ab[^e-g]", "a\\*b", "[\\]a]", "[\\-]",
            "[x\\-]", "[a-ζ]*", "[*]", "[**]", "[[]", "]", "a]b", "[z-a]", "[!a]", "**/*.go",
            "é\\é",
        ] {
            assert_eq!(check_glob_syntax(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn rejects_what_filepath_match_rejects() {
        for bad in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "a*[",
            "[a]*\\", "*[]",
        ] {
            assert!(check_glob_syntax(bad).is_err(), "{bad:?}");
        }
    }
}
