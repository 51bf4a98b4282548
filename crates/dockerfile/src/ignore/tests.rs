//! Cases from the Dockerfile reference (".dockerignore file") and from
//! reading moby/patternmatcher and BuildKit's `dockerignore.ReadAll`.

use super::*;

/// (file text, path, excluded?)
const CASES: &[(&str, &str, bool)] = &[
    // The reference's example file.
    (
        "# comment\n*/temp*\n*/*/temp*\ntemp?",
        "somedir/temporary.txt",
        true,
    ),
    ("# comment\n*/temp*\n*/*/temp*\ntemp?", "somedir/temp", true),
    (
        "# comment\n*/temp*\n*/*/temp*\ntemp?",
        "somedir/subdir/temporary.txt",
        true,
    ),
    ("# comment\n*/temp*\n*/*/temp*\ntemp?", "tempa", true),
    ("# comment\n*/temp*\n*/*/temp*\ntemp?", "tempab", false),
    ("# comment\n*/temp*\n*/*/temp*\ntemp?", "temp", false),
    ("# comment\n*/temp*\n*/*/temp*\ntemp?", "a/b/c/temp", false),
    ("# comment\n*/temp*\n*/*/temp*\ntemp?", "# comment", false),
    // A pattern matching a directory excludes what is inside.
    ("*/temp*", "somedir/temp/file", true),
    ("*", "a/b/c", true),
    ("docs", "docs/a/b.md", true),
    // `*` and `?` do not cross `/`.
    ("*.md", "docs/x.md", false),
    ("a?b", "a/b", false),
    ("a*b", "a/x/b", false),
    // `**`.
    ("**/*.go", "a.go", true),
    ("**/*.go", "x/y/z.go", true),
    ("**/*.go", "x/y/z.go.txt", false),
    ("**", "anything/at/all", true),
    ("dir/**", "dir/file", true),
    ("dir/**", "dir/sub/file", true),
    ("dir/**", "dir", false),
    ("**/dir", "dir", true),
    ("**/dir", "a/b/dir/file", true),
    ("**/dir2/*", "dir/dir2/file", true),
    ("**/.foo", "bar.foo", false),
    ("**/.foo", ".foo", true),
    ("a**/*.txt", "a/dir/dir/file.txt", true),
    // patternmatcher quirks: `**` at the start is a plain suffix test, and
    // `**` in the middle must be followed by a directory boundary.
    ("**file", "barfile", true),
    ("a**b", "a/x/b", true),
    ("a**b", "ab", true),
    ("a**b", "axb", false),
    // Exceptions: the last matching pattern wins.
    ("*.md\n!README*.md", "CHANGELOG.md", true),
    ("*.md\n!README*.md", "README.md", false),
    (
        "*.md\n!README*.md\nREADME-secret.md",
        "README-secret.md",
        true,
    ),
    (
        "*.md\nREADME-secret.md\n!README*.md",
        "README-secret.md",
        false,
    ),
    ("!README.md\n*.md", "README.md", true),
    ("docs\n!docs/README.md", "docs/README.md", false),
    ("docs\n!docs/README.md", "docs/other.md", true),
    ("docs\n!docs/README.md", "docs", true),
    ("docs/\n!docs/README.md", "docs/README.md", false),
    ("docs/*\n!docs/README.md", "docs/README.md", false),
    ("**\n!util/docker/web", "util/docker/web/foo", false),
    (
        "**\n!util/docker/web\nutil/docker/web/foo",
        "util/docker/web/foo",
        true,
    ),
    (
        "**\n!dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        false,
    ),
    ("*\n!keep", "keep/inner/file", false),
    // Cleaning: leading `/`, `./`, trailing `/`, `..`, whitespace.
    ("/foo", "foo", true),
    ("/foo", "a/foo", false),
    ("./foo/bar", "foo/bar", true),
    ("foo/", "foo/x", true),
    ("a/../b", "b", true),
    ("foo   ", "foo", true),
    ("   foo", "foo", true),
    ("\tfoo\t", "foo", true),
    ("!  foo", "foo", false),
    ("foo\n!  foo", "foo", false),
    // `#` starts a comment only in the first column.
    ("  #notcomment", "#notcomment", true),
    ("#foo", "#foo", false),
    // Blank and whitespace-only lines are skipped.
    ("\n   \n\t\nfoo\n\n", "foo", true),
    // CRLF line ends and a BOM.
    ("foo\r\nbar\r\n", "bar", true),
    ("\u{feff}foo", "foo", true),
    // Bracket expressions, read by Go's regexp as patternmatcher passes them.
    ("a[b-d]e", "ace", true),
    ("a[b-d]e", "aae", false),
    ("a[b-d]e", "ae", false),
    ("a[^b-d]e", "aze", true),
    ("a[^b-d]e", "ace", false),
    ("a[!b]e", "a!e", true),
    ("a[!b]e", "aze", false),
    ("[[:digit:]]*", "9lives", true),
    ("[*]", "]", true),
    ("[*]", "*", false),
    // Regex metacharacters are literal.
    (".*", ".foo", true),
    (".*", "foo", false),
    ("abc.def", "abcZdef", false),
    ("a(b)c/def", "a(b)c/def", true),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
    // Escapes.
    ("a\\*b", "a*b", true),
    ("a\\*b", "axb", false),
    ("a\\ b", "a b", true),
    // `^` is a regex anchor only in a pattern that is a regex anyway.
    ("a^b", "a^b", true),
    ("a^b*", "a^bc", false),
    // Go's filepath.Match table, as patternmatcher answers it.
    ("a*/b", "abc/b", true),
    ("a*/b", "a/c/b", false),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
    ("a*b?c*x", "abxbbxdbxebxczzx", true),
    ("a*b?c*x", "abxbbxdbxebxczzy", false),
    ("ab[^c]", "abc", false),
    ("ab[^e-g]", "abc", true),
    ("[\\-x]", "-", true),
    ("[x\\-]", "z", false),
    ("*x", "xxx", true),
    ("a[^a][^a][^a]b", "a☺b", false),
    // Unicode.
    ("a?b", "a☺b", true),
    ("[a-ζ]*", "αβ", true),
    ("ü*", "über/x", true),
];

