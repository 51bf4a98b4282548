//! Which database holds the snapshot records: `CAIRN_SNAPSHOT_DB`,
//! `--snapshot-db` or the library's [`SnapshotDb`].

use super::{Result, SnapshotError};
use std::fmt;
use std::path::PathBuf;

/// The environment variable naming the snapshot database.
pub const ENV: &str = "CAIRN_SNAPSHOT_DB";

/// Where snapshot records live.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum SnapshotDb {
    /// The store's own SQLite file (`meta.db`): one machine, zero setup.
    #[default]
    Embedded,
    /// Another SQLite file (`sqlite:PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://` or `postgresql://` URL, or a
    /// libpq key=value string starting with `host=`), shared by runners.
    Postgres(String),
}

impl SnapshotDb {
    /// Parse a `--snapshot-db` / `CAIRN_SNAPSHOT_DB` value: empty or
    /// `embedded` for the store's file, `sqlite:PATH`, or a PostgreSQL URL.
    pub fn parse(value: &str) -> Result<Self> {
        let v = value.trim();
        if v.is_empty() || v == "embedded" {
            return Ok(SnapshotDb::Embedded);
        }
        if let Some(path) = v.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(bad(
                    value,
                    "sqlite: needs a file path (sqlite:/var/lib/cairn/snapshots.db)",
                ));
            }
            return Ok(SnapshotDb::Sqlite(PathBuf::from(path)));
        }
        if v.starts_with("postgres://") || v.starts_with("postgresql://") || v.starts_with("host=")
        {
            super::pg_url::parse(v)?;
            return Ok(SnapshotDb::Postgres(v.to_string()));
        }
        Err(bad(
            value,
            "expected postgres://USER@HOST:PORT/DB, sqlite:PATH or embedded",
        ))
    }

    /// The value [`Self::parse`] reads back, password included: for
    /// handing to another process, never for logs (Display redacts).
    pub fn to_url(&self) -> String {
        match self {
            SnapshotDb::Embedded => "embedded".into(),
            SnapshotDb::Sqlite(p) => format!("sqlite:{}", p.display()),
            SnapshotDb::Postgres(url) => url.clone(),
        }
    }

    /// `CAIRN_SNAPSHOT_DB` if set, else the embedded file.
    pub fn from_env() -> Result<Self> {
        match std::env::var(ENV) {
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(SnapshotDb::Embedded),
        }
    }
}

fn bad(value: &str, message: &str) -> SnapshotError {
    SnapshotError::Config {
        target: redact(value),
        message: message.to_string(),
    }
}

/// A connection string with its password replaced by `***` (and its
/// query, which may carry one, dropped).
pub(crate) fn redact(value: &str) -> String {
    if let Some(i) = value.find("://") {
        let (scheme, rest) = value.split_at(i + 3);
        let rest = rest.split('?').next().unwrap_or(rest);
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let Some(at) = authority.rfind('@') else {
            return format!("{scheme}{rest}");
        };
        let (auth, host) = authority.split_at(at);
        let user = auth.split(':').next().unwrap_or_default();
        let masked = if auth.contains(':') { ":***" } else { "" };
        return format!("{scheme}{user}{masked}{host}{path}");
    }
    value
        .split_whitespace()
        .map(|kv| match kv.starts_with("password=") {
            true => "password=***",
            false => kv,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for SnapshotDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotDb::Embedded => f.write_str("embedded"),
            SnapshotDb::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            SnapshotDb::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// Debug shows what Display shows: never a password.
impl fmt::Debug for SnapshotDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotDb({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_select_the_backend() {
        assert_eq!(SnapshotDb::parse("").unwrap(), SnapshotDb::Embedded);
        assert_eq!(
            SnapshotDb::parse("sqlite:/x/y.db").unwrap(),
            SnapshotDb::Sqlite("/x/y.db".into())
        );
        assert!(matches!(
            SnapshotDb::parse("postgres://u:pw@127.0.0.1:5/db").unwrap(),
            SnapshotDb::Postgres(_)
        ));
        let err = SnapshotDb::parse("mysql://u:secret@h/db").unwrap_err();
        assert!(err.is_bad_input());
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn passwords_never_show() {
        let db =
            SnapshotDb::parse("postgres://cairn:s3cret@db:5432/cairn?sslmode=require").unwrap();
        assert_eq!(db.to_string(), "postgres://cairn:***@db:5432/cairn");
        assert!(!format!("{db:?}").contains("s3cret"));
        assert_eq!(
            redact("host=db user=u password=s3cret"),
            "host=db user=u password=***"
        );
    }
}
