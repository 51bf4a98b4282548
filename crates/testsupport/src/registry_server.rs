//! A real OCI registry per test: Debian's `docker-registry` (distribution
//! 2.8) on a free loopback port, storing into a fresh temporary directory that
//! is removed when the server is dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";
/// The registry's stdout and stderr, in its temp dir.
const LOG_FILE: &str = "registry.log";
/// How long a starting registry gets to answer `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts retried when the port picked turned out to be taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// bcrypt's cheapest cost: the hash only has to be valid, not strong, and a
/// test should not spend a second hashing.
const BCRYPT_COST: u32 = 4;

/// A running `docker-registry serve`, killed on drop.
pub struct RegistryServer {
    child: Child,
    addr: SocketAddr,
    storage: PathBuf,
    // Dropped after the child is killed (fields drop after `Drop::drop`).
    dir: TempDir,
}

/// The htpasswd credentials a registry is started with.
struct BasicAuth<'a> {
    user: &'a str,
    password: &'a str,
}

/// Why one attempt to start the registry did not give a server.
enum StartFailure {
    /// Someone else took the port between picking and binding: try another.
    PortTaken,
    /// Anything else: no point retrying.
    Fatal(String),
}

impl RegistryServer {
    /// Start on a free 127.0.0.1 port with a fresh temp storage dir; wait
    /// until `GET /v2/` answers (200 or 401), up to ~10 s, else panic with the
    /// registry's log.
    pub fn start() -> RegistryServer {
        Self::start_configured(None)
    }

    /// Same as [`RegistryServer::start`], requiring HTTP basic auth (htpasswd)
    /// for `user` with `password`.
    pub fn start_with_auth(user: &str, password: &str) -> RegistryServer {
        Self::start_configured(Some(BasicAuth { user, password }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's filesystem storage root.
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// What the registry has logged (warnings and errors), for the message
    /// of a failing test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// Blob digests (`sha256:<hex>`) the registry holds, read from its
    /// storage (`docker/registry/v2/blobs/sha256/xx/<hex>/data`), sorted.
    pub fn blob_digests(&self) -> Vec<String> {
        let blobs = self.storage.join("docker/registry/v2/blobs/sha256");
        let mut digests = Vec::new();
        // Before the first push the directory does not exist: no blobs.
        let Ok(prefixes) = std::fs::read_dir(&blobs) else {
            return digests;
        };
        for prefix in prefixes {
            let prefix = prefix.expect("reading the registry's blob directory");
            for blob in std::fs::read_dir(prefix.path()).expect("reading a blob prefix directory") {
                let blob = blob.expect("reading a blob prefix directory");
                // A blob whose upload is not committed has no `data` yet.
                if blob.path().join("data").is_file() {
                    digests.push(format!("sha256:{}", blob.file_name().to_string_lossy()));
                }
            }
        }
        digests.sort();
        digests
    }

    fn start_configured(auth: Option<BasicAuth>) -> RegistryServer {
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("cairn-registry-")
                .tempdir()
                .expect("creating the registry's temp dir");
            match try_start(dir, auth.as_ref()) {
                Ok(server) => return server,
                Err(StartFailure::PortTaken) => continue,
                Err(StartFailure::Fatal(log)) => {
                    last_log = log;
                    break;
                }
            }
        }
        panic!("docker-registry did not start:\n{last_log}");
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the registry keeps its data: a subdirectory so config, htpasswd and
/// log do not show up as storage.
fn storage_root(dir: &Path) -> PathBuf {
    dir.join("storage")
}

fn try_start(dir: TempDir, auth: Option<&BasicAuth>) -> Result<RegistryServer, StartFailure> {
    let port = pick_free_port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // A random value every response carries, so the readiness probe knows it
    // reached this registry and not another process that grabbed the port.
    let instance = format!("{:016x}", rand_u64());

    let htpasswd = auth.map(|auth| {
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash(auth.password, BCRYPT_COST).expect("bcrypt-hashing the password");
        std::fs::write(&path, format!("{}:{hash}\n", auth.user)).expect("writing htpasswd");
        path
    });
    let storage = storage_root(dir.path());
    std::fs::create_dir(&storage).expect("creating the registry's storage dir");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        config_yaml(addr, &storage, &instance, htpasswd.as_deref()),
    )
    .expect("writing the registry config");

    let log_path = dir.path().join(LOG_FILE);
    let log = std::fs::File::create(&log_path).expect("creating the registry log");
    let child = Command::new(REGISTRY_BINARY)
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating the log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("spawning {REGISTRY_BINARY} (apt-get install docker-registry): {e}")
        });
    let mut server = RegistryServer {
        child,
        addr,
        storage,
        dir,
    };

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = server.child.try_wait().expect("polling docker-registry") {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(if log.contains("address already in use") {
                StartFailure::PortTaken
            } else {
                StartFailure::Fatal(format!("exited with {status}; its log:\n{log}"))
            });
        }
        if probe_is_ours(addr, &instance) {
            return Ok(server);
        }
        if Instant::now() >= deadline {
            // `server` is dropped here, which kills the child.
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(StartFailure::Fatal(format!(
                "no answer on {addr} within {READY_TIMEOUT:?}; its log:\n{log}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config_yaml(
    addr: SocketAddr,
    storage: &Path,
    instance: &str,
    htpasswd: Option<&Path>,
) -> String {
    // `http.secret` signs upload state; setting it keeps the log free of the
    // "no secret" warning. Access logs are off so the log holds only problems.
    let mut yaml = format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {addr}
  secret: cairn-test-{instance}
  headers:
    X-Cairn-Registry-Instance: [\"{instance}\"]
",
        storage = storage.display(),
    );
    if let Some(path) = htpasswd {
        yaml.push_str(&format!(
            "auth:
  htpasswd:
    realm: cairn-test
    path: {}
",
            path.display()
        ));
    }
    yaml
}

/// A port that was free a moment ago. Another process may take it before the
/// registry binds it, which `try_start` detects and retries.
fn pick_free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

/// Whether `GET /v2/` on `addr` answers 200 or 401 from the registry that
/// carries `instance` in its headers.
fn probe_is_ours(addr: SocketAddr, instance: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let answered = response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.1 401");
    answered && response.contains(instance)
}

/// Enough randomness to tell registry instances apart, without a `rand`
/// dependency: std's hasher is seeded randomly per process, and the clock and
/// a counter make values differ within one.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}
