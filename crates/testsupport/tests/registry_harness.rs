//! The registry harness against real peers: skopeo pushes into and inspects a
//! `RegistryServer`, and curl shows each fault of a `FaultProxy` in front of
//! it behaving as documented.

use cairn_testsupport::busybox_layout;
use cairn_testsupport::fault_proxy::{Fault, FaultProxy, RequestLog, Rule};
use cairn_testsupport::registry_server::RegistryServer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const REPO: &str = "test/busybox";

/// The busybox fixture as an OCI layout, built once per test binary.
fn fixture_layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-harness-busybox");
        // A layout left by an earlier run may be from an older fixture script.
        let _ = std::fs::remove_dir_all(&dir);
        busybox_layout(&dir)
    })
}

fn skopeo(args: &[&str]) -> Output {
    // The machine's policy may demand signatures: these tests check transport.
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("running skopeo (apt-get install skopeo)")
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `skopeo copy` of the fixture to `host`, with `user:password` if given.
fn push_fixture(host: &str, creds: Option<&str>) -> Output {
    let source = format!("oci:{}:fixture", fixture_layout().display());
    let dest = format!("docker://{host}/{REPO}:1");
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--dest-creds", creds]);
    }
    args.extend([source.as_str(), dest.as_str()]);
    skopeo(&args)
}

/// A registry holding the fixture as `test/busybox:1`, and the digest of its
/// layer (the largest blob).
fn registry_with_fixture() -> (RegistryServer, String) {
    let registry = RegistryServer::start();
    let pushed = push_fixture(&registry.host(), None);
    assert!(pushed.status.success(), "push: {}", describe(&pushed));
    let layer = registry
        .blob_digests()
        .into_iter()
        .max_by_key(|digest| blob_bytes(&registry, digest).len())
        .expect("the registry holds blobs after a push");
    (registry, layer)
}

fn blob_bytes(registry: &RegistryServer, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let path = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// What curl got for one request.
struct CurlResult {
    exit_code: Option<i32>,
    status: Option<u16>,
    /// The response head as text (the final one).
    head: String,
    body: Vec<u8>,
    elapsed: Duration,
}

impl CurlResult {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// `curl -i` with `args`; never follows redirects, so what the registry or
/// proxy answered is what we see.
fn curl(args: &[&str]) -> CurlResult {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-i"])
        .args(args)
        .output()
        .expect("running curl");
    let elapsed = started.elapsed();
    let raw = out.stdout;
    // Skip interim heads (`100 Continue` for an upload with `Expect:`).
    let mut rest = &raw[..];
    let (head, body) = loop {
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            break (String::from_utf8_lossy(rest).into_owned(), Vec::new());
        };
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end + 4..];
        if !head.starts_with("HTTP/1.1 1") {
            break (head, rest.to_vec());
        }
    };
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok());
    CurlResult {
        exit_code: out.status.code(),
        status,
        head,
        body,
        elapsed,
    }
}

fn blob_url(host: &str, digest: &str) -> String {
    format!("http://{host}/v2/{REPO}/blobs/{digest}")
}

fn statuses(log: &[RequestLog]) -> Vec<Option<u16>> {
    log.iter().map(|r| r.status).collect()
}

#[test]
fn registry_accepts_a_push_and_serves_it_back() {
    let (registry, _layer) = registry_with_fixture();
    // Every blob of the fixture layout (manifest, config, layer) is now in
    // the registry's storage: distribution keeps manifests as blobs too.
    let held = registry.blob_digests();
    for blob in std::fs::read_dir(fixture_layout().join("blobs/sha256")).expect("fixture blobs") {
        let name = blob.expect("fixture blob").file_name();
        let digest = format!("sha256:{}", name.to_string_lossy());
        assert!(held.contains(&digest), "{digest} missing from {held:?}");
    }
    let inspected = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/{REPO}:1", registry.host()),
    ]);
    assert!(
        inspected.status.success(),
        "inspect: {}",
        describe(&inspected)
    );
    let json = String::from_utf8_lossy(&inspected.stdout);
    assert!(json.contains("\"Layers\""), "inspect output: {json}");
}

#[test]
fn registry_with_auth_rejects_wrong_credentials_and_accepts_right_ones() {
    let registry = RegistryServer::start_with_auth("cairn", "s3cret");
    let anonymous = curl(&[&format!("http://{}/v2/", registry.host())]);
    assert_eq!(anonymous.status, Some(401), "{}", anonymous.head);
    assert_eq!(
        anonymous.header("WWW-Authenticate").as_deref(),
        Some("Basic realm=\"cairn-test\"")
    );

    let wrong = push_fixture(&registry.host(), Some("cairn:wrong"));
    assert!(
        !wrong.status.success(),
        "push with a wrong password: {}",
        describe(&wrong)
    );
    assert!(registry.blob_digests().is_empty());

    let right = push_fixture(&registry.host(), Some("cairn:s3cret"));
    assert!(
        right.status.success(),
        "push: {}\nregistry log:\n{}",
        describe(&right),
        registry.log()
    );
    assert!(!registry.blob_digests().is_empty());
}

