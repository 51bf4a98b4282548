//! Pull and push against a real registry (Debian's docker-registry on a
//! loopback port), read back by skopeo, with faults injected by a proxy.

use cairn_registry::auth::AuthFiles;
use cairn_registry::{LayerSink, Registry, RegistryError, RegistryOptions, RetryPolicy};
use cairn_store::{Digest, Store};
use cairn_testsupport::fault_proxy::{Fault, FaultProxy, Rule};
use cairn_testsupport::registry_server::RegistryServer;
use cairn_testsupport::{add_random_layer, store_with_busybox};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn options(dir: &Path) -> RegistryOptions {
    let mut o = RegistryOptions::from_env();
    // Never the machine's own credentials.
    o.auth = AuthFiles::with_authfile(dir.join("auth.json"));
    o.retry = RetryPolicy {
        max_attempts: 6,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        max_retry_after: Duration::from_secs(10),
    };
    o.read_timeout = Duration::from_secs(2);
    o
}

fn registry(dir: &Path) -> Registry {
    Registry::new(options(dir)).expect("registry client")
}

fn empty_store(dir: &Path, name: &str) -> Store {
    Store::open(dir.join(name)).expect("open store")
}

/// Every blob (config, layers) and the manifest of a store image.
fn image_blobs(store: &Store, image: &str) -> Vec<String> {
    let d = store.resolve(image).expect("resolve");
    let (_, parsed) = store.manifest(&d).expect("manifest");
    let mut out: Vec<String> = parsed
        .config
        .iter()
        .chain(&parsed.children)
        .map(|b| b.digest.to_string())
        .collect();
    out.push(d.to_string());
    out.sort();
    out
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn push_then_pull_into_an_empty_store_keeps_the_manifest_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_busybox(dir.path());
    let reg = RegistryServer::start();
    let client = registry(dir.path());
    let dest = format!("{}/team/busybox:v1", reg.host());

    let pushed = client.push(&store, "busybox:fixture", &dest).unwrap();
    assert_eq!(pushed.manifest, store.resolve("busybox:fixture").unwrap());
    assert_eq!(pushed.blobs_uploaded, 2, "{pushed:?}");
    let mut in_registry = reg.blob_digests();
    in_registry.sort();
    assert_eq!(in_registry, image_blobs(&store, "busybox:fixture"));

    // skopeo reads what we pushed.
    let inspect = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{dest}")]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], pushed.manifest.to_string());
    let copy = dir.path().join("skopeo-copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("oci:{}:got", copy.display()),
    ]);

    // Pull into an empty store: the same manifest, tagged under its full name.
    let other = empty_store(dir.path(), "other");
    let pulled = client.pull(&other, &dest, None).unwrap();
    assert_eq!(pulled.manifest, pushed.manifest);
    assert_eq!(pulled.blobs_fetched, 2);
    assert_eq!(other.resolve(&dest).unwrap(), pushed.manifest);
    assert!(other.fsck().unwrap().is_empty());

    // Pulling again fetches nothing.
    let again = client.pull(&other, &dest, None).unwrap();
    assert_eq!((again.blobs_fetched, again.blobs_present), (0, 2));

    // By digest too.
    let by_digest = format!("{}/team/busybox@{}", reg.host(), pushed.manifest);
    let third = empty_store(dir.path(), "third");
    assert_eq!(
        client.pull(&third, &by_digest, None).unwrap().manifest,
        pushed.manifest
    );
}

