//! The part of Go's `regexp` syntax that patternmatcher's translated
//! patterns can contain, parsed and run the way Go does.
//!
//! patternmatcher copies `[`, `]`, `^` and backslash escapes from the
//! pattern into the regular expression unchanged, so Go's regex rules, not
//! glob rules, decide what they mean: `[^a]` negates, `[!a]` does not, a
//! class may match `/` and newlines, `[:alpha:]` and `\d` work, and a `*`
//! or `?` inside brackets is expanded into regex text that the class then
//! swallows. Reading the translated text with Go's rules gives the same
//! answers. Escapes Go knows but we do not emulate (`\pL`, `\x41`, `\b`,
//! `\A`, `\z`, octal, `\Q...\E`) are reported as unsupported instead of
//! guessed.
//!
//! Matching is a Thompson NFA run as a set of states (no backtracking), so
//! time is linear in the path length times the pattern length.

/// Why a regex could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RegexError {
    /// Go's `regexp.Compile` rejects it too.
    Syntax(String),
    /// Go accepts it but we do not implement it.
    Unsupported(String),
}

/// A set of characters: ranges, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CharClass {
    ranges: Vec<(char, char)>,
    negated: bool,
}

impl CharClass {
    fn matches(&self, ch: char) -> bool {
        let inside = self.ranges.iter().any(|(lo, hi)| *lo <= ch && ch <= *hi);
        inside != self.negated
    }
}

/// The syntax tree of the supported subset.
#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Class(CharClass),
    /// `.`: any character but a newline.
    AnyNotNewline,
    /// `^`.
    BeginText,
    /// `$`.
    EndText,
    Concat(Vec<Node>),
    Star(Box<Node>),
    Plus(Box<Node>),
    Quest(Box<Node>),
}

/// One NFA instruction.
#[derive(Debug, Clone)]
enum Inst {
    Char(char),
    Class(CharClass),
    AnyNotNewline,
    BeginText,
    EndText,
    Split(usize, usize),
    Jump(usize),
    Match,
}

/// A compiled regular expression.
#[derive(Debug, Clone)]
pub(super) struct Regex {
    program: Vec<Inst>,
}

impl Regex {
    /// Parses `source` with Go's rules (the Perl flags `regexp.Compile` uses).
    pub(super) fn new(source: &str) -> Result<Regex, RegexError> {
        let chars: Vec<char> = source.chars().collect();
        let mut parser = Parser {
            chars: &chars,
            pos: 0,
        };
        let node = parser.sequence(0)?;
        let mut program = Vec::new();
        emit(&node, &mut program);
        program.push(Inst::Match);
        Ok(Regex { program })
    }

