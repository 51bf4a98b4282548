//! The build cache shared through a registry (`cache_from` / `cache_to` of
//! the request): two stores (no shared files) and one real
//! `docker-registry`. A second store takes every step from the cache and
//! produces the first's digest; mode=max carries intermediate stages;
//! a dead or garbage cache registry costs a local build, not a failure; an
//! unchanged re-export sends no blob; a cache manifest or config one byte
//! over the size cap is not read; and with one `--timestamp` two stores
//! give one digest without any cache. As root and again as the
//! unprivileged test user (harness = false: `main` calls the init hook).

mod common;

use cairn_builder::{BuildRequest, BuildResult, Builder, CacheExport, CacheImport, CacheMode};
use cairn_sandbox::{init_hook, Launcher};
use cairn_store::Store;
use cairn_testsupport::fault_proxy::FaultProxy;
use cairn_testsupport::http_server::HttpServer;
use cairn_testsupport::registry_server::RegistryServer;
use std::path::PathBuf;

struct Fixture {
    registry: RegistryServer,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            registry: RegistryServer::start(),
        }
    }
}

/// Two stores with the busybox fixture, and a place for contexts; all
/// removed when dropped.
struct Runners {
    tmp: tempfile::TempDir,
    a: Store,
    b: Store,
}

impl Runners {
    fn new() -> Runners {
        let tmp = tempfile::tempdir().unwrap();
        let a = cairn_testsupport::store_with_busybox(&tmp.path().join("a"));
        let b = cairn_testsupport::store_with_busybox(&tmp.path().join("b"));
        Runners { tmp, a, b }
    }

    fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        common::write_context(self.tmp.path(), name, dockerfile, &[("a.txt", "hello\n")])
    }
}

fn export(reference: &str, mode: CacheMode) -> Vec<CacheExport> {
    vec![CacheExport {
        reference: reference.to_string(),
        mode,
        ignore_error: false,
    }]
}

fn import(reference: &str) -> Vec<CacheImport> {
    vec![CacheImport {
        reference: reference.to_string(),
    }]
}

fn build(store: &Store, req: &BuildRequest) -> BuildResult {
    Builder::new(store, Launcher::current_exe().unwrap())
        .build(req, &mut |_| {})
        .unwrap()
}

