//! The example HTTP service (`examples/snapshot_service.rs`), started and
//! used over HTTP: two clients at once building snapshots, starting
//! sandboxes and exec'ing with captured output; a build and an exec whose
//! clients hang up leave nothing running and nothing tagged; GC while a
//! sandbox runs deletes nothing it uses. Runs as root and again as the
//! unprivileged test user (harness = false: `main` calls `cairn::init`).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example server, killed when dropped.
struct Service {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
    store: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example_binary() -> PathBuf {
    // target/release/deps/<this test> -> target/release/examples/snapshot_service
    let exe = std::env::current_exe().expect("test binary path");
    let release = exe.parent().and_then(Path::parent).expect("target dir");
    let example = release.join("examples/snapshot_service");
    if !example.exists() {
        // `cargo test --test snapshot_service` alone does not build examples.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "--release", "--example", "snapshot_service"])
            .status();
        assert!(built.is_ok_and(|s| s.success()), "building the example");
    }
    example
}

impl Service {
    fn start() -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(cairn_testsupport::store_with_busybox(dir.path()));
        let store = dir.path().join("store");
        let mut child = Command::new(example_binary())
            .args([
                "--store",
                &store.to_string_lossy(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the example (cargo test builds it)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("address line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Service {
            child,
            addr,
            _dir: dir,
            store,
        }
    }

    /// Send a request; the stream is returned unread (to hang up early).
    fn send(&self, method: &str, path: &str, body: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        s.write_all(head.as_bytes()).expect("send head");
        s.write_all(body).expect("send body");
        s
    }

    /// (status, body) of a request.
    fn call_raw(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = self.send(method, path, body);
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("response");
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        let mut body = raw[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (status, body)
    }

    fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let bytes = match body {
            Value::Null => Vec::new(),
            b => serde_json::to_vec(&b).expect("json"),
        };
        let (status, body) = self.call_raw(method, path, &bytes);
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, value)
    }

    fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {value}");
        value
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[eol + 2 + size + 2..];
    }
    out
}

/// Pids of processes whose argv is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline")).ok() == Some(want.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Wait (bounded) until `cond` holds; the bound only keeps a broken run from hanging.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One client's round: snapshot, sandbox, exec (small and past a pipe's
/// 64 KiB), file round trip, cleanup.
fn client_round(svc: &Service, org: &str) {
    let dockerfile = format!("FROM busybox:fixture\nRUN echo {org} > /who\n");
    let snap = svc.ok(
        "POST",
        "/snapshots",
        json!({"org": org, "name": "app:1", "dockerfile": dockerfile}),
    );
    assert_eq!(snap["state"], "active", "{snap}");
    let got = svc.ok("GET", &format!("/snapshots/{org}/app:1"), Value::Null);
    assert_eq!(got["id"], snap["id"]);
    let sandbox = svc.ok(
        "POST",
        &format!("/snapshots/{org}/app:1/sandboxes"),
        Value::Null,
    );
    let id = sandbox["id"].as_str().expect("sandbox id").to_string();
    let out = svc.ok(
        "POST",
        &format!("/sandboxes/{id}/exec"),
        json!({"argv": ["sh", "-c", "cat /who; echo oops >&2; exit 4"]}),
    );
    assert_eq!(out["stdout"], format!("{org}\n"));
    assert_eq!(out["stderr"], "oops\n");
    assert_eq!(out["exit_code"], 4);
    let big = svc.ok(
        "POST",
        &format!("/sandboxes/{id}/exec"),
        json!({"argv": ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; head -c 200000 /dev/zero | tr '\\0' y >&2"]}),
    );
    assert_eq!(big["stdout"].as_str().map(str::len), Some(300_000));
    assert_eq!(big["stderr"].as_str().map(str::len), Some(200_000));
    let (status, _) = svc.call_raw(
        "PUT",
        &format!("/sandboxes/{id}/files?path=/tmp/note"),
        org.as_bytes(),
    );
    assert_eq!(status, 200);
    let (status, body) = svc.call_raw("GET", &format!("/sandboxes/{id}/files?path=/tmp/note"), b"");
    assert_eq!((status, body.as_slice()), (200, org.as_bytes()));
    svc.ok("DELETE", &format!("/sandboxes/{id}"), Value::Null);
}

fn two_clients_at_once(_: &()) {
    let svc = Service::start();
    std::thread::scope(|s| {
        let a = s.spawn(|| client_round(&svc, "acme"));
        let b = s.spawn(|| client_round(&svc, "beta"));
        a.join().expect("client acme");
        b.join().expect("client beta");
    });
    let listed = svc.ok("GET", "/snapshots?org=acme", Value::Null);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    // Errors keep their kind over HTTP.
    let (status, _) = svc.call("GET", "/snapshots/acme/nope:1", Value::Null);
    assert_eq!(status, 404);
    let (status, body) = svc.call(
        "POST",
        "/builds",
        json!({"dockerfile": "FROM busybox:fixture\nBOGUS\n", "tag": "localhost/x:1"}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["position"]["line"], 2, "{body}");
    svc.ok("DELETE", "/snapshots/acme/app:1", Value::Null);
    assert_eq!(svc.call("GET", "/snapshots/acme/app:1", Value::Null).0, 404);
}

/// A client that hangs up on a build or an exec: the RUN / the command is
/// killed, nothing is tagged, the sandbox still works.
fn hung_up_build_and_exec_leave_nothing(_: &()) {
    let svc = Service::start();
    let build = json!({"dockerfile": "FROM busybox:fixture\nRUN sleep 3517\n", "tag": "localhost/cancelled:1"});
    let conn = svc.send(
        "POST",
        "/builds",
        &serde_json::to_vec(&build).expect("json"),
    );
    wait_for("the RUN to start", || {
        !processes(&["sleep", "3517"]).is_empty()
    });
    drop(conn);
    wait_for("the RUN to be killed", || {
        processes(&["sleep", "3517"]).is_empty()
    });
    let images = svc.ok("GET", "/images", Value::Null);
    assert!(
        !images.to_string().contains("cancelled"),
        "a cancelled build was tagged: {images}"
    );

    let snap = json!({"org": "acme", "name": "base:1", "dockerfile": "FROM busybox:fixture\n"});
    svc.ok("POST", "/snapshots", snap);
    let sandbox = svc.ok("POST", "/snapshots/acme/base:1/sandboxes", Value::Null);
    let id = sandbox["id"].as_str().expect("id").to_string();
    let exec = json!({"argv": ["sleep", "3518"]});
    let conn = svc.send(
        "POST",
        &format!("/sandboxes/{id}/exec"),
        &serde_json::to_vec(&exec).expect("json"),
    );
    wait_for("the exec to start", || {
        !processes(&["sleep", "3518"]).is_empty()
    });
    drop(conn);
    wait_for("the exec to be killed", || {
        processes(&["sleep", "3518"]).is_empty()
    });
    let out = svc.ok(
        "POST",
        &format!("/sandboxes/{id}/exec"),
        json!({"argv": ["echo", "alive"]}),
    );
    assert_eq!(out["stdout"], "alive\n");
    svc.ok("DELETE", &format!("/sandboxes/{id}"), Value::Null);
}

/// GC while a sandbox's command runs, its snapshot deleted: the sandbox's
/// layers stay (it is a GC root) and it goes on working; once it is
/// removed, GC takes them.
fn gc_during_a_running_sandbox_keeps_its_layers(_: &()) {
    let svc = Service::start();
    let dockerfile = "FROM busybox:fixture\nRUN echo kept > /kept\n";
    svc.ok(
        "POST",
        "/snapshots",
        json!({"org": "acme", "name": "gc:1", "dockerfile": dockerfile}),
    );
    let sandbox = svc.ok("POST", "/snapshots/acme/gc:1/sandboxes", Value::Null);
    let id = sandbox["id"].as_str().expect("id").to_string();
    let layer_dirs: Vec<PathBuf> = sandbox["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|d| {
            let hex = d
                .as_str()
                .and_then(|d| d.strip_prefix("sha256:"))
                .expect("digest");
            svc.store.join("layers").join(hex)
        })
        .collect();
    svc.ok("DELETE", "/snapshots/acme/gc:1", Value::Null);

    let exec = json!({"argv": ["sleep", "3519"]});
    let running = svc.send(
        "POST",
        &format!("/sandboxes/{id}/exec"),
        &serde_json::to_vec(&exec).expect("json"),
    );
    wait_for("the command to start", || {
        !processes(&["sleep", "3519"]).is_empty()
    });
    // Budget 0: the build cache keeps nothing; only the sandbox holds its layers.
    let report = svc.ok("POST", "/gc", json!({"cache_budget": 0}));
    for dir in &layer_dirs {
        assert!(
            dir.is_dir(),
            "GC removed {} under a running sandbox ({report})",
            dir.display()
        );
    }
    for pid in processes(&["sleep", "3519"]) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    drop(running);
    let out = svc.ok(
        "POST",
        &format!("/sandboxes/{id}/exec"),
        json!({"argv": ["cat", "/kept"]}),
    );
    assert_eq!(out["stdout"], "kept\n");

    svc.ok("DELETE", &format!("/sandboxes/{id}"), Value::Null);
    let report = svc.ok("POST", "/gc", json!({"cache_budget": 0}));
    assert!(report["layer_dirs_removed"].as_u64() >= Some(1), "{report}");
    assert!(!layer_dirs.last().expect("a layer").exists());
}

fn main() {
    cairn::init();
    cairn_testsupport::run_suite(
        (),
        cairn_testsupport::test_cases![();
            two_clients_at_once,
            hung_up_build_and_exec_leave_nothing,
            gc_during_a_running_sandbox_keeps_its_layers,
        ],
    )
}
