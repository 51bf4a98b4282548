//! One auth file (containers auth.json or Docker config.json) as JSON.
//!
//! The file is kept as a `serde_json::Value` rather than a struct so that a
//! rewrite keeps every key cairn does not know about (docker's `proxies`,
//! `psFormat`, `currentContext`, ...).

use super::error::{io_error, AuthError};
use super::registry_key::RegistryHost;
use super::Credential;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The parsed content of one auth file.
pub(crate) struct AuthDoc {
    path: PathBuf,
    root: Map<String, Value>,
}

impl AuthDoc {
    /// Reads `path`; `None` when it does not exist (a missing file is just
    /// "nothing configured here").
    pub(crate) fn load(path: &Path) -> Result<Option<AuthDoc>, AuthError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("reading auth file", path)(e)),
        };
        // An empty file is what `touch` or a truncated first write leaves;
        // docker and podman both treat it as an empty config.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(AuthDoc::empty(path)));
        }
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| AuthError::MalformedFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let Value::Object(root) = value else {
            return Err(AuthError::MalformedFile {
                path: path.to_path_buf(),
                reason: "top level is not a JSON object".to_string(),
            });
        };
        let doc = AuthDoc {
            path: path.to_path_buf(),
            root,
        };
        // Check the shape of the sections up front so every later accessor
        // can rely on it.
        doc.section("auths")?;
        doc.section("credHelpers")?;
        doc.creds_store()?;
        Ok(Some(doc))
    }

    /// Reads `path`, or starts an empty document when it does not exist.
    pub(crate) fn load_or_empty(path: &Path) -> Result<AuthDoc, AuthError> {
        Ok(AuthDoc::load(path)?.unwrap_or_else(|| AuthDoc::empty(path)))
    }

    fn empty(path: &Path) -> AuthDoc {
        AuthDoc {
            path: path.to_path_buf(),
            root: Map::new(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A top-level object such as `auths`; `None` when absent or null.
    fn section(&self, name: &str) -> Result<Option<&Map<String, Value>>, AuthError> {
        match self.root.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(AuthError::MalformedFile {
                path: self.path.clone(),
                reason: format!("\"{name}\" is not a JSON object"),
            }),
        }
    }

    /// `credHelpers[registry]`: the helper that owns this registry, if any.
    pub(crate) fn cred_helper(&self, registry: &RegistryHost) -> Result<Option<&str>, AuthError> {
        let Some(helpers) = self.section("credHelpers")? else {
            return Ok(None);
        };
        for (key, value) in helpers {
            if !registry.matches_helper_key(key) {
                continue;
            }
            return match value {
                Value::String(name) if !name.is_empty() => Ok(Some(name)),
                Value::String(_) | Value::Null => Ok(None),
                _ => Err(self.bad_entry(key, "credHelpers value is not a string")),
            };
        }
        Ok(None)
    }

    /// The file-wide `credsStore` helper, if any.
    pub(crate) fn creds_store(&self) -> Result<Option<&str>, AuthError> {
        match self.root.get("credsStore") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(name)) if name.is_empty() => Ok(None),
            Some(Value::String(name)) => Ok(Some(name)),
            Some(_) => Err(AuthError::MalformedFile {
                path: self.path.clone(),
                reason: "\"credsStore\" is not a string".to_string(),
            }),
        }
    }

    /// The credential in `auths` for `registry`, if there is a usable one.
    ///
    /// Several keys may name the same registry ("quay.io" and the legacy
    /// "https://quay.io"); the one spelled exactly as `preferred_key` (what
    /// login writes) wins, so a fresh login beats a stale legacy entry.
    /// An entry without `auth` or `identitytoken` is what docker leaves when
    /// the secret lives in a helper; it is not a credential.
    pub(crate) fn auths_credential(
        &self,
        registry: &RegistryHost,
        preferred_key: &str,
    ) -> Result<Option<Credential>, AuthError> {
        let Some(auths) = self.section("auths")? else {
            return Ok(None);
        };
        let mut matching: Vec<(&String, &Value)> = auths
            .iter()
            .filter(|(key, _)| registry.matches_auths_key(key))
            .collect();
        matching.sort_by_key(|(key, _)| {
            key.as_str() != preferred_key && key.as_str() != registry.as_str()
        });
        for (key, entry) in matching {
            if let Some(credential) = self.entry_credential(key, entry)? {
                return Ok(Some(credential));
            }
        }
        Ok(None)
    }

    fn entry_credential(&self, key: &str, entry: &Value) -> Result<Option<Credential>, AuthError> {
        let Value::Object(entry) = entry else {
            return Err(self.bad_entry(key, "not a JSON object"));
        };
        let string_field = |name: &str| match entry.get(name) {
            None | Some(Value::Null) => Ok(""),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(self.bad_entry(key, &format!("\"{name}\" is not a string"))),
        };
        let identity_token = string_field("identitytoken")?;
        if !identity_token.is_empty() {
            return Ok(Some(Credential::IdentityToken(identity_token.to_string())));
        }
        let auth = string_field("auth")?;
        if auth.is_empty() {
            return Ok(None);
        }
        let (username, password) =
            decode_basic_auth(auth).map_err(|reason| self.bad_entry(key, &reason))?;
        if username.is_empty() && password.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credential::Basic { username, password }))
    }

    /// Sets `auths[key]` to exactly `{"auth": base64("user:pass")}`,
    /// replacing any previous entry under that key (a stale `identitytoken`
    /// must not outlive a new password).
    pub(crate) fn set_basic_auth(&mut self, key: &str, username: &str, password: &str) {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let auths = self
            .root
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            // Only reachable for `null`: `load` rejected every other non-object.
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(auths) = auths {
            let mut entry = Map::new();
            entry.insert("auth".to_string(), Value::String(encoded));
            auths.insert(key.to_string(), Value::Object(entry));
        }
    }

    /// Removes every `auths` key that names `registry`; whether any did.
    pub(crate) fn remove_auths(&mut self, registry: &RegistryHost) -> bool {
        let Some(Value::Object(auths)) = self.root.get_mut("auths") else {
            return false;
        };
        let before = auths.len();
        auths.retain(|key, _| !registry.matches_auths_key(key));
        auths.len() != before
    }

    /// Writes the document back atomically: a temp file in the same
    /// directory, mode 0600 from the start (it holds passwords), renamed over
    /// the old file, so readers never see half a file. A symlinked auth file
    /// (dotfile managers do this) is written through, not replaced.
    pub(crate) fn save(&self) -> Result<(), AuthError> {
        let path = match std::fs::canonicalize(&self.path) {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.path.clone(),
            Err(e) => return Err(io_error("resolving auth file", &self.path)(e)),
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_error("creating auth file directory", &dir))?;
        let mut json =
            serde_json::to_vec_pretty(&Value::Object(self.root.clone())).map_err(|e| {
                AuthError::MalformedFile {
                    path: path.clone(),
                    reason: format!("cannot serialise: {e}"),
                }
            })?;
        json.push(b'\n');
        let mut temp = tempfile::Builder::new()
            .prefix(".cairn-auth-")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(&dir)
            .map_err(io_error("creating temporary auth file in", &dir))?;
        temp.write_all(&json)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(io_error("writing temporary auth file for", &path))?;
        temp.persist(&path)
            .map_err(|e| io_error("replacing auth file", &path)(e.error))?;
        Ok(())
    }

    fn bad_entry(&self, key: &str, reason: &str) -> AuthError {
        AuthError::MalformedEntry {
            path: self.path.clone(),
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Decodes docker's `auth` field: base64 of "user:password". Padding is
/// optional because some tools strip it.
fn decode_basic_auth(auth: &str) -> Result<(String, String), String> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(auth.trim())
        .map_err(|e| format!("\"auth\" is not base64: {e}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| "\"auth\" does not decode to UTF-8 text".to_string())?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| "\"auth\" does not decode to \"user:password\"".to_string())?;
    Ok((username.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_decodes_with_or_without_padding() {
        assert_eq!(decode_basic_auth("dTpw").unwrap(), ("u".into(), "p".into()));
        assert_eq!(
            decode_basic_auth("dTpwYQ==").unwrap(),
            ("u".into(), "pa".into())
        );
        assert_eq!(
            decode_basic_auth("dTpwYQ").unwrap(),
            ("u".into(), "pa".into())
        );
        // The password may itself contain ':'.
        let encoded = base64::engine::general_purpose::STANDARD.encode("u:a:b");
        assert_eq!(
            decode_basic_auth(&encoded).unwrap(),
            ("u".into(), "a:b".into())
        );
        assert!(decode_basic_auth("!!!").is_err());
        assert!(
            decode_basic_auth(&base64::engine::general_purpose::STANDARD.encode("nocolon"))
                .is_err()
        );
    }
}
