//! One logical line to a syntax node, mirroring BuildKit's
//! `newNodeFromLine`: split off the instruction word and `--flags`, then
//! read the arguments with the line parser that instruction uses.

use super::words::{
    is_space, is_token_space, parse_words, raw_shell_words, split_token_space, unquote_delimiter,
    Word,
};

/// An error inside a logical line, at a byte offset of that line.
#[derive(Debug)]
pub(crate) struct NodeError {
    pub offset: usize,
    pub message: String,
}

fn node_err(offset: usize, message: impl Into<String>) -> NodeError {
    NodeError {
        offset,
        message: message.into(),
    }
}

/// How an instruction's arguments were read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Args {
    /// No arguments at all.
    Empty,
    /// A JSON array of strings.
    Json(Vec<String>),
    /// The rest of the line as one string (shell form, USER, WORKDIR, ...).
    Text(Word),
    /// Whitespace-separated words (FROM, EXPOSE, COPY/ADD/VOLUME non-JSON).
    Words(Vec<Word>),
    /// ENV/LABEL pairs: key, value, offset of the pair.
    Pairs(Vec<(String, String, usize)>),
    /// ARG words (`name` or `name=value`), quotes kept.
    ArgWords(Vec<Word>),
    /// HEALTHCHECK: the type word and the command after it.
    Health(Word, Box<Args>),
    /// ONBUILD: the wrapped instruction.
    Sub(Box<Node>),
}

/// A heredoc announced on an instruction line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeredocSpec {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: u32,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// Lowercase instruction name.
    pub name: String,
    /// Byte offset of the instruction word in the logical line.
    pub at: usize,
    /// `--flag[=value]` words with quotes removed, and their offsets.
    pub flags: Vec<Word>,
    pub args: Args,
    /// Offset where the arguments start.
    pub args_at: usize,
    /// The text of this instruction (for ONBUILD's child: after ONBUILD).
    pub original: String,
    pub heredocs: Vec<HeredocSpec>,
}

impl Node {
    pub fn is_json(&self) -> bool {
        match &self.args {
            Args::Json(_) => true,
            Args::Health(_, inner) => matches!(**inner, Args::Json(_)),
            _ => false,
        }
    }

    /// BuildKit's `canContainHeredoc`: RUN/COPY/ADD (also under ONBUILD), not in JSON form.
    fn can_contain_heredoc(&self) -> bool {
        let node = match &self.args {
            Args::Sub(child) if self.name == "onbuild" => child,
            _ => self,
        };
        matches!(node.name.as_str(), "run" | "copy" | "add") && !node.is_json()
    }
}

/// How deep ONBUILD may nest before the rest is left unparsed. Nesting is
/// refused anyway (`ONBUILD ONBUILD`); the cap keeps a line of thousands
/// of ONBUILD words from exhausting the stack.
const MAX_ONBUILD_DEPTH: usize = 8;

/// Parse one logical line (`line` starts at byte `base` of the logical text).
pub(crate) fn parse_node(line: &str, base: usize, escape: char) -> Result<Node, NodeError> {
    parse_node_at_depth(line, base, escape, 0)
}