#[test]
fn table() {
    for (text, path, expected) in CASES {
        let rules = DockerIgnore::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(
            rules.is_excluded(path),
            *expected,
            "patterns {text:?}, path {path:?}"
        );
    }
    assert!(CASES.len() >= 40);
}

#[test]
fn root_is_never_excluded() {
    let rules = DockerIgnore::parse("**\n*\n.").unwrap();
    for root in ["", ".", "/", "./", "a/.."] {
        assert!(!rules.is_excluded(root), "{root:?}");
    }
}

#[test]
fn paths_are_cleaned() {
    let rules = DockerIgnore::parse("foo/bar").unwrap();
    for path in [
        "foo/bar",
        "./foo/bar",
        "foo//bar/",
        "/foo/bar",
        "x/../foo/bar",
        "foo/bar/baz",
    ] {
        assert!(rules.is_excluded(path), "{path:?}");
    }
    assert!(!rules.is_excluded("foo"));
}

#[test]
fn patterns_are_listed_cleaned_with_lines() {
    let rules = DockerIgnore::parse(
        "test1\n/test2\n/a/file/here\n\nlastfile\n# c\n! /inverted/abs/path\n./x/",
    )
    .unwrap();
    let listed: Vec<(&str, bool, usize)> = rules
        .patterns()
        .iter()
        .map(|p| (p.pattern(), p.is_exception(), p.line()))
        .collect();
    assert_eq!(
        listed,
        [
            ("test1", false, 1),
            ("test2", false, 2),
            ("a/file/here", false, 3),
            ("lastfile", false, 5),
            ("inverted/abs/path", true, 7),
            ("x", false, 8),
        ]
    );
    assert!(rules.has_exceptions());
    assert!(DockerIgnore::parse("# only a comment\n\n")
        .unwrap()
        .is_empty());
}

