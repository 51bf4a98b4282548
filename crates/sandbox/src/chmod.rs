//! `COPY/ADD --chmod`: an octal mode or a symbolic one (`u+x`, `go-w`,
//! `a+rX,o=`), with the semantics of chmod(1) as current BuildKit takes
//! them: each clause applies to the mode the file already has (its source
//! mode), and `X` adds execute only to directories and to files someone
//! may already execute. A clause without `ugoa` applies to all (no umask:
//! a build does not depend on the builder's umask).

use serde::{Deserialize, Serialize};

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

/// One `who op perms [op perms]...` clause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clause {
    /// Mask of the permission bits the clause touches (u, g, o).
    who: u32,
    actions: Vec<(char, Perms)>,
}

/// What an action adds, removes or sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Perms {
    /// `rwxXst` letters.
    Letters(String),
    /// `u`, `g` or `o`: copy that class's current bits.
    Copy(char),
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;

impl Chmod {
    /// Parse `--chmod`'s value (after variable expansion).
    pub fn parse(text: &str) -> Result<Chmod, String> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(|| "expected an octal mode up to 7777".to_string());
        }
        let clauses = text
            .split(',')
            .map(parse_clause)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{e} (expected an octal mode or [ugoa]*[-+=][rwxXst]*)"))?;
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode a file gets whose mode is `mode` (permission bits).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut mode = mode & 0o7777;
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                for clause in clauses {
                    for (op, perms) in &clause.actions {
                        let bits = perm_bits(perms, mode, is_dir) & clause.who;
                        mode = match op {
                            '+' => mode | bits,
                            '-' => mode & !bits,
                            // `=` clears the class's bits, keeping the
                            // directory's setgid as chmod(1) does.
                            _ => (mode & !(clause.who & !set_id_kept(is_dir))) | bits,
                        };
                    }
                }
                mode
            }
        }
    }
}

/// Bits `=` leaves alone: chmod(1) keeps a directory's set-id bits.
fn set_id_kept(is_dir: bool) -> u32 {
    if is_dir {
        0o6000
    } else {
        0
    }
}

fn parse_clause(clause: &str) -> Result<Clause, String> {
    let who_len = clause
        .find(|c: char| !matches!(c, 'u' | 'g' | 'o' | 'a'))
        .ok_or_else(|| format!("{clause:?} has no + - or ="))?;
    let mut who = 0;
    for c in clause[..who_len].chars() {
        who |= match c {
            'u' => USER,
            'g' => GROUP,
            'o' => OTHER,
            _ => USER | GROUP | OTHER,
        };
    }
    if who == 0 {
        who = USER | GROUP | OTHER;
    }
    let mut actions = Vec::new();
    let mut rest = &clause[who_len..];
    while let Some(op) = rest.chars().next() {
        if !matches!(op, '+' | '-' | '=') {
            return Err(format!("{clause:?}: unexpected {op:?}"));
        }
        rest = &rest[1..];
        let end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
        let perms = &rest[..end];
        rest = &rest[end..];
        let perms = match perms {
            "u" | "g" | "o" => Perms::Copy(perms.chars().next().unwrap_or('u')),
            p if p.chars().all(|c| "rwxXst".contains(c)) => Perms::Letters(p.to_string()),
            p => return Err(format!("{clause:?}: bad permissions {p:?}")),
        };
        actions.push((op, perms));
    }
    if actions.is_empty() {
        return Err(format!("{clause:?} has no + - or ="));
    }
    Ok(Clause { who, actions })
}

/// The bits (for all classes; the clause masks them) `perms` stands for.
fn perm_bits(perms: &Perms, mode: u32, is_dir: bool) -> u32 {
    match perms {
        Perms::Copy(class) => {
            let rwx = match class {
                'u' => (mode >> 6) & 7,
                'g' => (mode >> 3) & 7,
                _ => mode & 7,
            };
            rwx * 0o111
        }
        Perms::Letters(letters) => letters.chars().fold(0, |bits, c| {
            bits | match c {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_dir || mode & 0o111 != 0 => 0o111,
                's' => 0o6000,
                't' => 0o1000,
                _ => 0,
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(text: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(text).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal_replaces_the_mode() {
        assert_eq!(Chmod::parse("755").unwrap(), Chmod::Octal(0o755));
        assert_eq!(Chmod::parse("0640").unwrap().apply(0o777, false), 0o640);
        assert!(Chmod::parse("8").is_err());
        assert!(Chmod::parse("17777").is_err());
    }

    /// Cases worked out with GNU chmod(1) under umask 0.
    #[test]
    fn symbolic_like_chmod() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("a+rX", 0o600, false), 0o644);
        assert_eq!(sym("a+rX", 0o700, false), 0o755);
        assert_eq!(sym("a+rX", 0o700, true), 0o755);
        assert_eq!(sym("a+rX", 0o600, true), 0o755);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o666, false), 0o750);
        assert_eq!(sym("o=u", 0o640, false), 0o646);
        assert_eq!(sym("g+s", 0o755, true), 0o2755);
        assert_eq!(sym("u+s,+t", 0o755, false), 0o5755);
        assert_eq!(sym("u-w+x", 0o644, false), 0o544);
        assert_eq!(sym("g=", 0o2775, true), 0o2705);
    }

    #[test]
    fn bad_modes_are_refused() {
        for bad in ["", "u", "u+q", "z+x", "u+x,", "+rw,g"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?}");
        }
    }
}