#[test]
fn pulls_what_skopeo_pushed_as_oci_and_as_docker_schema2() {
    let dir = tempfile::tempdir().unwrap();
    let layout = cairn_testsupport::busybox_layout(&dir.path().join("layout"));
    let reg = RegistryServer::start();
    let client = registry(dir.path());
    for (format, media_type) in [
        ("oci", "application/vnd.oci.image.manifest.v1+json"),
        (
            "v2s2",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
    ] {
        let dest = format!("{}/peer/{format}:1", reg.host());
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--format",
            format,
            &format!("oci:{}:fixture", layout.display()),
            &format!("docker://{dest}"),
        ]);
        let inspect = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ]);
        let store = empty_store(dir.path(), format);
        let report = client.pull(&store, &dest, None).unwrap();
        assert_eq!(report.manifest, Digest::of(inspect.as_bytes()), "{format}");
        assert_eq!(
            store.manifest_media_type(&report.manifest).unwrap(),
            media_type
        );
        assert!(store.fsck().unwrap().is_empty(), "{format}");
        // And push it back under another name: byte-identical manifest.
        let back = format!("{}/peer/{format}-back:1", reg.host());
        let pushed = client.push(&store, &dest, &back).unwrap();
        assert_eq!(pushed.manifest, report.manifest);
        assert_eq!(
            pushed.blobs_uploaded, 0,
            "same registry: mounted, not uploaded"
        );
    }
}

#[test]
fn an_index_resolves_to_the_requested_platform() {
    let dir = tempfile::tempdir().unwrap();
    let layout = cairn_testsupport::busybox_layout(&dir.path().join("layout"));
    // Make the fixture a two-platform index: a second manifest (same blobs,
    // an annotation to give it its own digest) declared as linux/arm64.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let amd = index["manifests"][0].clone();
    let amd_digest = amd["digest"].as_str().unwrap().to_string();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let mut arm_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&amd_digest)).unwrap()).unwrap();
    arm_manifest["annotations"] = serde_json::json!({"test.platform": "arm64"});
    let arm_bytes = serde_json::to_vec(&arm_manifest).unwrap();
    let arm_digest = Digest::of(&arm_bytes).to_string();
    std::fs::write(blob(&arm_digest), &arm_bytes).unwrap();
    let amd_size = std::fs::metadata(blob(&amd_digest)).unwrap().len();
    let image_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_digest, "size": arm_bytes.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd_digest, "size": amd_size,
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    });
    let index_bytes = serde_json::to_vec(&image_index).unwrap();
    let index_digest = Digest::of(&index_bytes).to_string();
    std::fs::write(blob(&index_digest), &index_bytes).unwrap();
    let layout_index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_bytes.len(),
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&layout_index).unwrap(),
    )
    .unwrap();

    let reg = RegistryServer::start();
    let dest = format!("{}/multi/busybox:1", reg.host());
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{dest}"),
    ]);
    let store = empty_store(dir.path(), "s");
    let amd_pull = registry(dir.path()).pull(&store, &dest, None).unwrap();
    assert_eq!(amd_pull.manifest.to_string(), amd_digest);
    let mut opts = options(dir.path());
    opts.platform = "linux/arm64".parse().unwrap();
    let arm_pull = Registry::new(opts)
        .unwrap()
        .pull(&store, &dest, None)
        .unwrap();
    assert_eq!(arm_pull.manifest.to_string(), arm_digest);
    let mut opts = options(dir.path());
    opts.platform = "linux/s390x".parse().unwrap();
    let err = Registry::new(opts)
        .unwrap()
        .pull(&store, &dest, None)
        .unwrap_err();
    assert!(matches!(err, RegistryError::NoPlatform { .. }), "{err}");
    assert!(err.is_bad_input());
    assert!(
        err.to_string().contains("linux/arm64/v8, linux/amd64"),
        "{err}"
    );
}