#[test]
fn errors_name_the_line_and_pattern() {
    assert_eq!(
        DockerIgnore::parse("ok\n!\n").unwrap_err(),
        IgnoreError::IllegalException { line: 2 }
    );
    assert_eq!(
        DockerIgnore::parse("ok\n! ").unwrap_err(),
        IgnoreError::IllegalException { line: 2 }
    );
    // `!/` cleans to `/`, and patternmatcher's second cleaning makes it `!`.
    assert_eq!(
        DockerIgnore::parse("!/").unwrap_err(),
        IgnoreError::IllegalException { line: 1 }
    );
    for (text, line, pattern) in [
        ("a\nb\n[", 3, "["),
        ("x[", 1, "x["),
        ("a\\", 1, "a\\"),
        ("[]a]", 1, "[]a]"),
        ("[a-b-c]", 1, "[a-b-c]"),
        ("!sub/[^", 1, "sub/[^"),
        // Valid for filepath.Match, rejected by Go's regexp.
        ("ok\n[z-a]", 2, "[z-a]"),
        ("[[:nope:]]", 1, "[[:nope:]]"),
    ] {
        match DockerIgnore::parse(text) {
            Err(IgnoreError::BadPattern {
                line: got_line,
                pattern: got_pattern,
                ..
            }) => {
                assert_eq!(
                    (got_line, got_pattern.as_str()),
                    (line, pattern),
                    "{text:?}"
                );
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
    let err = DockerIgnore::parse("\\pL").unwrap_err();
    assert!(
        matches!(err, IgnoreError::Unsupported { line: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn can_skip_dir_only_when_no_exception_reaches_inside() {
    let rules = DockerIgnore::parse("node_modules\n.git").unwrap();
    assert!(rules.can_skip_dir("node_modules"));
    assert!(rules.can_skip_dir("node_modules/sub"));
    assert!(!rules.can_skip_dir("src"));

    let rules = DockerIgnore::parse("build\n!build/keep.txt").unwrap();
    assert!(!rules.can_skip_dir("build"));
    assert!(rules.can_skip_dir("build/sub"));
    assert!(!rules.is_excluded("build/keep.txt"));

    let rules = DockerIgnore::parse("**\n!src").unwrap();
    assert!(!rules.can_skip_dir("src"));
    assert!(rules.can_skip_dir("docs"));
    // Nothing under `sr/` can match `src`.
    assert!(rules.can_skip_dir("sr"));
    let rules = DockerIgnore::parse("**\n!src*").unwrap();
    assert!(!rules.can_skip_dir("src2"));
    assert!(rules.can_skip_dir("sr"));

    let rules = DockerIgnore::parse("**\n!**/keep").unwrap();
    assert!(!rules.can_skip_dir("docs"));
    assert!(!rules.is_excluded("docs/a/keep"));

    let rules = DockerIgnore::parse("*\n!*/keep").unwrap();
    assert!(!rules.can_skip_dir("a"));
    assert!(!rules.is_excluded("a/keep"));
}

#[test]
fn from_patterns_skips_file_processing() {
    let rules = DockerIgnore::from_patterns(["*.tmp", "  !keep.tmp  ", ""]).unwrap();
    assert!(rules.is_excluded("a.tmp"));
    assert!(!rules.is_excluded("keep.tmp"));
    // Without ReadAll the leading `/` stays and never matches a relative path.
    let rules = DockerIgnore::from_patterns(["/abs"]).unwrap();
    assert!(!rules.is_excluded("abs"));
    assert_eq!(
        DockerIgnore::from_patterns(["a", "["]).unwrap_err(),
        IgnoreError::BadPattern {
            line: 2,
            pattern: "[".into(),
            reason: "unterminated character class".into()
        }
    );
}

#[test]
fn candidates_put_the_dockerfile_specific_file_first() {
    assert_eq!(
        ignore_file_candidates("build/app.Dockerfile"),
        ["build/app.Dockerfile.dockerignore", ".dockerignore"]
    );
    assert_eq!(
        ignore_file_candidates("Dockerfile"),
        ["Dockerfile.dockerignore", ".dockerignore"]
    );
    assert_eq!(ignore_file_candidates(""), [".dockerignore"]);
}