#[test]
fn proxy_forwards_a_push_and_upload_locations_lead_back_to_it() {
    let registry = RegistryServer::start();
    let proxy = FaultProxy::start(registry.addr());

    // The registry builds upload URLs from the Host header, which the proxy
    // passes on: the client keeps talking to the proxy.
    let started = curl(&[
        "-X",
        "POST",
        &format!("http://{}/v2/{REPO}/blobs/uploads/", proxy.host()),
    ]);
    assert_eq!(started.status, Some(202), "{}", started.head);
    let location = started.header("Location").expect("an upload Location");
    assert!(
        location.starts_with(&format!("http://{}/", proxy.host())),
        "Location {location} should point at the proxy {}",
        proxy.host()
    );
    assert_eq!(started.header("Connection").as_deref(), Some("close"));

    let pushed = push_fixture(&proxy.host(), None);
    assert!(
        pushed.status.success(),
        "push through the proxy: {}",
        describe(&pushed)
    );
    assert!(!registry.blob_digests().is_empty());
    let log = proxy.requests();
    assert!(
        log.iter().any(|r| r.method == "PUT"
            && r.path.contains("/blobs/uploads/")
            && r.status == Some(201)),
        "the blob upload's closing PUT went through the proxy: {log:#?}"
    );
    assert!(log.iter().all(|r| r.fault.is_none() && r.status.is_some()));
    assert_eq!(proxy.injected(), 0);
}

#[test]
fn proxy_injects_statuses_into_the_requests_its_rules_pick() {
    let (registry, layer) = registry_with_fixture();
    let proxy = FaultProxy::start(registry.addr());
    let url = blob_url(&proxy.host(), &layer);
    // Let the first blob GET through, fail the next two, then heal.
    proxy.add_rule(
        Rule::new(Fault::Status(503))
            .method("GET")
            .path_contains("/blobs/")
            .skip(1)
            .times(2),
    );
    // Requests no rule matches are not counted against it.
    let version_check = curl(&[&format!("http://{}/v2/", proxy.host())]);
    assert_eq!(version_check.status, Some(200));

    let expected = blob_bytes(&registry, &layer);
    let first = curl(&[&url]);
    assert_eq!(first.status, Some(200));
    assert_eq!(first.body, expected);
    for _ in 0..2 {
        let failed = curl(&[&url]);
        assert_eq!(failed.status, Some(503), "{}", failed.head);
        let body = String::from_utf8_lossy(&failed.body);
        assert!(
            body.contains("\"errors\""),
            "a registry-style error body: {body}"
        );
    }
    let healed = curl(&[&url]);
    assert_eq!(healed.status, Some(200));
    assert_eq!(healed.body, expected);

    let log = proxy.requests();
    assert_eq!(
        statuses(&log),
        [Some(200), Some(200), Some(503), Some(503), Some(200)]
    );
    assert_eq!(log[2].fault, Some(Fault::Status(503)));
    assert_eq!(log[2].path, format!("/v2/{REPO}/blobs/{layer}"));
    assert_eq!(proxy.injected(), 2);
}

#[test]
fn proxy_reset_fails_the_request_without_an_answer() {
    let (registry, layer) = registry_with_fixture();
    let proxy = FaultProxy::start(registry.addr());
    proxy.add_rule(Rule::new(Fault::Reset));
    let reset = curl(&[&blob_url(&proxy.host(), &layer)]);
    // 56: "Recv failure: Connection reset by peer" (52, an empty reply, if
    // the reset raced the request).
    assert!(
        matches!(reset.exit_code, Some(56) | Some(52)),
        "curl exit {:?}, head {:?}",
        reset.exit_code,
        reset.head
    );
    assert_eq!(reset.status, None);
    let after = curl(&[&blob_url(&proxy.host(), &layer)]);
    assert_eq!(after.status, Some(200));
    assert_eq!(statuses(&proxy.requests()), [None, Some(200)]);
    assert_eq!(proxy.requests()[0].fault, Some(Fault::Reset));
}

