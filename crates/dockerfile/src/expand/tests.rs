//! Cases worked out by reading BuildKit's `shell/lex.go` and its tests
//! (`lex_test.go`), and the Dockerfile reference's "Environment replacement".

use super::*;

fn env() -> HashMap<String, String> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
        ("V", "a.b.c"),
        ("SPACED", "x  y"),
        ("FOO", "xxyy"),
        ("X", "x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (input, expected) with the default escape `\` and `env()`.
const WORD_CASES: &[(&str, &str)] = &[
    // Plain text, quotes and escapes.
    ("hello", "hello"),
    ("he'll'o", "hello"),
    (r"he\'llo", "he'llo"),
    (r"abc\\def", r"abc\def"),
    (r"hel\lo", "hello"),
    ("\"hello\"", "hello"),
    ("\"hello'\"", "hello'"),
    ("'hello\"'", "hello\""),
    (r#"\"hello\""#, "\"hello\""),
    (r#""hel\"lo""#, "hel\"lo"),
    // Inside double quotes the escape only escapes `"`, `$` and itself.
    (r#""hel\lo""#, r"hel\lo"),
    (r#""a\\b""#, r"a\b"),
    (r"'hel\lo'", r"hel\lo"),
    // A trailing escape escapes nothing and disappears.
    (r"a\", "a"),
    ("a b  c", "a b  c"),
    // Variables.
    ("$PWD", "/home"),
    ("${PWD}", "/home"),
    ("${PWD}x", "/homex"),
    ("$PWDx", ""),
    ("$PWD/x", "/home/x"),
    ("$PWD-x", "/home-x"),
    (r"\$PWD", "$PWD"),
    (r"\${PWD}", "${PWD}"),
    ("'$PWD'", "$PWD"),
    ("\"$PWD\"", "/home"),
    (r#""\$PWD""#, "$PWD"),
    ("'${PWD}'\"${PWD}\"", "${PWD}/home"),
    ("$UNSET", ""),
    ("a${UNSET}b", "ab"),
    ("${KOREAN}", "한국어"),
    ("$KOREAN!", "한국어!"),
    // `$` not followed by a name stays; digits and special params are names.
    ("$", "$"),
    ("$ x", "$ x"),
    ("$/x", "$/x"),
    ("a$", "a$"),
    ("$1", ""),
    ("$12ab", "ab"),
    ("$$", ""),
    ("$$$", "$"),
    ("$@x", "x"),
    // `-` and `:-`.
    ("${NULL:-def}", "def"),
    ("${NULL-def}", ""),
    ("${UNSET-def}", "def"),
    ("${UNSET:-def}", "def"),
    ("${PWD:-def}", "/home"),
    ("${UNSET:-}", ""),
    ("${UNSET:-${PWD}/x}", "/home/x"),
    ("${UNSET:-'a b'}", "a b"),
    ("${UNSET:-\"$PWD\"}", "/home"),
    ("${UNSET:-$UNSET2}", ""),
    // `+` and `:+`.
    ("${PWD:+alt}", "alt"),
    ("${NULL:+alt}", ""),
    ("${NULL+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${UNSET:+alt}", ""),
    ("${PWD:+${SHELL}}", "bash"),
    // `?` and `:?` when no error is due.
    ("${PWD:?msg}", "/home"),
    ("${NULL?msg}", ""),
    // Prefix and suffix removal.
    ("${V#*.}", "b.c"),
    ("${V##*.}", "c"),
    ("${V%.*}", "a.b"),
    ("${V%%.*}", "a"),
    ("${V#a}", ".b.c"),
    ("${V#x}", "a.b.c"),
    ("${V%c}", "a.b."),
    ("${V#}", "a.b.c"),
    ("${V##}", "a.b.c"),
    ("${V%}", "a.b.c"),
    ("${V#?}", ".b.c"),
    ("${V#*}", "a.b.c"),
    ("${V##*}", ""),
    ("${PWD#/}", "home"),
    ("${FOO#*x*y}", "y"),
    ("${FOO##*x}", "yy"),
    ("${FOO#$X}", "xyy"),
    ("${FOO#$NULL}", "xxyy"),
    ("${FOO%%$NULL}", "xxyy"),
    ("${UNSET#x}", ""),
    ("${KOREAN#한}", "국어"),
    ("${KOREAN%어}", "한국"),
    ("${UNSET:-.}${FOO%x}${UNSET:-.}", ".xxyy."),
    // Replacement.
    ("${V/./-}", "a-b.c"),
    ("${V//./-}", "a-b-c"),
    ("${V/*./}", "c"),
    ("${V//?/_}", "_____"),
    ("${V/x/y}", "a.b.c"),
    ("${UNSET/x/y}", ""),
    // No `#`/`%` anchors in `${V/...}`: they are literal characters.
    ("${V/#a/x}", "a.b.c"),
    (r"${PWD/\//x}", "xhome"),
    ("${FOO/$NULL/ww}", "wwxxyy"),
    ("${FOO///}", "xxyy"),
    // The word of `:-` ends at the first unescaped `}`.
    (r"${XXX:-\${PWD}z}", "${PWDz}"),
    (r"${XXX:-\$PWD:}", "$PWD:"),
    (r"\\$PWD", r"\/home"),
    (r#""\\$PWD""#, r"\/home"),
    ("안$KOREAN", "안한국어"),
    ("$KOREAN안", ""),
    // Real-world shape (BuildKit's release names).
    (
        "s-${PWD#/}-${SHELL}${NULL:+-${NULL}}${SHELL:+-${SHELL}}.tgz",
        "s-home-bash-bash.tgz",
    ),
];

#[test]
fn expand_word_table() {
    let env = env();
    for (input, expected) in WORD_CASES {
        let got = expand_word(input, &env, '\\');
        assert_eq!(got.as_deref(), Ok(*expected), "input {input:?}");
    }
    assert!(WORD_CASES.len() >= 40);
}

/// Inputs that fail, with the kind of error BuildKit gives.
#[test]
fn expand_word_errors() {
    let env = env();
    let cases: &[(&str, ExpandErrorKind)] = &[
        ("${", ExpandErrorKind::MissingBrace),
        ("${PWD", ExpandErrorKind::MissingBrace),
        ("${PWD:-abc", ExpandErrorKind::MissingBrace),
        ("${PWD:", ExpandErrorKind::MissingBrace),
        ("${UNSET:-'abc", ExpandErrorKind::MissingBrace),
        ("${}", ExpandErrorKind::BadSubstitution),
        ("${:x}", ExpandErrorKind::BadSubstitution),
        ("${{x}", ExpandErrorKind::BadSubstitution),
        ("a ${}", ExpandErrorKind::BadSubstitution),
        (
            "${PWD:x}",
            ExpandErrorKind::UnsupportedModifier(":x".into()),
        ),
        (
            "${PWD:}x}",
            ExpandErrorKind::UnsupportedModifier(":}".into()),
        ),
        (
            "${PWD:1}",
            ExpandErrorKind::UnsupportedModifier(":1".into()),
        ),
        ("${PWD=x}", ExpandErrorKind::UnsupportedModifier("=".into())),
        // dockerfile 1.10+ (BuildKit's lex_test): `:` goes only with + - ?.
        (
            "${FOO:#x}",
            ExpandErrorKind::UnsupportedModifier(":#".into()),
        ),
        (
            "${FOO:##x}",
            ExpandErrorKind::UnsupportedModifier(":#".into()),
        ),
        (
            "${FOO:%y}",
            ExpandErrorKind::UnsupportedModifier(":%".into()),
        ),
        (
            "${FOO:%%y}",
            ExpandErrorKind::UnsupportedModifier(":%".into()),
        ),
        (
            "${UNSET:#}",
            ExpandErrorKind::UnsupportedModifier(":#".into()),
        ),
        (
            "${FOO=:aaa}",
            ExpandErrorKind::UnsupportedModifier("=".into()),
        ),
        ("${#PWD}", ExpandErrorKind::UnsupportedModifier("P".into())),
        ("${ PWD}", ExpandErrorKind::UnsupportedModifier(" ".into())),
        ("${V/x", ExpandErrorKind::MissingSlash),
        ("${FOO//}", ExpandErrorKind::MissingSlash),
        ("${FOO//ww}", ExpandErrorKind::MissingSlash),
        ("${V/x/y", ExpandErrorKind::MissingBrace),
        ("'abc", ExpandErrorKind::Unterminated("single-quote")),
        ("\"abc", ExpandErrorKind::Unterminated("double-quote")),
        (r#""abc\""#, ExpandErrorKind::Unterminated("double-quote")),
        (r"he\\'llo", ExpandErrorKind::Unterminated("single-quote")),
        (
            "${UNSET:?}",
            ExpandErrorKind::Required {
                name: "UNSET".into(),
                message: "is not allowed to be unset".into(),
            },
        ),
        (
            "${NULL:?}",
            ExpandErrorKind::Required {
                name: "NULL".into(),
                message: "is not allowed to be empty".into(),
            },
        ),
        (
            "${UNSET?}",
            ExpandErrorKind::Required {
                name: "UNSET".into(),
                message: "is not allowed to be unset".into(),
            },
        ),
        (
            "${UNSET?must set $PWD}",
            ExpandErrorKind::Required {
                name: "UNSET".into(),
                message: "must set /home".into(),
            },
        ),
        (
            "${NULL:?say \"$SHELL\"}",
            ExpandErrorKind::Required {
                name: "NULL".into(),
                message: "say bash".into(),
            },
        ),
        (
            r"${V#\x}",
            ExpandErrorKind::InvalidPattern {
                pattern: r"\x".into(),
                reason: r"invalid escape '\x'".into(),
            },
        ),
    ];
    for (input, kind) in cases {
        let err = expand_word(input, &env, '\\').expect_err(input);
        assert_eq!(&err.kind, kind, "input {input:?}");
        assert_eq!(err.word, *input);
    }
}

#[test]
fn error_offsets_point_at_the_construct() {
    let env = env();
    let err = expand_word("ab ${UNSET:?}", &env, '\\').unwrap_err();
    assert_eq!(err.offset, 3);
    let err = expand_word("ab 'cd", &env, '\\').unwrap_err();
    assert_eq!(err.offset, 3);
    let err = expand_word("é${", &env, '\\').unwrap_err();
    assert_eq!(err.offset, 2);
    let text = err.to_string();
    assert!(text.contains("missing '}'"), "{text}");
    assert!(text.contains("é${"), "{text}");
}

#[test]
fn mandatory_vars_as_buildkit_tests_them() {
    let set = with(&[("VAR", "plain"), ("ARG", "x")]);
    let empty = with(&[("VAR", ""), ("ARG", "x")]);
    let unset = with(&[("ARG", "x")]);
    let no_empty = "${VAR:?message here$ARG}";
    let no_unset = "${VAR?message here$ARG}";
    assert_eq!(expand_word(no_empty, &set, '\\').unwrap(), "plain");
    for vars in [&empty, &unset] {
        let err = expand_word(no_empty, vars, '\\').unwrap_err();
        assert!(err.to_string().contains("message herex"), "{err}");
    }
    assert_eq!(expand_word(no_unset, &set, '\\').unwrap(), "plain");
    assert_eq!(expand_word(no_unset, &empty, '\\').unwrap(), "");
    let err = expand_word(no_unset, &unset, '\\').unwrap_err();
    assert!(err.to_string().contains("VAR: message herex"), "{err}");
}

#[test]
fn patterns_with_escaped_specials() {
    let cases: &[(&str, &str, &str)] = &[
        (r"${FOO%%\**}", "xx**", "xx"),
        (r"${FOO#?\?}", "???y", "?y"),
        (r"${FOO%%\**\*}", "a***yy*", "a"),
        (r"${FOO#()[]{\}^$.\*\?|\\}", r"()[]{}^$.*?|\x", "x"),
        // `[` is literal: shell bracket expressions are not supported.
        ("${FOO#[ab]}", "[ab]c", "c"),
        ("${FOO#[ab]}", "ac", "ac"),
    ];
    for (input, value, expected) in cases {
        let vars = with(&[("FOO", value)]);
        assert_eq!(
            expand_word(input, &vars, '\\').unwrap(),
            *expected,
            "{input:?}"
        );
    }
}

#[test]
fn replacement_cases_from_buildkit() {
    let vars = with(&[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")]);
    assert_eq!(
        expand_word("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", &vars, '\\').unwrap(),
        "/foo.*/*.txt - /foo..*.txt"
    );
    let vars = with(&[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")]);
    assert_eq!(
        expand_word("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", &vars, '\\').unwrap(),
        "/tmp/bar.txt - /bar.txt"
    );
    let vars = with(&[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("R", "/")]);
    assert_eq!(
        expand_word("${FOO/$NEEDLE/$R} - ${FOO//$NEEDLE/$R}", &vars, '\\').unwrap(),
        "/foo/b/c.txt - /foo/c.txt"
    );
    let vars = with(&[
        ("FOO", "http://google.de"),
        ("N", "http://"),
        ("R", "https://"),
    ]);
    assert_eq!(
        expand_word("${FOO/$N/$R}", &vars, '\\').unwrap(),
        "https://google.de"
    );
    let vars = with(&[("FOO", "/tmp/foo.txt")]);
    assert_eq!(
        expand_word(r"${FOO//\//\/}", &vars, '\\').unwrap(),
        r"\/tmp\/foo.txt"
    );
}

#[test]
fn newlines_stop_star_in_patterns() {
    let vars = with(&[("V", "ab\ncd")]);
    assert_eq!(expand_word("${V##*}", &vars, '\\').unwrap(), "\ncd");
    assert_eq!(expand_word("${V%%*}", &vars, '\\').unwrap(), "ab\n");
}

#[test]
fn backtick_escape() {
    let env = env();
    let cases: &[(&str, &str)] = &[
        ("a`$PWD", "a$PWD"),
        (r"a\$PWD", r"a\/home"),
        (r"C:\path\to", r"C:\path\to"),
        ("\"a`\"b\"", "a\"b"),
        ("\"a`b\"", "a`b"),
        ("a``b", "a`b"),
        ("a` b", "a b"),
        ("${V#`a}", "a.b.c"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            expand_word(input, &env, '`').unwrap(),
            *expected,
            "{input:?}"
        );
    }
    // With a backtick escape the pattern's backslash is still its own escape.
    let vars = with(&[("V", "*x")]);
    assert_eq!(expand_word(r"${V#\*}", &vars, '`').unwrap(), "x");
}

#[test]
fn expand_words_table() {
    let env = env();
    let cases: &[(&str, &[&str])] = &[
        ("hello world", &["hello", "world"]),
        ("  a   b  ", &["a", "b"]),
        ("a\tb\nc", &["a", "b", "c"]),
        ("\"a b\" c", &["a b", "c"]),
        ("'a  b' c", &["a  b", "c"]),
        (r"a\ b", &["a b"]),
        ("a'b c'd", &["ab cd"]),
        ("$SPACED", &["x", "y"]),
        ("\"$SPACED\"", &["x  y"]),
        ("pre$SPACED", &["prex", "y"]),
        ("'' a", &["a"]),
        ("\"\"", &[]),
        ("a\"\"b", &["ab"]),
        ("", &[]),
        ("   ", &[]),
        ("$UNSET a", &["a"]),
        // The default word is expanded, then split like any expansion.
        ("${UNSET:-\"a b\"}", &["a", "b"]),
        ("${PWD} ${SHELL}", &["/home", "bash"]),
    ];
    for (input, expected) in cases {
        let got = expand_words(input, &env, '\\').unwrap();
        assert_eq!(got, *expected, "input {input:?}");
    }
    assert!(expand_words("${", &env, '\\').is_err());
}

#[test]
fn referenced_vars_lists_names_in_order() {
    assert_eq!(
        referenced_vars("$A ${B:-$C} ${A} '$D' \"$E\" \\$F ${G?} ${H#$I}", '\\'),
        // A modifier's word is read before the variable is looked up.
        ["A", "C", "B", "E", "G", "I", "H"]
    );
    assert!(referenced_vars("plain", '\\').is_empty());
    assert_eq!(referenced_vars("$A ${", '\\'), ["A"]);
}

#[test]
fn vars_impls_agree() {
    let hash = env();
    let tree: BTreeMap<String, String> = hash.clone().into_iter().collect();
    for (input, _) in WORD_CASES {
        assert_eq!(
            expand_word(input, &hash, '\\'),
            expand_word(input, &&tree, '\\'),
            "{input:?}"
        );
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let env = env();
    let ok = format!("{}x{}", "${U:-".repeat(50), "}".repeat(50));
    assert_eq!(expand_word(&ok, &env, '\\').unwrap(), "x");
    let deep = format!(
        "{}x{}",
        "${U:-".repeat(MAX_NESTING + 5),
        "}".repeat(MAX_NESTING + 5)
    );
    let err = expand_word(&deep, &env, '\\').unwrap_err();
    assert_eq!(err.kind, ExpandErrorKind::TooDeep);
    let deep = "${U:-".repeat(100_000);
    assert!(expand_word(&deep, &env, '\\').is_err());
}

#[test]
fn runaway_growth_is_an_error() {
    let vars = with(&[("X", "abcdefghijklmnopqrstuvwxyz0123456789")]);
    // Each level multiplies the length by 36: 36^5 is about 60 million.
    let word = "${X//?/${X//?/${X//?/${X//?/${X//?/y}}}}}";
    let err = expand_word(word, &vars, '\\').unwrap_err();
    assert_eq!(err.kind, ExpandErrorKind::TooLarge);
    // Three levels (46656 bytes) are fine.
    let word = "${X//?/${X//?/${X//?/y}}}";
    assert_eq!(expand_word(word, &vars, '\\').unwrap().len(), 36 * 36 * 36);
    // Many large expansions in one word add up too.
    let big = "z".repeat(MAX_EXPANDED_LEN / 2 + 1);
    let vars = with(&[("B", big.as_str())]);
    assert_eq!(
        expand_word("$B$B", &vars, '\\').unwrap_err().kind,
        ExpandErrorKind::TooLarge
    );
    assert_eq!(
        expand_word("\"$B$B\"", &vars, '\\').unwrap_err().kind,
        ExpandErrorKind::TooLarge
    );
    assert_eq!(expand_word("$B", &vars, '\\').unwrap().len(), big.len());
}