const EIGHT_STEPS: &str = "FROM busybox:fixture
COPY a.txt /a.txt
RUN date +%s%N > /stamp
ENV GREETING=hi
RUN echo \"$GREETING $(date +%s%N)\" > /greeting
WORKDIR /app
RUN cat /stamp /greeting > /app/both
CMD [\"cat\", \"/app/both\"]
";

fn second_store_takes_every_step_from_the_cache(f: &Fixture) {
    let r = Runners::new();
    let ctx = r.context("eight", EIGHT_STEPS);
    let cache = format!("{}/cache/eight:main", f.registry.host());
    let mut req = common::request(&ctx, "localhost/eight:latest");
    req.cache_to = export(&cache, CacheMode::Min);
    let first = build(&r.a, &req);
    assert_eq!(common::ran_lines(&first), [2, 3, 5, 6, 7]);

    let mut req = common::request(&ctx, "localhost/eight:latest");
    req.cache_from = import(&cache);
    let second = build(&r.b, &req);
    assert!(
        common::ran_lines(&second).is_empty(),
        "the second store ran {:?}",
        common::ran_lines(&second)
    );
    // The RUNs' output (nanosecond clocks) and every created time came
    // from the first store: the very same image.
    assert_eq!(first.manifest, second.manifest);
    let rootfs = common::unpack(&r.b, r.tmp.path(), &second.manifest.to_string());
    let both = std::fs::read_to_string(rootfs.join("app/both")).unwrap();
    assert!(both.starts_with(|c: char| c.is_ascii_digit()), "{both:?}");

    // A third build in the second store is served by its local cache now.
    let mut req = common::request(&ctx, "localhost/eight:latest");
    req.cache_from = import(&format!("{}/cache/none:x", f.registry.host()));
    assert_eq!(build(&r.b, &req).manifest, first.manifest);
}

const TWO_STAGES: &str = "FROM busybox:fixture AS tools
RUN date +%s%N > /tool
FROM busybox:fixture
COPY --from=tools /tool /tool
RUN cat /tool > /copy
";

fn mode_max_brings_intermediate_stages(f: &Fixture) {
    let r = Runners::new();
    let ctx = r.context("stages", TWO_STAGES);
    let min = format!("{}/cache/stages:min", f.registry.host());
    let max = format!("{}/cache/stages:max", f.registry.host());
    let mut req = common::request(&ctx, "localhost/stages:latest");
    req.cache_to = [export(&min, CacheMode::Min), export(&max, CacheMode::Max)].concat();
    let first = build(&r.a, &req);

    // mode=max: the tools stage's RUN comes from the cache too.
    let mut req = common::request(&ctx, "localhost/stages:latest");
    req.cache_from = import(&max);
    let from_max = build(&r.b, &req);
    assert!(
        common::ran_lines(&from_max).is_empty(),
        "{:?}",
        from_max.steps
    );
    assert_eq!(from_max.manifest, first.manifest);

    // mode=min has only the final image's steps: a fresh store importing it
    // runs the tools stage again, which changes everything after it.
    let fresh = cairn_testsupport::store_with_busybox(&r.tmp.path().join("c"));
    let mut req = common::request(&ctx, "localhost/stages:latest");
    req.cache_from = import(&min);
    let from_min = build(&fresh, &req);
    assert!(
        common::ran_lines(&from_min).contains(&2),
        "{:?}",
        from_min.steps
    );
}

/// A free loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn a_dead_or_garbage_cache_registry_costs_a_local_build(f: &Fixture) {
    let r = Runners::new();
    let garbage = HttpServer::start();
    garbage.put("/v2/", "{}", None);
    garbage.put(
        "/v2/cache/g/manifests/t",
        "<html>not a manifest</html>",
        None,
    );
    // A real image where a cache manifest should be: the wrong artifact type.
    let image = format!("{}/cache/not-a-cache:t", f.registry.host());
    push_fixture(&r.a, &image);
    let sources = [
        format!("127.0.0.1:{}/cache/dead:t", closed_port()),
        format!("{}/cache/g:t", garbage.addr()),
        image,
    ];
    for (i, source) in sources.iter().enumerate() {
        // A step of its own each time, so the local cache misses.
        let df = format!("FROM busybox:fixture\nRUN echo {i} > /f\n");
        let ctx = r.context(&format!("dead{i}"), &df);
        let mut req = common::request(&ctx, "localhost/dead:latest");
        req.cache_from = import(source);
        let result = Builder::new(&r.b, Launcher::current_exe().unwrap()).build(&req, &mut |_| {});
        let result = result.unwrap_or_else(|e| panic!("--cache-from {source}: {e}"));
        assert_eq!(common::ran_lines(&result), [2], "{source}");
    }
    let ctx = r.context("dead", "FROM busybox:fixture\nRUN echo dead > /f\n");
    // A dead export target warns by default (ignore-error defaults to true)
    // and fails the build with ignore-error=false, as BuildKit's default.
    let dead = format!("127.0.0.1:{}/cache/dead:t", closed_port());
    let mut req = common::request(&ctx, "localhost/dead:latest");
    req.cache_to = vec![CacheExport {
        reference: dead.clone(),
        mode: CacheMode::Max,
        ignore_error: true,
    }];
    build(&r.b, &req);
    req.cache_to = export(&dead, CacheMode::Max);
    let err = Builder::new(&r.b, Launcher::current_exe().unwrap())
        .build(&req, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

fn push_fixture(store: &Store, dest: &str) {
    let registry =
        cairn_registry::Registry::new(cairn_registry::RegistryOptions::from_env()).unwrap();
    registry.push(store, "busybox:fixture", dest).unwrap();
}

fn an_unchanged_re_export_sends_no_blob(f: &Fixture) {
    let r = Runners::new();
    let ctx = r.context(
        "again",
        "FROM busybox:fixture\nRUN date +%s%N > /f\nCOPY a.txt /\n",
    );
    let proxy = FaultProxy::start(f.registry.addr());
    let cache = format!("{}/cache/again:t", proxy.host());
    let mut req = common::request(&ctx, "localhost/again:latest");
    req.cache_to = export(&cache, CacheMode::Max);
    build(&r.a, &req);
    let uploads = |log: &[cairn_testsupport::fault_proxy::RequestLog]| {
        log.iter()
            .filter(|l| l.method != "GET" && l.method != "HEAD")
            .count()
    };
    let first = proxy.requests();
    assert!(uploads(&first) >= 3, "{first:?}");

    let second = build(&r.a, &req);
    assert!(common::ran_lines(&second).is_empty());
    let log = proxy.requests();
    let again = &log[first.len()..];
    assert_eq!(uploads(again), 0, "{again:?}");
    let manifest_requests: Vec<_> = again
        .iter()
        .filter(|l| l.path.contains("/manifests/"))
        .collect();
    assert_eq!(manifest_requests.len(), 1, "{again:?}");
    assert_eq!(manifest_requests[0].method, "HEAD", "{again:?}");
}

/// A cache manifest served by `server` as `/v2/cache/big/manifests/TAG`,
/// naming config blob `config` (served too) and the layers of `art`.
fn serve_cache_manifest(
    server: &HttpServer,
    tag: &str,
    config: &[u8],
    art: &cairn_registry::FetchedArtifact,
    pad_to: Option<usize>,
) -> cairn_store::Digest {
    use sha2::Digest as _;
    let digest: cairn_store::Digest = format!("sha256:{:x}", sha2::Sha256::digest(config))
        .parse()
        .unwrap();
    server.put(&format!("/v2/cache/big/blobs/{digest}"), config, None);
    let layers: Vec<serde_json::Value> = art
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": cairn_builder::remote_cache::ARTIFACT_TYPE,
        "config": {
            "mediaType": cairn_builder::remote_cache::CONFIG_MEDIA_TYPE,
            "digest": digest.to_string(),
            "size": config.len(),
        },
        "layers": layers,
    });
    let mut bytes = serde_json::to_vec(&manifest).unwrap();
    if let Some(len) = pad_to {
        // Whitespace after the document: the same manifest, only longer.
        bytes.resize(len, b' ');
    }
    server.put(&format!("/v2/cache/big/manifests/{tag}"), bytes, None);
    digest
}

