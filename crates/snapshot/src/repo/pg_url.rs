//! A PostgreSQL connection string read as libpq reads it, TLS included.
//!
//! The `postgres` crate knows `sslmode=disable|prefer|require` and no root
//! certificate; libpq users also write `sslmode=verify-ca|verify-full` and
//! `sslrootcert=FILE`. This module takes those two out of the string (the
//! crate then sees `require`) and keeps libpq's meaning for each mode:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | – |
//! | `prefer` (default) | if the server offers TLS | no (with a root certificate: chain) |
//! | `require` | yes | no (with a root certificate: chain, as libpq) |
//! | `verify-ca` | yes | chain to the root certificate (or system roots) |
//! | `verify-full` | yes | chain and host name |
//!
//! The root certificate is `sslrootcert=FILE`, else `PGSSLROOTCERT`; given,
//! it is the only trusted root (libpq's rule), else the system's roots are.

use super::{db::redact, Result, SnapshotError};
use std::path::PathBuf;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What the TLS connector must check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: SslMode,
    /// A PEM file with the roots to trust (`sslrootcert`/`PGSSLROOTCERT`).
    pub root_cert: Option<PathBuf>,
}

impl TlsOptions {
    /// Whether the server's certificate chain is checked.
    pub fn verify_chain(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require | SslMode::Prefer => self.root_cert.is_some(),
            SslMode::Disable => false,
        }
    }

    /// Whether the certificate must name the host connected to.
    pub fn verify_host(&self) -> bool {
        self.mode == SslMode::VerifyFull
    }
}

/// Parse `url` (a `postgres://` URL or libpq `key=value` words): the
/// `postgres` crate's config and the TLS options it does not carry.
pub fn parse(url: &str) -> Result<(postgres::Config, TlsOptions)> {
    let bad = |message: String| SnapshotError::Config {
        target: redact(url),
        message,
    };
    // The parameters are `&`-separated after a URL's `?`, or the
    // space-separated words of the key=value form; every other word is
    // passed on byte for byte (quoted values included).
    let is_url = url.contains("://");
    let (base, params, sep) = match (is_url, url.split_once('?')) {
        (true, Some((base, query))) => (Some(base), query, '&'),
        (true, None) => (Some(url), "", '&'),
        (false, _) => (None, url, ' '),
    };
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for word in params.split(sep) {
        match word.split_once('=') {
            Some(("sslmode", value)) => {
                mode = match value.trim_matches('\'') {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(bad(format!(
                        "sslmode={other:?}: expected disable, prefer, require, verify-ca or verify-full"
                    ))),
                };
                let crate_mode = match mode {
                    SslMode::Disable => "disable",
                    SslMode::Prefer => "prefer",
                    _ => "require",
                };
                kept.push(format!("sslmode={crate_mode}"));
            }
            Some(("sslrootcert", value)) => {
                let path = match is_url {
                    true => percent_decode(value),
                    false => value.trim_matches('\'').to_string(),
                };
                root_cert = Some(PathBuf::from(path));
            }
            _ => kept.push(word.to_string()),
        }
    }
    if root_cert.is_none() {
        root_cert = std::env::var_os("PGSSLROOTCERT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
    }
    let rest = kept.join(&sep.to_string());
    let text = match base {
        Some(base) if rest.is_empty() => base.to_string(),
        Some(base) => format!("{base}?{rest}"),
        None => rest,
    };
    let config = text
        .parse::<postgres::Config>()
        .map_err(|e| bad(format!("not a PostgreSQL connection string: {e}")))?;
    Ok((config, TlsOptions { mode, root_cert }))
}

/// `%XX` escapes decoded (a URL's query value); other bytes kept.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_modes_the_crate_does_not_know_are_kept_aside() {
        let (config, tls) = parse(
            "postgres://u@db:5432/x?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/ca.pem")));
        assert!(tls.verify_chain() && tls.verify_host());
        assert_eq!(config.get_ssl_mode(), postgres::config::SslMode::Require);
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        let (config, tls) = parse("host=db user=u sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert!(tls.verify_chain() && !tls.verify_host());
        assert_eq!(config.get_user(), Some("u"));
    }

    #[test]
    fn other_words_pass_through_untouched() {
        let (config, tls) =
            parse("host=db user=u password='a b' sslmode=require application_name=x").unwrap();
        assert_eq!(config.get_password(), Some(&b"a b"[..]));
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(tls.mode, SslMode::Require);
        let (config, _) = parse("postgres://u@db/x").unwrap();
        assert_eq!(config.get_dbname(), Some("x"));
    }

    #[test]
    fn require_encrypts_without_checking_unless_given_a_root() {
        let (_, tls) = parse("postgres://u@db/x?sslmode=require").unwrap();
        if std::env::var_os("PGSSLROOTCERT").is_none() {
            assert!(!tls.verify_chain());
        }
        let (_, tls) = parse("postgres://u@db/x?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert!(tls.verify_chain() && !tls.verify_host());
    }

    #[test]
    fn a_bad_mode_names_itself_and_hides_the_password() {
        let err = parse("postgres://u:s3cret@db/x?sslmode=sometimes").unwrap_err();
        assert!(err.is_bad_input());
        let text = err.to_string();
        assert!(
            text.contains("sometimes") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