#[test]
fn proxy_rate_limit_answers_429_and_holds_the_window_for_every_path() {
    let (registry, layer) = registry_with_fixture();
    let proxy = FaultProxy::start(registry.addr());
    proxy.add_rule(
        Rule::new(Fault::RateLimit {
            retry_after_secs: 2,
        })
        .path_contains("/blobs/"),
    );

    let limited = curl(&[&blob_url(&proxy.host(), &layer)]);
    assert_eq!(limited.status, Some(429), "{}", limited.head);
    assert_eq!(limited.header("Retry-After").as_deref(), Some("2"));

    // Another path, which no rule names, is limited too while the window lasts.
    let during = curl(&[&format!("http://{}/v2/", proxy.host())]);
    assert_eq!(during.status, Some(429), "{}", during.head);
    let retry_after: u64 = during
        .header("Retry-After")
        .expect("Retry-After in the window")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");

    std::thread::sleep(Duration::from_millis(2100));
    let after = curl(&[&format!("http://{}/v2/", proxy.host())]);
    assert_eq!(after.status, Some(200), "{}", after.head);
    assert_eq!(proxy.injected(), 2);
    assert_eq!(
        statuses(&proxy.requests()),
        [Some(429), Some(429), Some(200)]
    );
}

#[test]
fn proxy_stall_outlasts_a_client_timeout() {
    let (registry, layer) = registry_with_fixture();
    let proxy = FaultProxy::start(registry.addr());
    proxy.add_rule(Rule::new(Fault::Stall(Duration::from_secs(5))));
    let stalled = curl(&["-m", "1", &blob_url(&proxy.host(), &layer)]);
    assert_eq!(
        stalled.exit_code,
        Some(28),
        "curl should time out: {}",
        stalled.head
    );
    assert!(
        stalled.elapsed < Duration::from_secs(4),
        "took {:?}",
        stalled.elapsed
    );
    let after = curl(&["-m", "5", &blob_url(&proxy.host(), &layer)]);
    assert_eq!(after.status, Some(200));
    assert_eq!(proxy.requests()[0].status, None);
}

#[test]
fn proxy_cut_response_delivers_a_short_body_then_resets() {
    let (registry, layer) = registry_with_fixture();
    let expected = blob_bytes(&registry, &layer);
    assert!(expected.len() > 100_000, "the layer is big enough to cut");
    let proxy = FaultProxy::start(registry.addr());
    proxy.add_rule(
        Rule::new(Fault::CutResponse {
            after_bytes: 70_000,
        })
        .method("GET"),
    );

    let cut = curl(&[&blob_url(&proxy.host(), &layer)]);
    // 18: "transfer closed with N bytes remaining"; 56: the reset itself.
    assert!(
        matches!(cut.exit_code, Some(18) | Some(56)),
        "curl exit {:?}",
        cut.exit_code
    );
    assert_eq!(cut.status, Some(200), "the head got through: {}", cut.head);
    assert_eq!(cut.body.len(), 70_000);
    assert_eq!(cut.body[..], expected[..70_000]);

    let whole = curl(&[&blob_url(&proxy.host(), &layer)]);
    assert_eq!(whole.body, expected);
    let log = proxy.requests();
    assert_eq!(statuses(&log), [None, Some(200)]);
    assert_eq!(
        log[0].fault,
        Some(Fault::CutResponse {
            after_bytes: 70_000
        })
    );
}

/// The sha256 digest of a file, by coreutils.
fn sha256_digest(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("running sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().expect("sha256sum output");
    format!("sha256:{hex}")
}

#[test]
fn proxy_streams_large_chunked_uploads_and_downloads() {
    const SIZE: usize = 64 << 20;
    let registry = RegistryServer::start();
    let proxy = FaultProxy::start(registry.addr());
    let dir = tempfile::tempdir().expect("temp dir");
    let blob = dir.path().join("blob");
    // Varied bytes, so a misplaced chunk would change the digest.
    let content: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 4093) as u8).collect();
    std::fs::write(&blob, &content).expect("writing the blob");
    let digest = sha256_digest(&blob);

    let started = curl(&[
        "-X",
        "POST",
        &format!("http://{}/v2/{REPO}/blobs/uploads/", proxy.host()),
    ]);
    let location = started.header("Location").expect("an upload Location");
    // A chunked request body (curl also sends `Expect: 100-continue`): the
    // proxy pipes it raw without knowing its length.
    let blob_arg = blob.to_str().expect("a UTF-8 temp path");
    let patched = curl(&[
        "-X",
        "PATCH",
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type: application/octet-stream",
        "-T",
        blob_arg,
        &location,
    ]);
    assert_eq!(patched.status, Some(202), "{}", patched.head);
    assert_eq!(patched.header("Range"), Some(format!("0-{}", SIZE - 1)));
    let location = patched
        .header("Location")
        .expect("the next upload Location");
    let committed = curl(&["-X", "PUT", &format!("{location}&digest={digest}")]);
    assert_eq!(committed.status, Some(201), "{}", committed.head);

    let fetched = curl(&[&blob_url(&proxy.host(), &digest)]);
    assert_eq!(fetched.status, Some(200));
    assert!(fetched.body == content, "the blob came back intact");
    assert!(registry.blob_digests().contains(&digest));
}