#[test]
fn unknown_images_and_bad_references_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start();
    let store = empty_store(dir.path(), "s");
    let client = registry(dir.path());
    let err = client
        .pull(&store, &format!("{}/no/such:image", reg.host()), None)
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.is_bad_input());
    let msg = err.to_string();
    assert!(
        msg.contains(&reg.host()) && msg.contains("no/such") && msg.contains("404"),
        "{msg}"
    );
    let err = client.pull(&store, "Bad//Name", None).unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn basic_auth_right_and_wrong_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_busybox(dir.path());
    let reg = RegistryServer::start_with_auth("alice", "s3cret");
    let dest = format!("{}/private/busybox:1", reg.host());

    // Nothing stored: refused, and the message says how to log in.
    let err = registry(dir.path())
        .push(&store, "busybox:fixture", &dest)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Denied { .. }), "{msg}");
    assert!(msg.contains("401") && msg.contains("cairn login"), "{msg}");

    // Wrong password: refused by the login check and by a push.
    let client = registry(dir.path());
    let err = client
        .check_login(&reg.host(), "alice", "wrong")
        .unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");
    let mut wrong = options(dir.path());
    wrong.credentials = Some(("alice".into(), "wrong".into()));
    let err = Registry::new(wrong)
        .unwrap()
        .push(&store, "busybox:fixture", &dest)
        .unwrap_err();
    assert!(err.to_string().contains("\"alice\""), "{err}");
    assert!(reg.blob_digests().is_empty());

    // Right password: checked, stored, then used by later commands.
    client.check_login(&reg.host(), "alice", "s3cret").unwrap();
    let files = AuthFiles::with_authfile(dir.path().join("auth.json"));
    files.login(&reg.host(), "alice", "s3cret").unwrap();
    let pushed = registry(dir.path())
        .push(&store, "busybox:fixture", &dest)
        .unwrap();
    assert_eq!(pushed.blobs_uploaded, 2);
    let other = empty_store(dir.path(), "other");
    assert_eq!(
        registry(dir.path())
            .pull(&other, &dest, None)
            .unwrap()
            .manifest,
        pushed.manifest
    );
}

#[test]
fn cross_repository_mount_instead_of_upload() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_busybox(dir.path());
    let reg = RegistryServer::start();
    let client = registry(dir.path());
    let first = client
        .push(
            &store,
            "busybox:fixture",
            &format!("{}/a/one:1", reg.host()),
        )
        .unwrap();
    assert_eq!(first.blobs_uploaded, 2);
    let second = client
        .push(
            &store,
            "busybox:fixture",
            &format!("{}/b/two:1", reg.host()),
        )
        .unwrap();
    assert_eq!(
        (second.blobs_uploaded, second.blobs_mounted),
        (0, 2),
        "{second:?}"
    );
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/b/two:1", reg.host()),
    ]);
}

#[test]
fn repush_of_an_unchanged_image_sends_no_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_busybox(dir.path());
    let reg = RegistryServer::start();
    let proxy = FaultProxy::start(reg.addr());
    let client = registry(dir.path());
    let dest = format!("{}/re/push:1", proxy.host());
    client.push(&store, "busybox:fixture", &dest).unwrap();
    let before = proxy.requests().len();
    let again = client
        .push(
            &store,
            "busybox:fixture",
            &format!("{}/re/push:2", proxy.host()),
        )
        .unwrap();
    assert_eq!(
        (
            again.blobs_uploaded,
            again.blobs_mounted,
            again.blobs_present
        ),
        (0, 0, 2)
    );
    let sent: Vec<String> = proxy.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(sent.iter().all(|r| !r.contains("/blobs/")), "{sent:?}");
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(Digest, Digest)>>);
impl LayerSink for Recorder {
    fn layer_ready(&self, blob: &Digest, diff_id: &Digest) -> Result<(), String> {
        self.0.lock().unwrap().push((*blob, *diff_id));
        Ok(())
    }
}

