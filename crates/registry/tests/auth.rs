//! Registry credentials: lookup order, key spellings, credential helpers,
//! login and logout. Every test builds its own directory tree and passes
//! the environment explicitly (`EnvVars`), so tests never race on the
//! process environment.

use base64::Engine as _;
use cairn_registry::auth::{AuthError, AuthFiles, Credential, EnvVars};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// A fake home with a runtime dir, a bin dir for helpers and a secrets dir
/// the test helper keeps its keychain in.
struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let fixture = Fixture {
            root: tempfile::tempdir().unwrap(),
        };
        for dir in ["home", "run", "bin", "secrets"] {
            std::fs::create_dir_all(fixture.path(dir)).unwrap();
        }
        fixture
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// HOME and XDG_RUNTIME_DIR set, helpers searched in our bin dir first.
    fn vars(&self) -> EnvVars {
        let path =
            std::env::join_paths([self.path("bin"), "/usr/bin".into(), "/bin".into()]).unwrap();
        EnvVars {
            home: Some(self.path("home")),
            xdg_runtime_dir: Some(self.path("run")),
            path: Some(path),
            ..EnvVars::default()
        }
    }

    fn files(&self) -> AuthFiles {
        AuthFiles::from_vars(self.vars())
    }

    fn write_json(&self, rel: &str, value: Value) -> PathBuf {
        self.write_raw(rel, &serde_json::to_string_pretty(&value).unwrap())
    }

    fn write_raw(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read_json(&self, rel: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(rel)).unwrap()).unwrap()
    }

    /// Installs `docker-credential-cairntest`, a real helper speaking the
    /// docker protocol, keeping one JSON file per server URL in `secrets/`
    /// and logging "ACTION URL" lines to `secrets/calls.log`. Any URL
    /// containing "fail.example" makes it fail with a message on stderr.
    fn install_helper(&self) {
        let script = format!(
            r#"#!/bin/sh
secrets='{secrets}'
action="$1"
input=$(cat)
case "$action" in
get|erase) url="$input" ;;
store) url=$(printf '%s' "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p') ;;
*) echo "unknown action $action" >&2; exit 2 ;;
esac
echo "$action $url" >> "$secrets/calls.log"
case "$url" in
*fail.example*) echo "keychain is locked" >&2; exit 3 ;;
esac
file="$secrets/$(printf '%s' "$url" | tr -c 'A-Za-z0-9.-' '_')"
case "$action" in
get) if [ -f "$file" ]; then cat "$file"; else echo "credentials not found in native keychain"; exit 1; fi ;;
store) printf '%s' "$input" > "$file" ;;
erase) if [ -f "$file" ]; then rm "$file"; else echo "credentials not found in native keychain"; exit 1; fi ;;
esac
"#,
            secrets = self.path("secrets").display()
        );
        let path = self.path("bin/docker-credential-cairntest");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Puts a secret into the test helper's keychain directly.
    fn helper_seed(&self, server_url: &str, username: &str, secret: &str) {
        let name: String = server_url
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let body = json!({"ServerURL": server_url, "Username": username, "Secret": secret});
        std::fs::write(self.path("secrets").join(name), body.to_string()).unwrap();
    }

    fn helper_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("secrets/calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn basic(username: &str, password: &str) -> Credential {
    Credential::Basic {
        username: username.to_string(),
        password: password.to_string(),
    }
}

fn encode(user_pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(user_pass)
}

fn auths(key: &str, user_pass: &str) -> Value {
    json!({ "auths": { key: { "auth": encode(user_pass) } } })
}

const RUN_AUTH: &str = "run/containers/auth.json";
const CONFIG_AUTH: &str = "home/.config/containers/auth.json";
const DOCKER_CONFIG: &str = "home/.docker/config.json";

#[test]
fn nothing_configured_is_anonymous() {
    let fx = Fixture::new();
    assert_eq!(fx.files().lookup("quay.io").unwrap(), Credential::Anonymous);
    // Not even HOME: still no error, just nothing to read.
    let bare = AuthFiles::from_vars(EnvVars::default());
    assert_eq!(bare.lookup("quay.io").unwrap(), Credential::Anonymous);
    assert!(matches!(bare.write_target(), Err(AuthError::NoWriteTarget)));
}

