//! Instruction flags with BuildKit's `BFlags` rules: which flags each
//! instruction takes, and how their values are checked.

use super::words::Word;
use crate::ast::Flags;

/// The type BuildKit declares a flag with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `--link`, `--link=true|false`.
    Bool,
    /// One value: `--from=x`; given twice is an error.
    Str,
    /// Repeatable: `--mount=a --mount=b`.
    Strs,
}

/// The flags an instruction accepts (dockerfile:1 syntax, non-labs).
pub(crate) fn spec(instruction: &str) -> &'static [(&'static str, Kind)] {
    use Kind::*;
    match instruction {
        "add" => &[
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("keep-git-dir", Bool),
            ("checksum", Str),
            ("exclude", Strs),
            ("unpack", Bool),
        ],
        "copy" => &[
            ("chown", Str),
            ("from", Str),
            ("chmod", Str),
            ("link", Bool),
            ("exclude", Strs),
            ("parents", Bool),
        ],
        "from" => &[("platform", Str)],
        "run" => &[("mount", Strs), ("network", Str), ("security", Str)],
        "healthcheck" => &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
        _ => &[],
    }
}

/// Check flag words against a spec. Values are kept as written (after
/// quote removal); a bare boolean flag reads "true", boolean values are
/// lowercased, as BuildKit stores them. Errors carry the word's offset.
pub(crate) fn parse(words: &[Word], spec: &[(&str, Kind)]) -> Result<Flags, (usize, String)> {
    let mut flags = Flags::new();
    for word in words {
        let Some(body) = word.text.strip_prefix("--") else {
            return Err((
                word.offset,
                format!("arg should start with -- : {}", word.text),
            ));
        };
        if body.is_empty() {
            break;
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(_, kind)) = spec.iter().find(|(n, _)| *n == name) else {
            return Err((word.offset, format!("unknown flag: --{name}")));
        };
        if kind != Kind::Strs && flags.contains_key(name) {
            return Err((word.offset, format!("duplicate flag specified: --{name}")));
        }
        let value = match (kind, value) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some("")) | (Kind::Str | Kind::Strs, None) => {
                return Err((word.offset, format!("missing a value on flag: --{name}")));
            }
            (Kind::Bool, Some(v)) => {
                let lower = v.to_lowercase();
                if lower != "true" && lower != "false" {
                    return Err((
                        word.offset,
                        format!("expecting boolean value for flag --{name}, not: {v}"),
                    ));
                }
                lower
            }
            (_, Some(v)) => v.to_string(),
        };
        flags.entry(name.to_string()).or_default().push(value);
    }
    Ok(flags)
}

/// Flags recorded without checking (ONBUILD triggers, STOPSIGNAL and
/// HEALTHCHECK NONE, whose flags BuildKit never parses).
pub(crate) fn raw(words: &[Word]) -> Flags {
    let mut flags = Flags::new();
    for word in words {
        let body = word.text.strip_prefix("--").unwrap_or(&word.text);
        let (name, value) = body.split_once('=').unwrap_or((body, ""));
        flags
            .entry(name.to_string())
            .or_default()
            .push(value.to_string());
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Word {
        Word {
            text: s.into(),
            offset: 0,
        }
    }

    #[test]
    fn bflags_rules() {
        let f = parse(
            &[
                w("--link"),
                w("--from=a"),
                w("--exclude=x"),
                w("--exclude=y"),
            ],
            spec("copy"),
        )
        .unwrap();
        assert_eq!(f["link"], vec!["true"]);
        assert_eq!(f["from"], vec!["a"]);
        assert_eq!(f["exclude"], vec!["x", "y"]);
        assert_eq!(
            parse(&[w("--link=FALSE")], spec("copy")).unwrap()["link"],
            vec!["false"]
        );
        assert_eq!(
            parse(&[w("--foo")], spec("copy")).unwrap_err().1,
            "unknown flag: --foo"
        );
        assert_eq!(
            parse(&[w("--from=a"), w("--from=b")], spec("copy"))
                .unwrap_err()
                .1,
            "duplicate flag specified: --from"
        );
        assert_eq!(
            parse(&[w("--from")], spec("copy")).unwrap_err().1,
            "missing a value on flag: --from"
        );
        assert_eq!(
            parse(&[w("--link=")], spec("copy")).unwrap_err().1,
            "missing a value on flag: --link"
        );
        assert!(parse(&[w("--link=yes")], spec("copy")).is_err());
        assert_eq!(
            parse(&[w("--mount=a"), w("--mount=b")], spec("run")).unwrap()["mount"].len(),
            2
        );
    }
}
