//! Docker credential helpers: `docker-credential-NAME get|store|erase`.
//!
//! The protocol (docker-credential-helpers): the action is the only
//! argument; `get` and `erase` read the server URL on stdin, `store` reads
//! `{"ServerURL","Username","Secret"}`; `get` prints
//! `{"ServerURL","Username","Secret"}`, where Username "<token>" means Secret
//! is an identity token. A missing entry is a non-zero exit whose output is
//! "credentials not found in native keychain".

use super::error::AuthError;
use super::Credential;
use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const NOT_FOUND_MESSAGE: &str = "credentials not found in native keychain";
/// The Username a helper returns when Secret is an identity token.
const IDENTITY_TOKEN_USERNAME: &str = "<token>";

/// A helper program found on the search PATH.
pub(crate) struct CredentialHelper {
    name: String,
    program: PathBuf,
    /// The PATH the helper runs with: the one it was found on, so helpers
    /// that call other programs see the same world cairn searched.
    search_path: Option<OsString>,
}

#[derive(serde::Deserialize)]
struct HelperCredential {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

#[derive(serde::Serialize)]
struct HelperStoreRequest<'a> {
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Secret")]
    secret: &'a str,
}

impl CredentialHelper {
    /// Finds `docker-credential-<name>` on `search_path`. `config` is the
    /// auth file that named the helper, for the error message.
    pub(crate) fn find(
        name: &str,
        search_path: Option<&OsStr>,
        config: &Path,
    ) -> Result<CredentialHelper, AuthError> {
        // The name comes from a file; it must not smuggle in a path.
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return Err(AuthError::BadHelperName {
                name: name.to_string(),
                config: config.to_path_buf(),
            });
        }
        let file_name = format!("docker-credential-{name}");
        let program = search_path
            .into_iter()
            .flat_map(std::env::split_paths)
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(|dir| dir.join(&file_name))
            .find(|candidate| is_executable_file(candidate))
            .ok_or_else(|| AuthError::HelperNotFound {
                helper: name.to_string(),
                config: config.to_path_buf(),
            })?;
        Ok(CredentialHelper {
            name: name.to_string(),
            program,
            search_path: search_path.map(OsStr::to_os_string),
        })
    }

    /// The name login reports as where credentials went.
    pub(crate) fn display_name(&self) -> String {
        format!("docker-credential-{}", self.name)
    }

    /// `get`: `None` when the helper has nothing for `server_url`.
    pub(crate) fn get(&self, server_url: &str) -> Result<Option<Credential>, AuthError> {
        let output = self.run("get", server_url, server_url.as_bytes())?;
        if !output.status.success() {
            return if reports_not_found(&output) {
                Ok(None)
            } else {
                Err(self.failure("get", server_url, &output))
            };
        }
        let parsed: HelperCredential =
            serde_json::from_slice(&output.stdout).map_err(|e| AuthError::HelperBadOutput {
                helper: self.name.clone(),
                registry: server_url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(match (parsed.username.as_str(), parsed.secret) {
            (_, secret) if secret.is_empty() => None,
            (IDENTITY_TOKEN_USERNAME, secret) => Some(Credential::IdentityToken(secret)),
            (username, password) => Some(Credential::Basic {
                username: username.to_string(),
                password,
            }),
        })
    }

    /// `store`: hands the helper a username and secret for `server_url`.
    pub(crate) fn store(
        &self,
        server_url: &str,
        username: &str,
        secret: &str,
    ) -> Result<(), AuthError> {
        let request = HelperStoreRequest {
            server_url,
            username,
            secret,
        };
        // Serialising three strings cannot fail; an empty body would only
        // make the helper report an error, which is surfaced below.
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let output = self.run("store", server_url, &body)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(self.failure("store", server_url, &output))
        }
    }

    /// `erase`: `false` when the helper had nothing for `server_url`.
    pub(crate) fn erase(&self, server_url: &str) -> Result<bool, AuthError> {
        let output = self.run("erase", server_url, server_url.as_bytes())?;
        if output.status.success() {
            Ok(true)
        } else if reports_not_found(&output) {
            Ok(false)
        } else {
            Err(self.failure("erase", server_url, &output))
        }
    }

    fn run(
        &self,
        action: &'static str,
        server_url: &str,
        input: &[u8],
    ) -> Result<Output, AuthError> {
        let spawn_error = |source| AuthError::HelperSpawn {
            helper: self.name.clone(),
            action,
            registry: server_url.to_string(),
            source,
        };
        let mut command = Command::new(&self.program);
        command
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = &self.search_path {
            command.env("PATH", path);
        }
        let mut child = spawn_retrying_busy_text(&mut command).map_err(spawn_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading its input (bad action, locked
            // keychain); its exit status says more than our broken pipe.
            if let Err(e) = stdin.write_all(input) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(spawn_error(e));
                }
            }
        }
        child.wait_with_output().map_err(spawn_error)
    }

    fn failure(&self, action: &'static str, server_url: &str, output: &Output) -> AuthError {
        // Helpers built on docker-credential-helpers print their errors on
        // stdout; others use stderr. Report whichever said something.
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let message = if stderr.is_empty() {
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        } else {
            stderr
        };
        AuthError::HelperFailed {
            helper: self.name.clone(),
            action,
            registry: server_url.to_string(),
            status: output.status.to_string(),
            message,
        }
    }
}

fn reports_not_found(output: &Output) -> bool {
    [&output.stdout, &output.stderr]
        .iter()
        .any(|stream| String::from_utf8_lossy(stream).contains(NOT_FOUND_MESSAGE))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Spawns, retrying briefly on ETXTBSY: if another thread of this process
/// forked while a helper script was still open for writing (installers,
/// tests), exec fails until that child execs or exits, which is immediate.
fn spawn_retrying_busy_text(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 10 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(5 * attempts));
            }
            result => return result,
        }
    }
}