fn parse_node_at_depth(
    line: &str,
    base: usize,
    escape: char,
    depth: usize,
) -> Result<Node, NodeError> {
    let trimmed = line.trim_start_matches(is_space);
    let lead = line.len() - trimmed.len();
    let trimmed = trimmed.trim_end_matches(is_space);
    let cmd_len = trimmed.find(is_token_space).unwrap_or(trimmed.len());
    let name = trimmed[..cmd_len].to_lowercase();
    let at = base + lead;
    let after_cmd = &trimmed[cmd_len..];
    let after_sep = after_cmd.trim_start_matches(is_token_space);
    let sep_end = lead + cmd_len + (after_cmd.len() - after_sep.len());
    let (flags, rest_start) = extract_flags(after_sep);
    let flags = flags
        .into_iter()
        .map(|w| Word {
            text: w.text,
            offset: base + sep_end + w.offset,
        })
        .collect();
    let rest_raw = &after_sep[rest_start..];
    let rest = rest_raw.trim_start_matches(is_space);
    let args_at = base + sep_end + rest_start + (rest_raw.len() - rest.len());
    let rest = rest.trim_end_matches(is_space);
    let args = match name.as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest, args_at)?,
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(rest, args_at)?,
        "arg" => parse_name_or_name_val(rest, args_at, escape),
        "env" => parse_name_val(rest, args_at, escape, "ENV")?,
        "label" => parse_name_val(rest, args_at, escape, "LABEL")?,
        "expose" | "from" => words_at(rest, args_at),
        "healthcheck" => parse_health_config(rest, args_at)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => text_at(rest, args_at),
        "onbuild" => {
            if rest.is_empty() || depth >= MAX_ONBUILD_DEPTH {
                Args::Empty
            } else {
                Args::Sub(Box::new(parse_node_at_depth(
                    rest,
                    args_at,
                    escape,
                    depth + 1,
                )?))
            }
        }
        // BuildKit's parser ignores the arguments of unknown instructions;
        // the instruction itself is rejected later.
        _ => Args::Empty,
    };
    let mut node = Node {
        name,
        at,
        flags,
        args,
        args_at,
        original: line.to_string(),
        heredocs: Vec::new(),
    };
    if node.can_contain_heredoc() && line.contains("<<") {
        node.heredocs = heredocs_in(line, base);
        if let Args::Words(words) = &mut node.args {
            join_spaced_heredoc_sources(words);
        }
    }
    Ok(node)
}

/// COPY/ADD `<<  FILE /dest`: the operator and its name are one source.
fn join_spaced_heredoc_sources(words: &mut Vec<Word>) {
    let mut i = 0;
    while i + 1 < words.len() {
        if is_bare_heredoc_operator(&words[i].text) {
            let next = words.remove(i + 1);
            words[i].text.push_str(&next.text);
        }
        i += 1;
    }
}

/// BuildKit's `extractBuilderFlags`: leading words that start with `--`,
/// with quotes and backslashes removed. Returns the flags (offsets relative
/// to `line`) and where the remaining text starts.
fn extract_flags(line: &str) -> (Vec<Word>, usize) {
    #[derive(PartialEq, Clone, Copy)]
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
    let mut chars = line.char_indices().peekable();
    loop {
        let Some((pos, ch)) = chars.next() else {
            if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
                words.push(Word {
                    text: word,
                    offset: start,
                });
            }
            return (words, line.len());
        };
        if phase == Phase::Spaces {
            if is_space(ch) {
                continue;
            }
            if ch != '-' || chars.peek().map(|&(_, c)| c) != Some('-') {
                return (words, pos);
            }
            phase = Phase::Word;
            start = pos;
        }
        match phase {
            Phase::Word => {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (words, pos);
                    }
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
                    continue;
                }
                let ch = if ch == '\\' {
                    match chars.next() {
                        Some((_, n)) => n,
                        None => continue,
                    }
                } else {
                    ch
                };
                word.push(ch);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    continue;
                }
                let ch = if ch == '\\' {
                    match chars.next() {
                        Some((_, n)) => n,
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                    }
                } else {
                    ch
                };
                word.push(ch);
            }
            Phase::Spaces => {}
        }
    }
}

/// Outcome of reading the arguments as a JSON array.
enum Json {
    Text,
    Strings(Vec<String>),
    NotStrings,
}

