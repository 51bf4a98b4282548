//! One registry host as this process talks to it: scheme, TLS roots,
//! credentials, the `oci-client` clients and the retrier.

use crate::auth::{AuthFiles, Credential};
use crate::error::{RegistryError, Result, Target};
use crate::retry::{Retrier, RetryPolicy};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The platform an index is resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    /// This machine's platform ([`Platform::host`]), as `docker pull` picks.
    fn default() -> Self {
        Platform::host()
    }
}

impl Platform {
    /// The platform this process runs on, in OCI names: Rust's
    /// `std::env::consts::ARCH` mapped as Go's GOARCH names it
    /// (BuildKit normalises arm64 without a variant, 32-bit arm as v7).
    pub fn host() -> Self {
        let (architecture, variant) = oci_arch(std::env::consts::ARCH);
        Platform {
            os: std::env::consts::OS.into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }

    /// `linux/amd64`: what snapshots must be (the seed's platform).
    pub fn linux_amd64() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

/// Rust's architecture name to the OCI (GOARCH) one, with its variant.
fn oci_arch(rust: &str) -> (&str, Option<&str>) {
    match rust {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
        "mips" if cfg!(target_endian = "little") => ("mipsle", None),
        "loongarch64" => ("loong64", None),
        other => (other, None),
    }
}

impl std::str::FromStr for Platform {
    type Err = RegistryError;
    /// `os/arch[/variant]`, as `--platform` takes it.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || RegistryError::BadReference {
            input: s.to_string(),
            reason: "a platform is os/architecture[/variant], e.g. linux/amd64".into(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Blobs up to this size go up in one streamed PUT. Chunked uploads through
/// oci-client use fixed 4 MiB PATCHes, and docker-registry persists its hash
/// state after every one: a 256 MiB layer took 2.5 s chunked against 1.3 s in
/// one PUT here. Chunks stay for the very large blobs, where one request of
/// many GiB is more likely to hit a proxy's body limit or a timeout.
pub const DEFAULT_MONOLITHIC_MAX: u64 = 512 << 20;

/// Everything that decides how Cairn talks to registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// `Some(false)`: plain HTTP, or HTTPS without certificate checks, for
    /// every registry (`--tls-verify=false`). `Some(true)`: HTTPS with checks
    /// even on loopback. `None`: loopback and `insecure_registries` speak
    /// plain HTTP, everything else verified HTTPS.
    pub tls_verify: Option<bool>,
    /// Hosts (`host` or `host:port`) treated as insecure; from
    /// `CAIRN_INSECURE_REGISTRIES` (comma or space separated).
    pub insecure_registries: Vec<String>,
    pub auth: AuthFiles,
    /// `--creds user:pass`: used instead of the auth files.
    pub credentials: Option<(String, String)>,
    /// What an index resolves to on pull.
    pub platform: Platform,
    /// Blob transfers in flight at once, per image.
    pub max_parallel: usize,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// How long a request may go without receiving a byte.
    pub read_timeout: Duration,
    /// Blobs up to this size are uploaded in one PUT, larger ones in chunks
    /// (`CAIRN_MONOLITHIC_MAX` bytes; default [`DEFAULT_MONOLITHIC_MAX`]).
    pub monolithic_max: u64,
    /// Roots of per-registry CA dirs (`<root>/<host[:port]>/*.crt`).
    pub cert_dirs: Vec<PathBuf>,
}

impl RegistryOptions {
    /// Defaults plus what the environment says.
    pub fn from_env() -> Self {
        let insecure_registries = std::env::var("CAIRN_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mut cert_dirs = Vec::new();
        if let Some(home) = std::env::var_os("HOME") {
            cert_dirs.push(PathBuf::from(home).join(".config/containers/certs.d"));
        }
        cert_dirs.push("/etc/containers/certs.d".into());
        cert_dirs.push("/etc/docker/certs.d".into());
        RegistryOptions {
            tls_verify: None,
            insecure_registries,
            auth: AuthFiles::from_env(),
            credentials: None,
            platform: Platform::default(),
            max_parallel: 4,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            monolithic_max: std::env::var("CAIRN_MONOLITHIC_MAX")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_MONOLITHIC_MAX),
            cert_dirs,
        }
    }

    /// Does this registry get plain HTTP (or unchecked TLS)?
    pub fn is_insecure(&self, registry: &str) -> bool {
        match self.tls_verify {
            Some(v) => !v,
            None => {
                is_loopback(registry)
                    || self
                        .insecure_registries
                        .iter()
                        .any(|r| r == registry || r == host_only(registry))
            }
        }
    }
}

fn host_only(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_only(registry);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A registry host ready to talk to.
pub(crate) struct Session {
    /// As in the reference: `127.0.0.1:5000`, `docker.io`.
    pub registry: String,
    /// Chunked uploads, downloads, HEADs, manifests.
    pub client: oci_client::Client,
    /// Where the monolithic-upload client is built, on first use.
    clients: Arc<Clients>,
    pub auth: RegistryAuth,
    /// Requests oci-client cannot bound (manifests): same TLS and timeouts.
    pub http: reqwest::Client,
    /// Says which credentials were used, for 401/403 messages.
    pub auth_hint: String,
    pub retrier: Retrier,
}

impl Session {
    /// A session with `registry`, its clients taken from `cache` (built
    /// there the first time this registry and these credentials are used).
    pub async fn open(
        opts: &RegistryOptions,
        cache: &ClientCache,
        registry: &str,
    ) -> Result<Session> {
        let (auth, auth_hint) = credentials(opts, registry, true)?;
        let clients = cache.get(opts, registry, &auth).await?;
        let scheme = if clients.plain_http { "http" } else { "https" };
        Ok(Session {
            registry: registry.to_string(),
            client: clients.client.clone(),
            http: clients.http.clone(),
            auth,
            auth_hint,
            retrier: Retrier {
                policy: opts.retry.clone(),
                base_url: format!("{scheme}://{}", clients.key),
                probe: clients.probe.clone(),
                retries: AtomicU32::new(0),
            },
            clients,
        })
    }

    /// The client for monolithic uploads, built by the first push that
    /// needs it: oci-client reads the system's CA roots for each client it
    /// builds (even one that never verifies), and a pull never uploads.
    pub async fn mono(&self) -> Result<&oci_client::Client> {
        let c = &self.clients;
        c.mono
            .get_or_try_init(|| async {
                let mono = oci_client::Client::try_from(c.setup.config(true)).map_err(|e| {
                    RegistryError::Other(format!(
                        "cannot set up a client for {}: {e}",
                        self.registry
                    ))
                })?;
                mono.store_auth_if_needed(&c.key, &self.auth).await;
                Ok(mono)
            })
            .await
    }

    /// Build `registry`'s clients into `cache` ahead of a session (see
    /// [`crate::Registry::prepare`]); silent: errors and warnings are the
    /// session's to report.
    pub async fn prepare(opts: &RegistryOptions, cache: &ClientCache, registry: &str) {
        if let Ok((auth, _)) = credentials(opts, registry, false) {
            let _ = cache.get(opts, registry, &auth).await;
        }
    }

    pub fn target(&self, repository: &str, what: impl Into<String>) -> Target {
        Target {
            registry: self.registry.clone(),
            repository: repository.to_string(),
            what: what.into(),
        }
    }

    pub fn retries(&self) -> u32 {
        self.retrier
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The HTTP clients of one registry host, built once per [`ClientCache`]:
/// each sets up TLS, and each oci-client client reads the system's CA
/// files (the default reqwest client it builds first verifies, whatever
/// its config says: ~5 ms, more under load), so the monolithic-upload one
/// is built only when a push needs it. oci-client keeps its bearer tokens
/// in its client.
pub(crate) struct Clients {
    /// The registry name as oci-client resolves it (`docker.io` ->
    /// `index.docker.io`): the key of its credentials and the base URL.
    key: String,
    plain_http: bool,
    client: oci_client::Client,
    /// Monolithic uploads: built on first use ([`Session::mono`]).
    mono: OnceCell<oci_client::Client>,
    setup: ClientSetup,
    http: reqwest::Client,
    probe: reqwest::Client,
}

/// What an oci-client client of one host is built from.
struct ClientSetup {
    plain_http: bool,
    insecure: bool,
    extra_roots: Vec<Certificate>,
    max_parallel: usize,
    read_timeout: Duration,
    connect_timeout: Duration,
}

impl ClientSetup {
    fn config(&self, monolithic: bool) -> ClientConfig {
        ClientConfig {
            protocol: if self.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: self.insecure,
            use_monolithic_push: monolithic,
            extra_root_certificates: self.extra_roots.clone(),
            max_concurrent_upload: self.max_parallel,
            max_concurrent_download: self.max_parallel,
            read_timeout: Some(self.read_timeout),
            connect_timeout: Some(self.connect_timeout),
            user_agent: concat!("cairn/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        }
    }
}

/// [`Clients`] per registry host and credentials, for the life of a
/// [`crate::Registry`]: a process that pulls, pushes or imports a cache
/// several times sets up TLS once per host. Keyed by the credentials too,
/// because oci-client keeps the first ones it is given. Options are fixed
/// per `Registry`; a CA file added to a certs.d dir later is read by the
/// next `Registry`.
#[derive(Default)]
pub(crate) struct ClientCache {
    hosts: std::sync::Mutex<HashMap<(String, AuthKey), HostClients>>,
}

/// One host's clients, built by the first session that needs them.
type HostClients = Arc<OnceCell<Arc<Clients>>>;

/// The credentials a [`Clients`] was given, as a cache key (in memory
/// only, never printed: no `Debug`).
#[derive(PartialEq, Eq, Hash)]
enum AuthKey {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl AuthKey {
    fn of(auth: &RegistryAuth) -> AuthKey {
        match auth {
            RegistryAuth::Anonymous => AuthKey::Anonymous,
            RegistryAuth::Basic(u, p) => AuthKey::Basic(u.clone(), p.clone()),
            RegistryAuth::Bearer(t) => AuthKey::Bearer(t.clone()),
        }
    }
}

impl ClientCache {
    /// The clients for `registry` with `auth`, built on first use. Sessions
    /// opened at once to one host build one set; other hosts (a push to
    /// several regions) do not wait for it. A failed build is tried again
    /// by the next session.
    async fn get(
        &self,
        opts: &RegistryOptions,
        registry: &str,
        auth: &RegistryAuth,
    ) -> Result<Arc<Clients>> {
        let cell = {
            // Poisoned only by a panic while inserting; the map is still whole.
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            let key = (registry.to_string(), AuthKey::of(auth));
            hosts.entry(key).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            let _span = cairn_layer::timing::span("registry.build_clients");
            Clients::build(opts, registry, auth).await.map(Arc::new)
        })
        .await
        .cloned()
    }
}

impl Clients {
    async fn build(opts: &RegistryOptions, registry: &str, auth: &RegistryAuth) -> Result<Clients> {
        let extra_roots = ca_certificates(opts, registry)?;
        let insecure = opts.is_insecure(registry);
        let plain_http = insecure && (is_loopback(registry) || !speaks_tls(registry).await);
        let setup = ClientSetup {
            plain_http,
            insecure,
            extra_roots: extra_roots.clone(),
            max_parallel: opts.max_parallel,
            read_timeout: opts.read_timeout,
            connect_timeout: opts.connect_timeout,
        };
        let failed = |e: &dyn std::fmt::Display| {
            RegistryError::Other(format!("cannot set up a client for {registry}: {e}"))
        };
        let client = oci_client::Client::try_from(setup.config(false)).map_err(|e| failed(&e))?;
        // oci-client keys credentials by the resolved registry name.
        let key = oci_client::Reference::with_tag(registry.into(), "x".into(), "x".into())
            .resolve_registry()
            .to_string();
        client.store_auth_if_needed(&key, auth).await;
        let http = http_client(opts, insecure, &extra_roots).map_err(|e| failed(&e))?;
        let probe = reqwest::Client::builder()
            .danger_accept_invalid_certs(insecure)
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.connect_timeout)
            .build()
            .map_err(|e| failed(&e))?;
        Ok(Clients {
            key,
            plain_http,
            client,
            mono: OnceCell::new(),
            setup,
            http,
            probe,
        })
    }
}

/// A reqwest client set up as oci-client sets up its own.
fn http_client(
    opts: &RegistryOptions,
    insecure: bool,
    extra_roots: &[Certificate],
) -> std::result::Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(insecure)
        .connect_timeout(opts.connect_timeout)
        .read_timeout(opts.read_timeout)
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")));
    for cert in extra_roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&cert.data)?);
    }
    b.build()
}

/// The credentials for `registry` and how to name them in a 401/403
/// message; `warn`: say so when a stored credential cannot be used.
fn credentials(
    opts: &RegistryOptions,
    registry: &str,
    warn: bool,
) -> Result<(RegistryAuth, String)> {
    if let Some((user, pass)) = &opts.credentials {
        return Ok((
            RegistryAuth::Basic(user.clone(), pass.clone()),
            format!("; sent user {user:?} from the given credentials"),
        ));
    }
    Ok(match opts.auth.lookup(registry)? {
        Credential::Anonymous => (
            RegistryAuth::Anonymous,
            format!("; no credentials are stored for {registry} (run `cairn login {registry}`)"),
        ),
        Credential::Basic { username, password } => (
            RegistryAuth::Basic(username.clone(), password),
            format!("; sent user {username:?} from the stored credentials (`cairn login {registry}` to change them)"),
        ),
        Credential::IdentityToken(_) => {
            if warn {
                tracing::warn!(
                "{registry}: the stored credential is an identity token, which Cairn cannot exchange yet; trying anonymously"
            );
            }
            (
                RegistryAuth::Anonymous,
                format!("; the stored credential for {registry} is an identity token, which Cairn does not support: log in with a password"),
            )
        }
    })
}

/// CA certificates for this registry from the certs.d dirs (`*.crt`).
fn ca_certificates(opts: &RegistryOptions, registry: &str) -> Result<Vec<Certificate>> {
    let mut out = Vec::new();
    for root in &opts.cert_dirs {
        let dir = root.join(registry);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "crt") {
                let data = std::fs::read(&path).map_err(RegistryError::io(format!(
                    "read CA certificate {}",
                    path.display()
                )))?;
                out.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                });
            }
        }
    }
    Ok(out)
}