#[test]
fn faults_are_retried_and_the_registry_ends_up_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_busybox(dir.path());
    add_random_layer(&store, "busybox:fixture", 3 << 20, 7, "big:1");
    let reg = RegistryServer::start();
    let proxy = FaultProxy::start(reg.addr());
    // Push: a reset on the first HEAD, 500s on uploads, a 429 window, a stall.
    proxy.add_rule(
        Rule::new(Fault::Reset)
            .method("HEAD")
            .path_contains("/blobs/"),
    );
    proxy.add_rule(
        Rule::new(Fault::Status(500))
            .method("PUT")
            .path_contains("/blobs/uploads/")
            .times(2),
    );
    proxy.add_rule(Rule::new(Fault::Status(503)).method("PATCH").times(1));
    proxy.add_rule(
        Rule::new(Fault::RateLimit {
            retry_after_secs: 1,
        })
        .method("PUT")
        .path_contains("/manifests/"),
    );
    proxy.add_rule(
        Rule::new(Fault::Stall(Duration::from_secs(4)))
            .method("POST")
            .path_contains("/blobs/uploads/"),
    );
    let mut opts = options(dir.path());
    opts.monolithic_max = 1 << 20; // the 3 MiB layer goes chunked
    let client = Registry::new(opts).unwrap();
    let dest = format!("{}/faulty/big:1", proxy.host());
    let started = Instant::now();
    let pushed = client.push(&store, "big:1", &dest).unwrap();
    assert!(proxy.injected() >= 6, "injected {}", proxy.injected());
    assert!(pushed.retries >= 5, "{pushed:?}");
    // The 429 asked for a second's pause.
    assert!(started.elapsed() >= Duration::from_secs(1));
    let mut in_registry = reg.blob_digests();
    in_registry.sort();
    assert_eq!(in_registry, image_blobs(&store, "big:1"));
    skopeo(&["inspect", "--tls-verify=false", &format!("docker://{dest}")]);

    // Pull: 500s and resets on blob GETs, a response cut mid-layer (resumed
    // from where it broke), a stall on the manifest.
    proxy.clear_rules();
    proxy.add_rule(
        Rule::new(Fault::Stall(Duration::from_secs(4)))
            .method("GET")
            .path_contains("/manifests/"),
    );
    proxy.add_rule(
        Rule::new(Fault::Status(500))
            .method("GET")
            .path_contains("/blobs/")
            .times(2),
    );
    proxy.add_rule(
        Rule::new(Fault::Reset)
            .method("GET")
            .path_contains("/blobs/"),
    );
    proxy.add_rule(
        Rule::new(Fault::CutResponse {
            after_bytes: 1 << 20,
        })
        .method("GET")
        .path_contains("/blobs/")
        .times(2),
    );
    let other = empty_store(dir.path(), "other");
    let recorder = Recorder::default();
    let pulled = client.pull(&other, &dest, Some(&recorder)).unwrap();
    assert_eq!(pulled.manifest, pushed.manifest);
    assert!(pulled.retries >= 4, "{pulled:?}");
    assert!(other.fsck().unwrap().is_empty());
    for b in image_blobs(&store, "big:1") {
        other.verify_blob(&b.parse().unwrap()).unwrap();
    }
    assert_eq!(recorder.0.lock().unwrap().len(), 2, "one call per layer");
    // A resumed download asked for the rest with a Range request.
    assert!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.fault.is_some())
            .count()
            >= 5
    );
}

#[test]
fn a_failed_pull_leaves_no_partial_blob_and_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_busybox(dir.path());
    add_random_layer(&store, "busybox:fixture", 2 << 20, 9, "big:1");
    let reg = RegistryServer::start();
    let proxy = FaultProxy::start(reg.addr());
    let client = registry(dir.path());
    let dest = format!("{}/broken/big:1", proxy.host());
    client.push(&store, "big:1", &dest).unwrap();

    // The big layer breaks after 512 KiB, and then the registry is gone
    // for good: the pull gives up with half a blob written.
    let big = store
        .manifest(&store.resolve("big:1").unwrap())
        .unwrap()
        .1
        .children[1]
        .digest;
    proxy.add_rule(
        Rule::new(Fault::CutResponse {
            after_bytes: 512 << 10,
        })
        .method("GET")
        .path_contains(&big.to_string()),
    );
    proxy.add_rule(
        Rule::new(Fault::Reset)
            .method("GET")
            .path_contains(&big.to_string())
            .times(1000),
    );
    let other = empty_store(dir.path(), "other");
    let err = client.pull(&other, &dest, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&big.to_string()) && msg.contains("broken/big"),
        "{msg}"
    );
    assert!(other.images().unwrap().is_empty());
    assert!(!other.has_blob(&big));
    let leftovers: Vec<_> = std::fs::read_dir(other.layout().tmp()).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // What completed stays: the next pull fetches only the big layer.
    proxy.clear_rules();
    let resumed = client.pull(&other, &dest, None).unwrap();
    assert_eq!(resumed.blobs_fetched, 1, "{resumed:?}");
    assert!(other.fsck().unwrap().is_empty());
}