    /// Whether the regex matches anywhere in `text` (Go's `MatchString`).
    pub(super) fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let mut ends = vec![false; chars.len() + 1];
        ends[chars.len()] = true;
        self.search(&chars, &ends)
    }

    /// Whether the regex matches `path` or one of its parent directories
    /// (the part before any `/`), in one pass instead of one per parent.
    ///
    /// This relies on `$` being the last thing before the end of the
    /// program, as in every translated pattern (`\z` is not supported):
    /// then "matches `path[..i]`" is "reaches `$` at `i`".
    pub(super) fn matches_path_or_parent(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        let mut ends: Vec<bool> = chars.iter().map(|c| *c == '/').collect();
        ends.push(true);
        self.search(&chars, &ends)
    }

    /// The NFA run: `ends[i]` says whether `$` holds at char position `i`.
    fn search(&self, chars: &[char], ends: &[bool]) -> bool {
        let size = self.program.len();
        let mut current: Vec<usize> = Vec::with_capacity(size);
        let mut next: Vec<usize> = Vec::with_capacity(size);
        let mut seen = vec![usize::MAX; size];
        let mut stack = Vec::new();
        for pos in 0..=chars.len() {
            let at_end = ends.get(pos).copied().unwrap_or(false);
            // Unanchored search: a new attempt starts at every position.
            if self.add_thread(0, pos, at_end, &mut current, &mut seen, &mut stack) {
                return true;
            }
            let Some(&ch) = chars.get(pos) else { break };
            next.clear();
            let next_end = ends.get(pos + 1).copied().unwrap_or(false);
            for &pc in &current {
                let advances = match &self.program[pc] {
                    Inst::Char(c) => *c == ch,
                    Inst::Class(class) => class.matches(ch),
                    Inst::AnyNotNewline => ch != '\n',
                    _ => false,
                };
                if advances
                    && self.add_thread(pc + 1, pos + 1, next_end, &mut next, &mut seen, &mut stack)
                {
                    return true;
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        false
    }

    /// Adds `pc` and everything reachable from it without reading input to
    /// `list`; true when that reaches `Match`.
    /// `seen[pc] == pos` marks what is already in the list for position `pos`.
    fn add_thread(
        &self,
        pc: usize,
        pos: usize,
        at_end: bool,
        list: &mut Vec<usize>,
        seen: &mut [usize],
        stack: &mut Vec<usize>,
    ) -> bool {
        stack.clear();
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if seen[pc] == pos {
                continue;
            }
            seen[pc] = pos;
            match &self.program[pc] {
                Inst::Match => return true,
                Inst::Jump(to) => stack.push(*to),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::BeginText => {
                    if pos == 0 {
                        stack.push(pc + 1);
                    }
                }
                Inst::EndText => {
                    if at_end {
                        stack.push(pc + 1);
                    }
                }
                Inst::Char(_) | Inst::Class(_) | Inst::AnyNotNewline => list.push(pc),
            }
        }
        false
    }
}

/// Appends the instructions for `node` to `program`.
fn emit(node: &Node, program: &mut Vec<Inst>) {
    match node {
        Node::Char(c) => program.push(Inst::Char(*c)),
        Node::Class(class) => program.push(Inst::Class(class.clone())),
        Node::AnyNotNewline => program.push(Inst::AnyNotNewline),
        Node::BeginText => program.push(Inst::BeginText),
        Node::EndText => program.push(Inst::EndText),
        Node::Concat(nodes) => nodes.iter().for_each(|n| emit(n, program)),
        Node::Star(inner) => {
            let split = program.len();
            program.push(Inst::Split(0, 0));
            emit(inner, program);
            program.push(Inst::Jump(split));
            let after = program.len();
            program[split] = Inst::Split(split + 1, after);
        }
        Node::Plus(inner) => {
            let start = program.len();
            emit(inner, program);
            program.push(Inst::Split(start, program.len() + 1));
        }
        Node::Quest(inner) => {
            let split = program.len();
            program.push(Inst::Split(0, 0));
            emit(inner, program);
            let after = program.len();
            program[split] = Inst::Split(split + 1, after);
        }
    }
}

/// Recursive-descent parser over the regex text.
struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

fn syntax(message: impl Into<String>) -> RegexError {
    RegexError::Syntax(message.into())
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += 1;
        Some(ch)
    }

    /// A sequence of items up to `)` (inside a group) or the end.
    fn sequence(&mut self, depth: usize) -> Result<Node, RegexError> {
        let mut items: Vec<Node> = Vec::new();
        // Go forbids stacking repetitions (`a**`); track the last one.
        let mut last_was_repeat = false;
        while let Some(ch) = self.peek() {
            match ch {
                ')' => {
                    if depth == 0 {
                        return Err(syntax("unexpected )"));
                    }
                    break;
                }
                '*' | '+' | '?' => {
                    self.bump();
                    if last_was_repeat {
                        return Err(syntax(format!("invalid nested repetition operator: {ch}")));
                    }
                    let Some(operand) = items.pop() else {
                        return Err(syntax(format!(
                            "missing argument to repetition operator: {ch}"
                        )));
                    };
                    // A lazy `*?` matches the same strings as `*`.
                    if self.peek() == Some('?') {
                        self.bump();
                    }
                    let boxed = Box::new(operand);
                    items.push(match ch {
                        '*' => Node::Star(boxed),
                        '+' => Node::Plus(boxed),
                        _ => Node::Quest(boxed),
                    });
                    last_was_repeat = true;
                    continue;
                }
                '(' => {
                    self.bump();
                    if self.peek() == Some('?') {
                        return Err(RegexError::Unsupported("group flags".into()));
                    }
                    let inner = self.sequence(depth + 1)?;
                    if self.bump() != Some(')') {
                        return Err(syntax("missing closing )"));
                    }
                    items.push(inner);
                }
                '|' => return Err(RegexError::Unsupported("alternation".into())),
                '[' => {
                    self.bump();
                    items.push(Node::Class(self.class()?));
                }
                '\\' => {
                    self.bump();
                    items.push(self.escape_outside_class()?);
                }
                '.' => {
                    self.bump();
                    items.push(Node::AnyNotNewline);
                }
                '^' => {
                    self.bump();
                    items.push(Node::BeginText);
                }
                '$' => {
                    self.bump();
                    items.push(Node::EndText);
                }
                other => {
                    self.bump();
                    items.push(Node::Char(other));
                }
            }
            last_was_repeat = false;
        }
        Ok(Node::Concat(items))
    }

    /// A backslash escape outside brackets; the cursor is after the `\`.
    fn escape_outside_class(&mut self) -> Result<Node, RegexError> {
        let next = self.peek();
        if let Some(class) = next.and_then(perl_class) {
            self.bump();
            return Ok(Node::Class(class));
        }
        self.escaped_char().map(Node::Char)
    }

    /// A single-character escape (`\.`, `\t`, ...); the cursor is after `\`.
    fn escaped_char(&mut self) -> Result<char, RegexError> {
        let Some(ch) = self.bump() else {
            return Err(syntax("trailing backslash at end of expression"));
        };
        // Go: an escaped ASCII character that is not a letter or digit is itself.
        if ch.is_ascii() && !ch.is_ascii_alphanumeric() {
            return Ok(ch);
        }
        match ch {
            'a' => Ok('\x07'),
            'f' => Ok('\x0c'),
            't' => Ok('\t'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            'v' => Ok('\x0b'),
            '0'..='7' | 'x' | 'p' | 'P' | 'b' | 'B' | 'Q' | 'E' | 'C' | 'A' | 'z' => {
                Err(RegexError::Unsupported(format!("regex escape \\{ch}")))
            }
            _ => Err(syntax(format!("invalid escape sequence: \\{ch}"))),
        }
    }

    /// A bracket expression; the cursor is after `[`.
    fn class(&mut self) -> Result<CharClass, RegexError> {
        let missing = || syntax("missing closing ]");
        let mut class = CharClass {
            ranges: Vec::new(),
            negated: false,
        };
        if self.peek() == Some('^') {
            self.bump();
            class.negated = true;
        }
        // `]` (and `-`) right after the opening are literal.
        let mut first = true;
        loop {
            match self.peek() {
                None => return Err(missing()),
                Some(']') if !first => {
                    self.bump();
                    return Ok(class);
                }
                _ => {}
            }
            first = false;
            if self.named_class(&mut class)? {
                continue;
            }
            if self.peek() == Some('\\') {
                if let Some(perl) = self.chars.get(self.pos + 1).and_then(|c| perl_class(*c)) {
                    self.pos += 2;
                    add_class(&mut class, &perl);
                    continue;
                }
            }
            let lo = self.class_char()?;
            let mut hi = lo;
            // `a-]` is `a` and `-`.
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|c| *c != ']') {
                self.bump();
                hi = self.class_char()?;
                if hi < lo {
                    return Err(syntax(format!("invalid character class range: {lo}-{hi}")));
                }
            }
            class.ranges.push((lo, hi));
        }
    }

    /// One character of a class, maybe escaped.
    fn class_char(&mut self) -> Result<char, RegexError> {
        match self.bump() {
            None => Err(syntax("missing closing ]")),
            Some('\\') => self.escaped_char(),
            Some(ch) => Ok(ch),
        }
    }

    /// `[:name:]` / `[:^name:]` at the cursor, added to `class`. Like Go, a
    /// `[:` with no `:]` after it is an ordinary `[`, and an unknown name is
    /// an error.
    fn named_class(&mut self, class: &mut CharClass) -> Result<bool, RegexError> {
        if self.peek() != Some('[') || self.chars.get(self.pos + 1) != Some(&':') {
            return Ok(false);
        }
        let body = &self.chars[self.pos + 2..];
        let Some(end) = body.windows(2).position(|w| w == [':', ']']) else {
            return Ok(false);
        };
        let name: String = body[..end].iter().collect();
        let (negated, bare) = match name.strip_prefix('^') {
            Some(bare) => (true, bare),
            None => (false, name.as_str()),
        };
        let Some(ranges) = posix_class(bare) else {
            return Err(syntax(format!("invalid character class range: [:{name}:]")));
        };
        self.pos += 2 + end + 2;
        add_class(
            class,
            &CharClass {
                ranges: ranges.to_vec(),
                negated,
            },
        );
        Ok(true)
    }
}