#[test]
fn lookup_order_across_the_four_files() {
    let fx = Fixture::new();
    let explicit_env = fx.write_json("env-auth.json", auths("quay.io", "env:1"));
    fx.write_json(RUN_AUTH, auths("quay.io", "run:2"));
    fx.write_json(CONFIG_AUTH, auths("quay.io", "config:3"));
    fx.write_json(DOCKER_CONFIG, auths("quay.io", "docker:4"));
    let with_env = AuthFiles::from_vars(EnvVars {
        registry_auth_file: Some(explicit_env.clone()),
        ..fx.vars()
    });
    assert_eq!(
        with_env.search_order(),
        vec![
            explicit_env.clone(),
            fx.path(RUN_AUTH),
            fx.path(CONFIG_AUTH),
            fx.path(DOCKER_CONFIG)
        ]
    );

    assert_eq!(with_env.lookup("quay.io").unwrap(), basic("env", "1"));
    // A file without an entry for this registry does not stop the search.
    fx.write_json("env-auth.json", auths("ghcr.io", "other:0"));
    assert_eq!(with_env.lookup("quay.io").unwrap(), basic("run", "2"));
    std::fs::remove_file(fx.path(RUN_AUTH)).unwrap();
    assert_eq!(with_env.lookup("quay.io").unwrap(), basic("config", "3"));
    std::fs::remove_file(fx.path(CONFIG_AUTH)).unwrap();
    assert_eq!(with_env.lookup("quay.io").unwrap(), basic("docker", "4"));
    assert_eq!(with_env.lookup("ghcr.io").unwrap(), basic("other", "0"));
}

#[test]
fn docker_config_and_xdg_config_home_are_honoured() {
    let fx = Fixture::new();
    fx.write_json("dockercfg/config.json", auths("quay.io", "dc:1"));
    fx.write_json("xdgconf/containers/auth.json", auths("ghcr.io", "xc:2"));
    fx.write_json(DOCKER_CONFIG, auths("quay.io", "ignored:0"));
    let files = AuthFiles::from_vars(EnvVars {
        docker_config: Some(fx.path("dockercfg")),
        xdg_config_home: Some(fx.path("xdgconf")),
        ..fx.vars()
    });
    assert_eq!(files.lookup("quay.io").unwrap(), basic("dc", "1"));
    assert_eq!(files.lookup("ghcr.io").unwrap(), basic("xc", "2"));
}

#[test]
fn explicit_authfile_is_the_only_file() {
    let fx = Fixture::new();
    fx.write_json(RUN_AUTH, auths("quay.io", "run:1"));
    let authfile = fx.path("mine.json");
    let files = fx.files().only_authfile(authfile.clone());
    assert_eq!(files.search_order(), vec![authfile.clone()]);
    assert_eq!(files.lookup("quay.io").unwrap(), Credential::Anonymous);
    assert_eq!(files.write_target().unwrap(), authfile);
    assert_eq!(
        files.login("quay.io", "me", "pw").unwrap(),
        authfile.display().to_string()
    );
    assert_eq!(files.lookup("quay.io").unwrap(), basic("me", "pw"));
    // The runtime file was neither read nor touched.
    assert_eq!(fx.read_json(RUN_AUTH), auths("quay.io", "run:1"));
}

#[test]
fn docker_hub_is_found_under_every_name() {
    let fx = Fixture::new();
    fx.write_json(
        DOCKER_CONFIG,
        auths("https://index.docker.io/v1/", "hub:pw"),
    );
    for name in [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
    ] {
        assert_eq!(
            fx.files().lookup(name).unwrap(),
            basic("hub", "pw"),
            "{name}"
        );
    }
    // And the other way round: podman's "docker.io" key serves docker's names.
    fx.write_json(RUN_AUTH, auths("docker.io", "podman:pw"));
    assert_eq!(
        fx.files().lookup("index.docker.io").unwrap(),
        basic("podman", "pw")
    );
}

#[test]
fn scheme_and_path_key_forms_match_the_host() {
    let fx = Fixture::new();
    fx.write_json(
        DOCKER_CONFIG,
        json!({ "auths": {
            "https://quay.io": { "auth": encode("a:1") },
            "http://127.0.0.1:5000": { "auth": encode("b:2") },
            "https://ghcr.io/v1/": { "auth": encode("c:3") },
            "gitlab.example/team": { "auth": encode("ns:4") },
        }}),
    );
    let files = fx.files();
    assert_eq!(files.lookup("quay.io").unwrap(), basic("a", "1"));
    assert_eq!(files.lookup("https://quay.io/").unwrap(), basic("a", "1"));
    assert_eq!(files.lookup("127.0.0.1:5000").unwrap(), basic("b", "2"));
    assert_eq!(files.lookup("ghcr.io").unwrap(), basic("c", "3"));
    // podman's per-namespace entries are not credentials for the registry.
    assert_eq!(
        files.lookup("gitlab.example").unwrap(),
        Credential::Anonymous
    );
}

