//! Registry credentials, found and stored where docker and podman/buildah
//! keep them, so `cairn login`, `podman login` and `docker login` share
//! logins. See docs/registry-auth.md.
//!
//! Lookup order (containers-auth.json(5)): an explicit auth file alone;
//! otherwise `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config`), then
//! Docker's `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. The first
//! file with a credential for the registry wins; within a file,
//! `credHelpers[registry]`, then `auths`, then `credsStore`.

mod auth_file;
mod error;
mod helper;
mod registry_key;

pub use error::AuthError;

use auth_file::AuthDoc;
use helper::CredentialHelper;
use registry_key::RegistryHost;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What to authenticate to a registry with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`), exchanged at the
    /// registry's token endpoint instead of a password.
    IdentityToken(String),
}

// Hand-written so secrets never reach logs through `{:?}`.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The environment variables auth files are found through. Taken as a
/// value, not read from the process, so callers and tests can be explicit.
/// Unset and empty are the same.
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    pub registry_auth_file: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    /// podman reads `$XDG_CONFIG_HOME/containers/auth.json`; default `$HOME/.config`.
    pub xdg_config_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    /// Where `docker-credential-*` helpers are searched, and the PATH they run with.
    pub path: Option<OsString>,
}

impl EnvVars {
    /// The current process's values.
    pub fn from_process() -> EnvVars {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        EnvVars {
            registry_auth_file: var("REGISTRY_AUTH_FILE").map(PathBuf::from),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR").map(PathBuf::from),
            xdg_config_home: var("XDG_CONFIG_HOME").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            docker_config: var("DOCKER_CONFIG").map(PathBuf::from),
            path: var("PATH"),
        }
    }

    fn non_empty(path: &Option<PathBuf>) -> Option<&Path> {
        path.as_deref().filter(|p| !p.as_os_str().is_empty())
    }
}

/// Which tool's conventions a file follows; decides how Docker Hub is keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    /// containers auth.json (podman, buildah, skopeo): Hub is "docker.io".
    Containers,
    /// Docker's config.json: Hub is "https://index.docker.io/v1/".
    Docker,
}

#[derive(Debug, Clone)]
struct AuthFile {
    path: PathBuf,
    kind: FileKind,
}

/// The auth files for one invocation, in lookup order, and where logins go.
#[derive(Debug, Clone)]
pub struct AuthFiles {
    vars: EnvVars,
    /// `--authfile`: when set, the only file read and written.
    explicit: Option<PathBuf>,
}

impl AuthFiles {
    /// From the process environment: REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR,
    /// XDG_CONFIG_HOME, HOME, DOCKER_CONFIG, PATH.
    pub fn from_env() -> AuthFiles {
        AuthFiles::from_vars(EnvVars::from_process())
    }

    /// From explicitly given variables.
    pub fn from_vars(vars: EnvVars) -> AuthFiles {
        AuthFiles {
            vars,
            explicit: None,
        }
    }

    /// An explicit `--authfile`: the only file read and written. Helpers
    /// are still searched on the process PATH.
    pub fn with_authfile(path: PathBuf) -> AuthFiles {
        AuthFiles::from_env().only_authfile(path)
    }

    /// Restricts these files to one explicit auth file.
    pub fn only_authfile(self, path: PathBuf) -> AuthFiles {
        AuthFiles {
            explicit: Some(path),
            ..self
        }
    }

    /// The files lookup reads, first to last (missing ones included).
    pub fn search_order(&self) -> Vec<PathBuf> {
        self.lookup_chain()
            .into_iter()
            .map(|file| file.path)
            .collect()
    }

    /// The file `login` would write (it may still hand the secret to a
    /// credential helper that file names).
    pub fn write_target(&self) -> Result<PathBuf, AuthError> {
        Ok(self.write_file()?.path)
    }

    /// The credential for a registry host ("127.0.0.1:5000", "docker.io",
    /// "quay.io"); `Anonymous` when nothing is configured.
    pub fn lookup(&self, registry: &str) -> Result<Credential, AuthError> {
        let host = RegistryHost::parse(registry)?;
        for file in self.lookup_chain() {
            let Some(doc) = AuthDoc::load(&file.path)? else {
                continue;
            };
            if let Some(credential) = self.lookup_in(&doc, file.kind, &host)? {
                return Ok(credential);
            }
        }
        Ok(Credential::Anonymous)
    }

    /// Stores credentials (`cairn login`). Returns where they went: the auth
    /// file's path, or "docker-credential-NAME" when that file delegates the
    /// registry to a helper.
    pub fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<String, AuthError> {
        let host = RegistryHost::parse(registry)?;
        let bad_login = |reason: &str| AuthError::BadLogin {
            registry: host.to_string(),
            reason: reason.to_string(),
        };
        if username.is_empty() {
            return Err(bad_login("empty username"));
        }
        // The stored form is "user:password"; a ':' in the user would move
        // the split on the way back.
        if username.contains(':') {
            return Err(bad_login("username contains ':'"));
        }
        let file = self.write_file()?;
        let mut doc = AuthDoc::load_or_empty(&file.path)?;
        let key = host.key_for(file.kind);
        if let Some(name) = delegating_helper(&doc, &host)? {
            let helper = CredentialHelper::find(name, self.vars.path.as_deref(), doc.path())?;
            helper.store(&key, username, password)?;
            return Ok(helper.display_name());
        }
        doc.set_basic_auth(&key, username, password);
        doc.save()?;
        Ok(file.path.display().to_string())
    }

    /// Removes credentials (`cairn logout`) from every file in the lookup
    /// chain that has them, and from the helpers those files delegate to, so
    /// that afterwards `lookup` really finds nothing. `Ok(false)` when there
    /// was nothing to remove.
    pub fn logout(&self, registry: &str) -> Result<bool, AuthError> {
        let host = RegistryHost::parse(registry)?;
        let mut removed = false;
        for file in self.lookup_chain() {
            let Some(mut doc) = AuthDoc::load(&file.path)? else {
                continue;
            };
            let key = host.key_for(file.kind);
            if let Some(name) = doc.cred_helper(&host)? {
                let helper = CredentialHelper::find(name, self.vars.path.as_deref(), doc.path())?;
                removed |= helper.erase(&key)?;
            } else if let Some(name) = doc.creds_store()? {
                if let Some(helper) = self.default_store(&doc, name)? {
                    removed |= helper.erase(&key)?;
                }
            }
            if doc.remove_auths(&host) {
                doc.save()?;
                removed = true;
            }
        }
        Ok(removed)
    }

    /// One file's credential: `credHelpers`, then `auths`, then `credsStore`.
    /// `auths` comes before `credsStore` because docker leaves an empty
    /// `auths` entry next to secrets it put in the store, and a real entry
    /// there was written on purpose.
    fn lookup_in(
        &self,
        doc: &AuthDoc,
        kind: FileKind,
        host: &RegistryHost,
    ) -> Result<Option<Credential>, AuthError> {
        let key = host.key_for(kind);
        if let Some(name) = doc.cred_helper(host)? {
            let helper = CredentialHelper::find(name, self.vars.path.as_deref(), doc.path())?;
            if let Some(credential) = helper.get(&key)? {
                return Ok(Some(credential));
            }
        }
        if let Some(credential) = doc.auths_credential(host, &key)? {
            return Ok(Some(credential));
        }
        if let Some(name) = doc.creds_store()? {
            return match self.default_store(doc, name)? {
                Some(helper) => helper.get(&key),
                None => Ok(None),
            };
        }
        Ok(None)
    }

    /// The file-wide `credsStore` helper, or `None` when it is not
    /// installed. It applies to every registry, so a config copied from a
    /// desktop machine ("credsStore": "desktop") must not break anonymous
    /// pulls of public images; a `credHelpers` entry naming this very
    /// registry is different and stays an error.
    fn default_store(
        &self,
        doc: &AuthDoc,
        name: &str,
    ) -> Result<Option<CredentialHelper>, AuthError> {
        match CredentialHelper::find(name, self.vars.path.as_deref(), doc.path()) {
            Ok(helper) => Ok(Some(helper)),
            Err(err @ AuthError::HelperNotFound { .. }) => {
                tracing::warn!("ignoring credsStore: {err}");
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    fn lookup_chain(&self) -> Vec<AuthFile> {
        if let Some(path) = &self.explicit {
            return vec![containers_file(path.clone())];
        }
        let vars = &self.vars;
        let mut chain = Vec::new();
        if let Some(path) = EnvVars::non_empty(&vars.registry_auth_file) {
            chain.push(containers_file(path.to_path_buf()));
        }
        if let Some(runtime) = EnvVars::non_empty(&vars.xdg_runtime_dir) {
            chain.push(containers_file(runtime.join("containers/auth.json")));
        }
        let config_home = EnvVars::non_empty(&vars.xdg_config_home)
            .map(Path::to_path_buf)
            .or_else(|| EnvVars::non_empty(&vars.home).map(|home| home.join(".config")));
        if let Some(config_home) = config_home {
            chain.push(containers_file(config_home.join("containers/auth.json")));
        }
        if let Some(path) = self.docker_config_path() {
            chain.push(AuthFile {
                path,
                kind: FileKind::Docker,
            });
        }
        chain
    }

    fn write_file(&self) -> Result<AuthFile, AuthError> {
        if let Some(path) = &self.explicit {
            return Ok(containers_file(path.clone()));
        }
        if let Some(path) = EnvVars::non_empty(&self.vars.registry_auth_file) {
            return Ok(containers_file(path.to_path_buf()));
        }
        // podman writes under XDG_RUNTIME_DIR only when the directory is
        // really there (a stale variable in a `su` shell points nowhere).
        if let Some(runtime) = EnvVars::non_empty(&self.vars.xdg_runtime_dir) {
            if runtime.is_dir() {
                return Ok(containers_file(runtime.join("containers/auth.json")));
            }
        }
        self.docker_config_path()
            .map(|path| AuthFile {
                path,
                kind: FileKind::Docker,
            })
            .ok_or(AuthError::NoWriteTarget)
    }

    fn docker_config_path(&self) -> Option<PathBuf> {
        EnvVars::non_empty(&self.vars.docker_config)
            .map(|dir| dir.join("config.json"))
            .or_else(|| {
                EnvVars::non_empty(&self.vars.home).map(|home| home.join(".docker/config.json"))
            })
    }
}

fn containers_file(path: PathBuf) -> AuthFile {
    AuthFile {
        path,
        kind: FileKind::Containers,
    }
}

/// The helper a file hands this registry's secrets to, as docker does on
/// login and logout: `credHelpers[registry]`, else the file-wide `credsStore`.
fn delegating_helper<'a>(
    doc: &'a AuthDoc,
    host: &RegistryHost,
) -> Result<Option<&'a str>, AuthError> {
    Ok(match doc.cred_helper(host)? {
        Some(name) => Some(name),
        None => doc.creds_store()?,
    })
}