/// BuildKit's `parseJSON`: the text must start with `[`; the first JSON
/// value is decoded and anything after it ignored (Go's json.Decoder).
fn parse_json(rest: &str) -> Json {
    if !rest.starts_with('[') {
        return Json::Text;
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    match stream.next() {
        Some(Ok(serde_json::Value::Array(items))) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Strings(out)
        }
        _ => Json::Text,
    }
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

fn parse_maybe_json(rest: &str, at: usize) -> Result<Args, NodeError> {
    if rest.is_empty() {
        return Ok(Args::Empty);
    }
    match parse_json(rest) {
        Json::Strings(v) => Ok(Args::Json(v)),
        Json::NotStrings => Err(node_err(at, NOT_STRING_ARRAY)),
        Json::Text => Ok(text_at(rest, at)),
    }
}

fn parse_maybe_json_to_list(rest: &str, at: usize) -> Result<Args, NodeError> {
    match parse_json(rest) {
        Json::Strings(v) => Ok(Args::Json(v)),
        Json::NotStrings => Err(node_err(at, NOT_STRING_ARRAY)),
        Json::Text => Ok(words_at(rest, at)),
    }
}

fn text_at(rest: &str, at: usize) -> Args {
    if rest.is_empty() {
        Args::Empty
    } else {
        Args::Text(Word {
            text: rest.to_string(),
            offset: at,
        })
    }
}

fn words_at(rest: &str, at: usize) -> Args {
    if rest.is_empty() {
        return Args::Empty;
    }
    Args::Words(shift(split_token_space(rest), at))
}

fn shift(words: Vec<Word>, at: usize) -> Vec<Word> {
    words
        .into_iter()
        .map(|w| Word {
            text: w.text,
            offset: w.offset + at,
        })
        .collect()
}

/// ENV and LABEL: `k=v ...`, or the legacy `k v` (the rest of the line is the value).
fn parse_name_val(rest: &str, at: usize, escape: char, key: &str) -> Result<Args, NodeError> {
    let (words, _) = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Args::Empty);
    };
    if !first.text.contains('=') {
        let name_len = rest.find(is_token_space).unwrap_or(rest.len());
        let value = rest[name_len..].trim_start_matches(is_token_space);
        if name_len == rest.len() {
            return Err(node_err(at, format!("{key} must have two arguments")));
        }
        return Ok(Args::Pairs(vec![(
            rest[..name_len].to_string(),
            value.to_string(),
            at,
        )]));
    }
    let mut pairs = Vec::with_capacity(words.len());
    for w in words {
        let Some((k, v)) = w.text.split_once('=') else {
            return Err(node_err(
                at + w.offset,
                format!(
                    "Syntax error - can't find = in {:?}. Must be of the form: name=value",
                    w.text
                ),
            ));
        };
        pairs.push((k.to_string(), v.to_string(), at + w.offset));
    }
    Ok(Args::Pairs(pairs))
}

fn parse_name_or_name_val(rest: &str, at: usize, escape: char) -> Args {
    let (words, _) = parse_words(rest, escape);
    if words.is_empty() {
        Args::Empty
    } else {
        Args::ArgWords(shift(words, at))
    }
}

/// HEALTHCHECK: a type word (NONE or CMD) then a command read like CMD's.
fn parse_health_config(rest: &str, at: usize) -> Result<Args, NodeError> {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Args::Empty);
    }
    let after = &rest[sep..];
    let cmd = after.trim_start_matches(is_space);
    let cmd_at = at + sep + (after.len() - cmd.len());
    let typ = Word {
        text: rest[..sep].to_string(),
        offset: at,
    };
    Ok(Args::Health(typ, Box::new(parse_maybe_json(cmd, cmd_at)?)))
}

/// Heredocs announced on a line: words of BuildKit's shell lexer matching
/// `^(\d*)<<(-?)([^<]*)$` whose rest is a single word.
fn heredocs_in(line: &str, base: usize) -> Vec<HeredocSpec> {
    let Some(words) = raw_shell_words(line) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        // dockerfile 1.16+: `<<  EOF` (blanks after the operator) names
        // the heredoc with the next word, as a shell does.
        let spec = match (is_bare_heredoc_operator(&w.text), words.get(i + 1)) {
            (true, Some(next)) => {
                i += 1;
                parse_heredoc_word(&format!("{}{}", w.text, next.text))
            }
            _ => parse_heredoc_word(&w.text),
        };
        if let Some(mut h) = spec {
            h.offset = base + w.offset;
            found.push(h);
        }
        i += 1;
    }
    found
}