#[test]
fn exact_key_beats_legacy_spelling() {
    let fx = Fixture::new();
    fx.write_json(
        RUN_AUTH,
        json!({ "auths": {
            "https://quay.io/v1/": { "auth": encode("old:1") },
            "quay.io": { "auth": encode("new:2") },
        }}),
    );
    assert_eq!(fx.files().lookup("quay.io").unwrap(), basic("new", "2"));
}

#[test]
fn identity_token_entries() {
    let fx = Fixture::new();
    fx.write_json(
        DOCKER_CONFIG,
        json!({ "auths": { "myacr.example": { "auth": encode("00000000-0000-0000-0000-000000000000:"), "identitytoken": "refresh-me" } } }),
    );
    assert_eq!(
        fx.files().lookup("myacr.example").unwrap(),
        Credential::IdentityToken("refresh-me".into())
    );
}

#[test]
fn cred_helpers_entry_runs_the_helper() {
    let fx = Fixture::new();
    fx.install_helper();
    fx.helper_seed("quay.io", "helped", "s3cret");
    fx.helper_seed("token.example", "<token>", "tok");
    fx.write_json(
        DOCKER_CONFIG,
        json!({
            "credHelpers": { "quay.io": "cairntest", "token.example": "cairntest", "empty.example": "cairntest" },
            "auths": { "empty.example": { "auth": encode("fallback:pw") } },
        }),
    );
    let files = fx.files();
    assert_eq!(files.lookup("quay.io").unwrap(), basic("helped", "s3cret"));
    assert_eq!(
        files.lookup("token.example").unwrap(),
        Credential::IdentityToken("tok".into())
    );
    // The helper has nothing: fall back to the file's own entry.
    assert_eq!(
        files.lookup("empty.example").unwrap(),
        basic("fallback", "pw")
    );
    assert_eq!(files.lookup("ghcr.io").unwrap(), Credential::Anonymous);
    assert_eq!(
        fx.helper_calls(),
        vec!["get quay.io", "get token.example", "get empty.example"]
    );
}

#[test]
fn creds_store_is_asked_after_auths() {
    let fx = Fixture::new();
    fx.install_helper();
    // Docker Hub goes to the helper under docker's own server URL.
    fx.helper_seed("https://index.docker.io/v1/", "hub", "fromstore");
    fx.write_json(
        DOCKER_CONFIG,
        json!({
            "credsStore": "cairntest",
            "auths": {
                "https://index.docker.io/v1/": {},
                "inline.example": { "auth": encode("inline:pw") },
            },
        }),
    );
    let files = fx.files();
    assert_eq!(
        files.lookup("docker.io").unwrap(),
        basic("hub", "fromstore")
    );
    assert_eq!(
        files.lookup("inline.example").unwrap(),
        basic("inline", "pw")
    );
    assert_eq!(files.lookup("quay.io").unwrap(), Credential::Anonymous);
    assert_eq!(
        fx.helper_calls(),
        vec!["get https://index.docker.io/v1/", "get quay.io"]
    );
}

#[test]
fn helper_failure_names_the_helper_and_its_stderr() {
    let fx = Fixture::new();
    fx.install_helper();
    fx.write_json(
        DOCKER_CONFIG,
        json!({ "credHelpers": { "fail.example": "cairntest" } }),
    );
    let err = fx.files().lookup("fail.example").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, AuthError::HelperFailed { .. }), "{err:?}");
    assert!(message.contains("docker-credential-cairntest"), "{message}");
    assert!(message.contains("keychain is locked"), "{message}");
    assert!(message.contains("fail.example"), "{message}");
}