/// The cap on a cache manifest and on its config document (containerd's
/// `MaxManifestSize`, as for image manifests): one byte over it, the
/// document is not read (the config blob is never downloaded) and the step
/// runs; the same cache under the cap is used. Each case in a fresh store,
/// so the local cache misses.
fn a_cache_manifest_over_the_size_cap_costs_a_local_build(f: &Fixture) {
    let r = Runners::new();
    let ctx = r.context("big", "FROM busybox:fixture\nRUN date +%s%N > /f\n");
    let source = format!("{}/cache/big:src", f.registry.host());
    let mut req = common::request(&ctx, "localhost/big:latest");
    req.cache_to = export(&source, CacheMode::Max);
    build(&r.a, &req);
    let registry =
        cairn_registry::Registry::new(cairn_registry::RegistryOptions::from_env()).unwrap();
    let art = registry
        .fetch_artifact(
            &r.a,
            &source,
            cairn_builder::remote_cache::ARTIFACT_TYPE,
            std::time::Duration::from_secs(30),
        )
        .unwrap();
    let over = usize::try_from(cairn_registry::manifest_fetch::MAX_MANIFEST_SIZE).unwrap() + 1;
    let server = HttpServer::start();
    server.put("/v2/", "{}", None);
    for layer in &art.layers {
        let blob = r.a.read_blob_bytes(&layer.digest).unwrap();
        server.put(&format!("/v2/cache/big/blobs/{}", layer.digest), blob, None);
    }
    serve_cache_manifest(&server, "ok", &art.config, &art, None);
    serve_cache_manifest(&server, "big-manifest", &art.config, &art, Some(over));
    let mut padded = art.config.clone();
    padded.resize(over, b' ');
    let big_config = serve_cache_manifest(&server, "big-config", &padded, &art, None);

    let mut req = common::request(&ctx, "localhost/big:latest");
    for (i, (tag, ran)) in [
        ("big-manifest", vec![2]),
        ("big-config", vec![2]),
        ("ok", vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let store = cairn_testsupport::store_with_busybox(&r.tmp.path().join(format!("s{i}")));
        req.cache_from = import(&format!("{}/cache/big:{tag}", server.addr()));
        let result = build(&store, &req);
        assert_eq!(common::ran_lines(&result), ran, "--cache-from {tag}");
        assert!(
            !store.has_blob(&big_config),
            "{tag}: the over-cap config was downloaded"
        );
    }
}

fn one_timestamp_one_digest_in_two_stores(_: &Fixture) {
    let r = Runners::new();
    let df = "FROM busybox:fixture
COPY a.txt /a.txt
RUN mkdir -p /out && echo made > /out/f && ln -s f /out/link
ENV K=v
WORKDIR /w
RUN touch /w/x
LABEL l=1
";
    let ctx = r.context("same", df);
    let mut req = common::request(&ctx, "localhost/same:latest");
    req.timestamp = Some(1_700_000_000);
    let a = build(&r.a, &req);
    let b = build(&r.b, &req);
    assert_eq!(common::ran_lines(&b), [2, 3, 5, 6]);
    assert_eq!(a.manifest, b.manifest);
}

cairn_testsupport::suite_main!(Fixture;
    second_store_takes_every_step_from_the_cache,
    mode_max_brings_intermediate_stages,
    a_dead_or_garbage_cache_registry_costs_a_local_build,
    an_unchanged_re_export_sends_no_blob,
    a_cache_manifest_over_the_size_cap_costs_a_local_build,
    one_timestamp_one_digest_in_two_stores,
);