/// For an insecure non-loopback registry: does it answer TLS at all?
/// (Podman's rule: insecure means "try HTTPS without checks, then HTTP".)
async fn speaks_tls(registry: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return false;
    };
    client
        .get(format!("https://{registry}/v2/"))
        .send()
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_built_once_per_host_and_credentials() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = RegistryOptions::from_env();
        let cache = ClientCache::default();
        rt.block_on(async {
            let anon = RegistryAuth::Anonymous;
            let a = cache.get(&opts, "127.0.0.1:5000", &anon).await.unwrap();
            let again = cache.get(&opts, "127.0.0.1:5000", &anon).await.unwrap();
            assert!(
                Arc::ptr_eq(&a, &again),
                "a second session builds no clients"
            );
            let host = cache.get(&opts, "127.0.0.1:5001", &anon).await.unwrap();
            assert!(!Arc::ptr_eq(&a, &host), "another host has its own");
            // oci-client keeps the first credentials it is given, so other
            // credentials need other clients.
            let user = RegistryAuth::Basic("u".into(), "p".into());
            let basic = cache.get(&opts, "127.0.0.1:5000", &user).await.unwrap();
            assert!(!Arc::ptr_eq(&a, &basic));
            let other = RegistryAuth::Basic("u".into(), "q".into());
            let basic2 = cache.get(&opts, "127.0.0.1:5000", &other).await.unwrap();
            assert!(!Arc::ptr_eq(&basic, &basic2));
            // Two sessions opened at once to a new host share one set.
            let (x, y) = tokio::join!(
                cache.get(&opts, "127.0.0.1:5002", &anon),
                cache.get(&opts, "127.0.0.1:5002", &anon)
            );
            assert!(Arc::ptr_eq(&x.unwrap(), &y.unwrap()));
        });
    }

    /// A pull never uploads: the monolithic-upload client (a CA read of
    /// its own) is built by the first push that asks for it, once.
    #[test]
    fn the_upload_client_is_built_on_first_use() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut opts = RegistryOptions::from_env();
        opts.auth = AuthFiles::with_authfile(dir.path().join("auth.json"));
        let cache = ClientCache::default();
        rt.block_on(async {
            let sess = Session::open(&opts, &cache, "127.0.0.1:5000")
                .await
                .unwrap();
            assert!(!sess.clients.mono.initialized(), "built before a push");
            sess.mono().await.unwrap();
            assert!(sess.clients.mono.initialized());
            // Another session of the host shares it.
            let again = Session::open(&opts, &cache, "127.0.0.1:5000")
                .await
                .unwrap();
            assert!(again.clients.mono.initialized());
            assert!(Arc::ptr_eq(&sess.clients, &again.clients));
        });
    }

    #[test]
    fn loopback_names() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["docker.io", "10.0.0.1:5000", "quay.io", "[fe80::1]:5000"] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn host_platform_has_oci_names() {
        assert_eq!(oci_arch("x86_64"), ("amd64", None));
        assert_eq!(oci_arch("aarch64"), ("arm64", None));
        assert_eq!(oci_arch("arm"), ("arm", Some("v7")));
        assert_eq!(oci_arch("x86"), ("386", None));
        assert_eq!(oci_arch("s390x"), ("s390x", None));
        let host = Platform::host();
        assert_eq!(host, Platform::default());
        assert_eq!(host.os, "linux");
        // What `uname -m` says, in Go's names.
        let uname = std::process::Command::new("uname")
            .arg("-m")
            .output()
            .unwrap();
        let machine = String::from_utf8_lossy(&uname.stdout).trim().to_string();
        let want = match machine.as_str() {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "i686" | "i386" => "386",
            other => other,
        };
        assert_eq!(host.architecture, want);
    }

    #[test]
    fn platforms_parse() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//".parse::<Platform>().is_err());
    }
}