#[test]
fn missing_registry_helper_is_an_error_naming_helper_and_file() {
    let fx = Fixture::new();
    let config = fx.write_json(
        DOCKER_CONFIG,
        json!({ "credHelpers": { "quay.io": "nosuchhelper" } }),
    );
    let err = fx.files().lookup("quay.io").unwrap_err();
    assert!(matches!(err, AuthError::HelperNotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("docker-credential-nosuchhelper"),
        "{message}"
    );
    assert!(message.contains(&config.display().to_string()), "{message}");
    // A name that is a path is refused, not run.
    fx.write_json(
        DOCKER_CONFIG,
        json!({ "credHelpers": { "quay.io": "../../bin/sh" } }),
    );
    let err = fx.files().lookup("quay.io").unwrap_err();
    assert!(matches!(err, AuthError::BadHelperName { .. }), "{err:?}");
}

#[test]
fn missing_default_store_does_not_break_anonymous_pulls() {
    let fx = Fixture::new();
    let files = AuthFiles::from_vars(EnvVars {
        xdg_runtime_dir: None,
        ..fx.vars()
    });
    fx.write_json(DOCKER_CONFIG, json!({ "credsStore": "desktop" }));
    assert_eq!(files.lookup("docker.io").unwrap(), Credential::Anonymous);
    assert!(!files.logout("docker.io").unwrap());
    // Storing there is impossible, and says so.
    let err = files.login("docker.io", "u", "p").unwrap_err();
    assert!(matches!(err, AuthError::HelperNotFound { .. }), "{err:?}");
}

#[test]
fn malformed_files_are_errors_naming_the_file() {
    let fx = Fixture::new();
    let path = fx.write_raw(RUN_AUTH, "{ \"auths\": ");
    let err = fx.files().lookup("quay.io").unwrap_err();
    assert!(matches!(err, AuthError::MalformedFile { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    // login must not overwrite a file it cannot read.
    assert!(fx.files().login("quay.io", "u", "p").is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ \"auths\": ");

    fx.write_json(RUN_AUTH, json!({ "auths": [] }));
    assert!(matches!(
        fx.files().lookup("quay.io"),
        Err(AuthError::MalformedFile { .. })
    ));

    fx.write_json(
        RUN_AUTH,
        json!({ "auths": { "quay.io": { "auth": "not base64!" } } }),
    );
    let err = fx.files().lookup("quay.io").unwrap_err();
    assert!(matches!(err, AuthError::MalformedEntry { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    // An empty file is an empty config, as for docker and podman.
    fx.write_raw(RUN_AUTH, "");
    assert_eq!(fx.files().lookup("quay.io").unwrap(), Credential::Anonymous);
}

#[test]
fn login_then_lookup_round_trip() {
    let fx = Fixture::new();
    let files = fx.files();
    assert_eq!(files.write_target().unwrap(), fx.path(RUN_AUTH));
    let went = files.login("127.0.0.1:5000", "me", "p:ss").unwrap();
    assert_eq!(went, fx.path(RUN_AUTH).display().to_string());
    assert_eq!(files.lookup("127.0.0.1:5000").unwrap(), basic("me", "p:ss"));
    assert_eq!(
        fx.read_json(RUN_AUTH),
        json!({ "auths": { "127.0.0.1:5000": { "auth": encode("me:p:ss") } } })
    );
    // A second login replaces the entry, including a stale identity token.
    fx.write_json(
        RUN_AUTH,
        json!({ "auths": { "127.0.0.1:5000": { "identitytoken": "stale" } } }),
    );
    files.login("127.0.0.1:5000", "me", "new").unwrap();
    assert_eq!(files.lookup("127.0.0.1:5000").unwrap(), basic("me", "new"));

    assert!(matches!(
        files.login("quay.io", "", "p"),
        Err(AuthError::BadLogin { .. })
    ));
    assert!(matches!(
        files.login("quay.io", "a:b", "p"),
        Err(AuthError::BadLogin { .. })
    ));
}

#[test]
fn login_falls_back_to_docker_config_without_a_runtime_dir() {
    let fx = Fixture::new();
    let files = AuthFiles::from_vars(EnvVars {
        xdg_runtime_dir: Some(fx.path("no-such-run-dir")),
        ..fx.vars()
    });
    assert_eq!(files.write_target().unwrap(), fx.path(DOCKER_CONFIG));
    files.login("docker.io", "hub", "pw").unwrap();
    // Written under docker's own Hub key so the docker CLI finds it too.
    assert_eq!(
        fx.read_json(DOCKER_CONFIG)["auths"]["https://index.docker.io/v1/"]["auth"],
        json!(encode("hub:pw"))
    );
    assert_eq!(
        files.lookup("registry-1.docker.io").unwrap(),
        basic("hub", "pw")
    );

    let with_docker_config = AuthFiles::from_vars(EnvVars {
        xdg_runtime_dir: None,
        docker_config: Some(fx.path("dc")),
        ..fx.vars()
    });
    assert_eq!(
        with_docker_config.write_target().unwrap(),
        fx.path("dc/config.json")
    );
}

#[test]
fn login_keeps_unrelated_keys_and_restricts_permissions() {
    let fx = Fixture::new();
    let original = json!({
        "auths": { "ghcr.io": { "auth": encode("keep:me"), "email": "x@example" } },
        "proxies": { "default": { "httpProxy": "http://proxy:3128" } },
        "psFormat": "table {{.ID}}",
        "credHelpers": { "gcr.io": "gcloud" },
    });
    let path = fx.write_json(RUN_AUTH, original.clone());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    fx.files().login("quay.io", "u", "p").unwrap();

    let mut expected = original;
    expected["auths"]["quay.io"] = json!({ "auth": encode("u:p") });
    assert_eq!(fx.read_json(RUN_AUTH), expected);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No temp files left beside it.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("auth.json")]);
}

#[test]
fn login_creates_private_parent_dirs() {
    let fx = Fixture::new();
    let authfile = fx.path("deep/er/auth.json");
    fx.files()
        .only_authfile(authfile.clone())
        .login("quay.io", "u", "p")
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&authfile), 0o600);
    assert_eq!(mode(&fx.path("deep/er")), 0o700 & !current_umask());
}

/// The process umask, read without changing it (from /proc).
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[test]
fn login_and_logout_through_helpers() {
    let fx = Fixture::new();
    fx.install_helper();
    // The runtime dir is absent, so the Docker config is the target.
    let files = AuthFiles::from_vars(EnvVars {
        xdg_runtime_dir: None,
        ..fx.vars()
    });
    fx.write_json(
        DOCKER_CONFIG,
        json!({ "credHelpers": { "quay.io": "cairntest" }, "credsStore": "cairntest" }),
    );
    assert_eq!(
        files.login("quay.io", "u1", "p1").unwrap(),
        "docker-credential-cairntest"
    );
    assert_eq!(
        files.login("docker.io", "u2", "p2").unwrap(),
        "docker-credential-cairntest"
    );
    assert_eq!(files.lookup("quay.io").unwrap(), basic("u1", "p1"));
    assert_eq!(files.lookup("docker.io").unwrap(), basic("u2", "p2"));
    // The file itself holds no secrets.
    assert_eq!(fx.read_json(DOCKER_CONFIG).get("auths"), None);

    assert!(files.logout("quay.io").unwrap());
    assert_eq!(files.lookup("quay.io").unwrap(), Credential::Anonymous);
    assert!(!files.logout("quay.io").unwrap());
    assert!(files.logout("index.docker.io").unwrap());
    assert_eq!(files.lookup("docker.io").unwrap(), Credential::Anonymous);
    assert!(fx
        .helper_calls()
        .contains(&"store https://index.docker.io/v1/".to_string()));
}

#[test]
fn logout_removes_every_spelling_from_every_file() {
    let fx = Fixture::new();
    fx.write_json(RUN_AUTH, auths("quay.io", "run:1"));
    fx.write_json(
        DOCKER_CONFIG,
        json!({
            "auths": {
                "https://quay.io": { "auth": encode("docker:2") },
                "ghcr.io": { "auth": encode("keep:3") },
            },
            "currentContext": "default",
        }),
    );
    let files = fx.files();
    assert!(files.logout("https://quay.io/").unwrap());
    assert_eq!(files.lookup("quay.io").unwrap(), Credential::Anonymous);
    assert_eq!(fx.read_json(RUN_AUTH), json!({ "auths": {} }));
    assert_eq!(
        fx.read_json(DOCKER_CONFIG),
        json!({ "auths": { "ghcr.io": { "auth": encode("keep:3") } }, "currentContext": "default" })
    );
    assert!(!files.logout("quay.io").unwrap());
    assert_eq!(files.lookup("ghcr.io").unwrap(), basic("keep", "3"));
}

#[test]
fn credential_debug_hides_secrets() {
    let shown = format!(
        "{:?} {:?}",
        basic("me", "hunter2"),
        Credential::IdentityToken("tok123".into())
    );
    assert!(shown.contains("me"), "{shown}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("tok123"),
        "{shown}"
    );
}