/// Adds the characters of `extra` to `class` (a negated `extra` becomes
/// the ranges around it).
fn add_class(class: &mut CharClass, extra: &CharClass) {
    if !extra.negated {
        class.ranges.extend_from_slice(&extra.ranges);
        return;
    }
    let mut sorted = extra.ranges.clone();
    sorted.sort();
    let mut next = '\0';
    let mut open = true;
    for (lo, hi) in sorted {
        if lo > next {
            if let Some(before) = char::from_u32(lo as u32 - 1).filter(|_| open) {
                if before >= next {
                    class.ranges.push((next, before));
                }
            }
        }
        match char::from_u32(hi as u32 + 1) {
            Some(after) if after > next => next = after,
            Some(_) => {}
            None => open = false,
        }
    }
    if open {
        class.ranges.push((next, char::MAX));
    }
}

/// `\d \s \w` and their negations, ASCII-only as in Go.
fn perl_class(letter: char) -> Option<CharClass> {
    let (ranges, negated): (&[(char, char)], bool) = match letter {
        'd' => (&[('0', '9')], false),
        'D' => (&[('0', '9')], true),
        's' => (&[('\t', '\n'), ('\x0c', '\r'), (' ', ' ')], false),
        'S' => (&[('\t', '\n'), ('\x0c', '\r'), (' ', ' ')], true),
        'w' => (&[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')], false),
        'W' => (&[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')], true),
        _ => return None,
    };
    Some(CharClass {
        ranges: ranges.to_vec(),
        negated,
    })
}

/// The POSIX classes Go knows, as ASCII ranges.
fn posix_class(name: &str) -> Option<&'static [(char, char)]> {
    Some(match name {
        "alnum" => &[('0', '9'), ('A', 'Z'), ('a', 'z')],
        "alpha" => &[('A', 'Z'), ('a', 'z')],
        "ascii" => &[('\0', '\x7f')],
        "blank" => &[('\t', '\t'), (' ', ' ')],
        "cntrl" => &[('\0', '\x1f'), ('\x7f', '\x7f')],
        "digit" => &[('0', '9')],
        "graph" => &[('!', '~')],
        "lower" => &[('a', 'z')],
        "print" => &[(' ', '~')],
        "punct" => &[('!', '/'), (':', '@'), ('[', '`'), ('{', '~')],
        "space" => &[('\t', '\r'), (' ', ' ')],
        "upper" => &[('A', 'Z')],
        "word" => &[('0', '9'), ('A', 'Z'), ('a', 'z'), ('_', '_')],
        "xdigit" => &[('0', '9'), ('A', 'F'), ('a', 'f')],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_match(re: &str, text: &str) -> bool {
        Regex::new(re).unwrap().is_match(text)
    }

    #[test]
    fn basics() {
        assert!(is_match("^a[^/]*$", "abc"));
        assert!(!is_match("^a[^/]*$", "ab/c"));
        assert!(is_match("^(.*/)?b$", "b"));
        assert!(is_match("^(.*/)?b$", "x/y/b"));
        assert!(!is_match("^(.*/)?b$", "xb"));
        assert!(is_match("^[^/]*$", "a\nb"));
        assert!(!is_match("^(.*/)?b$", "x\n/b"));
        assert!(is_match("b", "abc"));
    }

    #[test]
    fn classes_follow_go() {
        assert!(is_match("^[]a]$", "]"));
        assert!(is_match("^[!a]$", "!"));
        assert!(!is_match("^[!a]$", "b"));
        assert!(is_match("^[[:digit:]x]$", "7"));
        assert!(is_match("^[[:^digit:]]$", "x"));
        assert!(!is_match("^[[:^digit:]]$", "7"));
        assert!(is_match("^[\\d]$", "5"));
        assert!(is_match("^[a-]$", "-"));
        assert!(is_match("^[[:a]$", ":"));
        // A glob `[*]` translated: the class is `[[^/]`, then `*`, then `]`.
        assert!(is_match("^[[^/]*]$", "]"));
        assert!(is_match("^[[^/]*]$", "//^]"));
    }

    #[test]
    fn errors() {
        assert!(matches!(Regex::new("[z-a]"), Err(RegexError::Syntax(_))));
        assert!(matches!(
            Regex::new("[[:foo:]]"),
            Err(RegexError::Syntax(_))
        ));
        assert!(matches!(Regex::new("a**"), Err(RegexError::Syntax(_))));
        assert!(matches!(Regex::new("*a"), Err(RegexError::Syntax(_))));
        assert!(matches!(Regex::new("[a"), Err(RegexError::Syntax(_))));
        assert!(matches!(Regex::new("\\q"), Err(RegexError::Syntax(_))));
        assert!(matches!(
            Regex::new("\\pL"),
            Err(RegexError::Unsupported(_))
        ));
    }

    #[test]
    fn one_pass_parent_matching_agrees_with_per_prefix_matching() {
        let regexes = [
            "^a[^/]*$",
            "^(.*/)?b$",
            "^[^/]*/c[^/]*$",
            "^x(.*/)?y$",
            "^[a-z]$",
            "^a^b$",
        ];
        let paths = [
            "a", "ab/c", "x/b/z", "q/c1/r", "x/y/z", "xy", "a/b/c/d", "", "/", "é/b",
        ];
        for source in regexes {
            let regex = Regex::new(source).unwrap();
            for path in paths {
                let per_prefix = regex.is_match(path)
                    || path
                        .match_indices('/')
                        .any(|(i, _)| regex.is_match(&path[..i]));
                assert_eq!(
                    regex.matches_path_or_parent(path),
                    per_prefix,
                    "{source} {path:?}"
                );
            }
        }
    }

    #[test]
    fn negated_ranges_are_complemented() {
        let mut class = CharClass {
            ranges: vec![],
            negated: false,
        };
        add_class(&mut class, &perl_class('D').unwrap());
        assert!(class.matches('a'));
        assert!(class.matches('\0'));
        assert!(class.matches(char::MAX));
        assert!(!class.matches('5'));
    }
}
