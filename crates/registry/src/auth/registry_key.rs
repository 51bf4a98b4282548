//! Registry names, and the many ways auth files spell them.
//!
//! Callers name a registry by host ("quay.io", "127.0.0.1:5000",
//! "docker.io"). Auth files written by different tools key the same registry
//! as "quay.io", "https://quay.io", "http://quay.io/v1/" and so on, and
//! Docker Hub as "https://index.docker.io/v1/". Both sides are reduced to one
//! canonical host before comparing.

use super::error::AuthError;
use super::FileKind;

/// Docker Hub's canonical host.
const DOCKER_HUB: &str = "docker.io";
/// The key `docker login` writes for Docker Hub, and the server URL it hands
/// to credential helpers; the docker CLI finds Hub credentials only under it.
const DOCKER_HUB_DOCKER_KEY: &str = "https://index.docker.io/v1/";
/// Hosts that all mean Docker Hub.
const DOCKER_HUB_ALIASES: [&str; 3] = [DOCKER_HUB, "index.docker.io", "registry-1.docker.io"];

/// A registry host in canonical form: no scheme, no path, Docker Hub as
/// "docker.io".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistryHost(String);

impl RegistryHost {
    /// Parses what a caller passes. A scheme and anything after the host are
    /// dropped, so "https://index.docker.io/v1/" and "docker.io" are equal.
    pub(crate) fn parse(input: &str) -> Result<RegistryHost, AuthError> {
        let bad = |reason: &str| AuthError::BadRegistry {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (_, rest) = strip_scheme(input.trim());
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace"));
        }
        Ok(RegistryHost(canonical_alias(host)))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The key `login` writes into `auths` of a file of this kind, and the
    /// server URL given to credential helpers for it: what the tool that owns
    /// that kind of file would use, so it finds what cairn stored.
    pub(crate) fn key_for(&self, kind: FileKind) -> String {
        match kind {
            FileKind::Docker if self.0 == DOCKER_HUB => DOCKER_HUB_DOCKER_KEY.to_string(),
            _ => self.0.clone(),
        }
    }

    /// Whether an `auths` key names this registry. Keys with a scheme are the
    /// legacy docker form and only their host counts; keys without a scheme
    /// but with a path ("quay.io/team") are podman's per-namespace entries,
    /// which are not credentials for the whole registry.
    pub(crate) fn matches_auths_key(&self, key: &str) -> bool {
        let (had_scheme, rest) = strip_scheme(key.trim());
        let host = if had_scheme {
            rest.split('/').next().unwrap_or_default()
        } else {
            let trimmed = rest.trim_end_matches('/');
            if trimmed.contains('/') {
                return false;
            }
            trimmed
        };
        !host.is_empty() && canonical_alias(host) == self.0
    }

    /// Whether a `credHelpers` key names this registry (any spelling).
    pub(crate) fn matches_helper_key(&self, key: &str) -> bool {
        RegistryHost::parse(key).is_ok_and(|host| host == *self)
    }
}

impl std::fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits off "https://" or "http://" (any case), saying whether one was there.
fn strip_scheme(s: &str) -> (bool, &str) {
    for scheme in ["https://", "http://"] {
        if let Some(prefix) = s.get(..scheme.len()) {
            if prefix.eq_ignore_ascii_case(scheme) {
                return (true, &s[scheme.len()..]);
            }
        }
    }
    (false, s)
}

fn canonical_alias(host: &str) -> String {
    if DOCKER_HUB_ALIASES
        .iter()
        .any(|alias| host.eq_ignore_ascii_case(alias))
    {
        DOCKER_HUB.to_string()
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> RegistryHost {
        RegistryHost::parse(s).unwrap()
    }

    #[test]
    fn parse_drops_scheme_and_path_and_folds_docker_hub() {
        assert_eq!(host("quay.io").as_str(), "quay.io");
        assert_eq!(host("https://quay.io/v1/").as_str(), "quay.io");
        assert_eq!(host("127.0.0.1:5000").as_str(), "127.0.0.1:5000");
        for hub in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            DOCKER_HUB_DOCKER_KEY,
        ] {
            assert_eq!(host(hub).as_str(), "docker.io", "{hub}");
        }
        assert!(RegistryHost::parse("").is_err());
        assert!(RegistryHost::parse("https://").is_err());
        assert!(RegistryHost::parse("a b").is_err());
    }

    #[test]
    fn auths_keys_match_in_every_spelling_but_namespaced() {
        let quay = host("quay.io");
        for key in [
            "quay.io",
            "quay.io/",
            "https://quay.io",
            "http://quay.io/v1/",
            "HTTPS://quay.io/v2/",
        ] {
            assert!(quay.matches_auths_key(key), "{key}");
        }
        assert!(!quay.matches_auths_key("quay.io/team"));
        assert!(!quay.matches_auths_key("quay.io:443"));
        assert!(!quay.matches_auths_key("https://"));
        assert!(host("docker.io").matches_auths_key(DOCKER_HUB_DOCKER_KEY));
    }

    #[test]
    fn login_key_depends_on_file_kind() {
        assert_eq!(
            host("docker.io").key_for(FileKind::Docker),
            DOCKER_HUB_DOCKER_KEY
        );
        assert_eq!(host("docker.io").key_for(FileKind::Containers), "docker.io");
        assert_eq!(host("quay.io").key_for(FileKind::Docker), "quay.io");
    }
}
