//! Languages to general snapshots: the table an operator configures so that
//! a sandbox asked for by language (the seed's
//! `daytona.create(CreateSandboxParams(language="python"))`) starts from
//! the general snapshot kept for it (`python` -> `python:3.11`).
//!
//! Format (a file, or the value of `CAIRN_LANGUAGE_SNAPSHOTS` itself when it
//! is not a path to a file): `LANGUAGE=NAME[:VERSION]` entries separated by
//! newlines or commas; blank lines and `#` comments are skipped.

use crate::repo::SnapshotError;
use std::collections::BTreeMap;
use std::path::Path;

/// Environment variable holding the table or the path of its file.
pub const LANGUAGE_ENV: &str = "CAIRN_LANGUAGE_SNAPSHOTS";

/// Language name (lowercase) to general snapshot `NAME[:VERSION]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanguageSnapshots(BTreeMap<String, String>);

impl LanguageSnapshots {
    /// Parse the table's text.
    pub fn parse(text: &str) -> Result<Self, SnapshotError> {
        let mut map = BTreeMap::new();
        for entry in text.split(['\n', ',']) {
            let entry = entry.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            let (lang, snap) = entry
                .split_once('=')
                .map(|(l, s)| (l.trim(), s.trim()))
                .filter(|(l, s)| !l.is_empty() && !s.is_empty())
                .ok_or_else(|| {
                    SnapshotError::Invalid(format!(
                        "language table entry {entry:?}: expected LANGUAGE=NAME[:VERSION]"
                    ))
                })?;
            map.insert(lang.to_ascii_lowercase(), snap.to_string());
        }
        Ok(LanguageSnapshots(map))
    }

    /// The table from `CAIRN_LANGUAGE_SNAPSHOTS` (a file path or the table
    /// itself); empty when unset.
    pub fn from_env() -> Result<Self, SnapshotError> {
        match std::env::var(LANGUAGE_ENV) {
            Ok(v) if Path::new(&v).is_file() => Self::load(Path::new(&v)),
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(Self::default()),
        }
    }

    /// The table in `path`.
    pub fn load(path: &Path) -> Result<Self, SnapshotError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SnapshotError::Invalid(format!("language table {}: {e}", path.display()))
        })?;
        Self::parse(&text)
    }

    /// Add or replace one entry.
    pub fn insert(&mut self, language: &str, snapshot: &str) {
        self.0
            .insert(language.to_ascii_lowercase(), snapshot.to_string());
    }

    /// The snapshot kept for `language` (case-insensitive).
    pub fn snapshot_for(&self, language: &str) -> Result<&str, SnapshotError> {
        self.0
            .get(&language.to_ascii_lowercase())
            .map(String::as_str)
            .ok_or_else(|| {
                let known: Vec<&str> = self.0.keys().map(String::as_str).collect();
                SnapshotError::Invalid(format!(
                    "no general snapshot for language {language:?} (configured: {}; set {LANGUAGE_ENV})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_commas() {
        let t = LanguageSnapshots::parse(
            "# general snapshots\npython = python:3.11\nNode=node:20, go=go\n",
        )
        .unwrap();
        assert_eq!(t.snapshot_for("python").unwrap(), "python:3.11");
        assert_eq!(t.snapshot_for("NODE").unwrap(), "node:20");
        assert_eq!(t.snapshot_for("go").unwrap(), "go");
        let err = t.snapshot_for("rust").unwrap_err().to_string();
        assert!(err.contains("go, node, python"), "{err}");
        assert!(LanguageSnapshots::parse("python").is_err());
        assert!(LanguageSnapshots::parse("=x").is_err());
    }
}