/// A word that is only a heredoc operator: `<<`, `<<-`, `3<<`.
fn is_bare_heredoc_operator(word: &str) -> bool {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    rest == "<<" || rest == "<<-"
}

/// Recognise one heredoc word such as `<<EOF`, `<<-"EOF"` or `3<<EOF`.
pub(crate) fn parse_heredoc_word(word: &str) -> Option<HeredocSpec> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let after = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    // BuildKit's pattern is `^(\d*)<<(-?)\s*([^<]*)$`.
    let rest = rest.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let (name, quoted) = unquote_delimiter(rest)?;
    Some(HeredocSpec {
        name,
        expand: !quoted,
        chomp,
        fd: word[..digits].parse().unwrap_or(0),
        offset: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(w: &[Word]) -> Vec<&str> {
        w.iter().map(|w| w.text.as_str()).collect()
    }

    #[test]
    fn flags_are_split_off() {
        let (f, at) = extract_flags(r#"--from=build --chown="a b" src dst"#);
        assert_eq!(texts(&f), vec!["--from=build", "--chown=a b"]);
        assert_eq!(&r#"--from=build --chown="a b" src dst"#[at..], "src dst");
        let (f, at) = extract_flags("-- --x y");
        assert!(f.is_empty());
        assert_eq!(&"-- --x y"[at..], " --x y");
        let (f, at) = extract_flags("--link");
        assert_eq!(texts(&f), vec!["--link"]);
        assert_eq!(at, 6);
    }

    #[test]
    fn json_fallback() {
        let n = parse_node(r#"CMD ["a", "b"] trailing"#, 0, '\\').unwrap();
        assert_eq!(n.args, Args::Json(vec!["a".into(), "b".into()]));
        let n = parse_node(r#"CMD ["a", b]"#, 0, '\\').unwrap();
        assert!(matches!(n.args, Args::Text(ref w) if w.text == r#"["a", b]"#));
        assert!(parse_node(r#"CMD ["a", 1]"#, 0, '\\').is_err());
    }

    #[test]
    fn env_forms() {
        let n = parse_node("ENV a b c", 0, '\\').unwrap();
        assert_eq!(n.args, Args::Pairs(vec![("a".into(), "b c".into(), 4)]));
        let n = parse_node(r#"ENV a="x y" b=z"#, 0, '\\').unwrap();
        assert_eq!(
            n.args,
            Args::Pairs(vec![
                ("a".into(), r#""x y""#.into(), 4),
                ("b".into(), "z".into(), 12)
            ])
        );
        assert!(parse_node("ENV a", 0, '\\').is_err());
        assert!(parse_node("ENV a=b c", 0, '\\').is_err());
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc_word(r#"<<-"EOF""#).unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOF", false, true));
        let h = parse_heredoc_word("3<<EOT").unwrap();
        assert_eq!((h.name.as_str(), h.fd), ("EOT", 3));
        assert!(parse_heredoc_word("<<<EOF").is_none());
        assert!(parse_heredoc_word("<<").is_none());
        let specs = heredocs_in("cat <<  EOF 2<<- \"Q\" << <x", 0);
        let names: Vec<_> = specs
            .iter()
            .map(|h| (h.name.as_str(), h.chomp, h.fd))
            .collect();
        assert_eq!(names, vec![("EOF", false, 0), ("Q", true, 2)]);
        assert_eq!(specs[0].offset, 4);
        assert!(parse_heredoc_word("a<<EOF").is_none());
    }
}