#[test]
fn two_regions_each_get_every_blob_once_and_a_second_push_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_busybox(dir.path());
    add_random_layer(&store, "busybox:fixture", 1 << 20, 3, "app:1");
    let (eu, us) = (RegistryServer::start(), RegistryServer::start());
    let (eu_proxy, us_proxy) = (FaultProxy::start(eu.addr()), FaultProxy::start(us.addr()));
    let regions = cairn_registry::Regions::parse(
        &format!(
            "[regions.eu]\nregistry = \"{}/snapshots\"\n[regions.us]\nregistry = \"{}/snapshots\"\n",
            eu_proxy.host(),
            us_proxy.host()
        ),
        None,
    )
    .unwrap();
    let dests: Vec<_> = ["eu", "us"]
        .iter()
        .map(|r| regions.destination(r, "app:1").unwrap())
        .collect();
    let client = registry(dir.path());
    let results = client.push_many(&store, "app:1", &dests).unwrap();
    let blobs = image_blobs(&store, "app:1");
    for (proxy, result) in [(&eu_proxy, &results[0]), (&us_proxy, &results[1])] {
        let report = result.as_ref().unwrap();
        assert_eq!(report.blobs_uploaded, 3);
        // Each blob's bytes crossed to this registry exactly once.
        for b in &blobs[..] {
            let uploads = proxy
                .requests()
                .iter()
                .filter(|r| {
                    r.method == "PUT"
                        && r.path.contains("/blobs/uploads/")
                        && r.path.contains(&b.replace(':', "%3A"))
                })
                .count();
            let is_manifest = *b == report.manifest.to_string();
            assert_eq!(uploads, usize::from(!is_manifest), "{b}");
        }
    }
    let mut a = eu.blob_digests();
    a.sort();
    assert_eq!(a, blobs);
    let again = client.push_many(&store, "app:1", &dests).unwrap();
    for r in again {
        let r = r.unwrap();
        assert_eq!(
            (r.blobs_uploaded, r.blobs_mounted, r.bytes_uploaded),
            (0, 0, 0)
        );
    }
}

#[test]
fn the_blocking_api_works_from_inside_an_async_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_busybox(dir.path());
    let reg = RegistryServer::start();
    let client = registry(dir.path());
    let dest = format!("{}/async/busybox:1", reg.host());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Directly in async code, and in block_in_place: neither may panic.
    let pushed = rt
        .block_on(async { client.push(&store, "busybox:fixture", &dest) })
        .unwrap();
    let other = empty_store(dir.path(), "other");
    let pulled = rt
        .block_on(async { tokio::task::block_in_place(|| client.pull(&other, &dest, None)) })
        .unwrap();
    assert_eq!(pushed.manifest, pulled.manifest);
}

#[test]
fn zstd_and_uncompressed_layers_round_trip() {
    use cairn_layer::Compression;
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_busybox(dir.path());
    cairn_testsupport::add_random_layer_compressed(
        &store,
        "busybox:fixture",
        256 << 10,
        1,
        "z:1",
        Compression::Zstd,
    );
    cairn_testsupport::add_random_layer_compressed(
        &store,
        "z:1",
        256 << 10,
        2,
        "zp:1",
        Compression::None,
    );
    let (_, parsed) = store.manifest(&store.resolve("zp:1").unwrap()).unwrap();
    let types: Vec<&str> = parsed
        .children
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    assert_eq!(
        types[1..],
        [
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar"
        ]
    );
    let reg = RegistryServer::start();
    let client = registry(dir.path());
    let dest = format!("{}/mixed/layers:1", reg.host());
    let pushed = client.push(&store, "zp:1", &dest).unwrap();
    let other = empty_store(dir.path(), "other");
    let recorder = Recorder::default();
    let pulled = client.pull(&other, &dest, Some(&recorder)).unwrap();
    assert_eq!(pulled.manifest, pushed.manifest);
    assert_eq!(recorder.0.lock().unwrap().len(), 3);
    assert!(other.fsck().unwrap().is_empty());
}
