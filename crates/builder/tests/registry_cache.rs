//! The build cache shared through a registry (`cache_from` / `cache_to` of
//! the request): two stores (no shared files) and one real
//! `docker-registry`. A second store takes every step from the cache and
//! produces the first's digest; mode=max carries intermediate stages;
//! a dead or garbage cache registry costs a local build, not a failure; an
//! unchanged re-export sends no blob; a cache manifest or config one byte
//! over the size cap is not read; a cache manifest lying about a layer's
//! diff id is not believed; layers taken from the cache stay blobs until
//! something needs their tree (a sandbox, a RUN that misses); and with one
//! `--timestamp` two stores give one digest without any cache. As root and
//! again as the unprivileged test user (harness = false: `main` calls the
//! init hook).

mod common;

use cairn_builder::{BuildRequest, BuildResult, Builder, CacheExport, CacheImport, CacheMode};
use cairn_sandbox::idmap::IdMapping;
use cairn_sandbox::manager::{Argv, CreateOptions, ExecOptions, SandboxManager};
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
/// The cache artifact at `source`, read back as a second runner would.
fn fetch_cache(store: &Store, source: &str) -> cairn_registry::FetchedArtifact {
    let registry =
        cairn_registry::Registry::new(cairn_registry::RegistryOptions::from_env()).unwrap();
    registry
        .fetch_artifact(
            store,
            source,
            cairn_builder::remote_cache::ARTIFACT_TYPE,
            std::time::Duration::from_secs(30),
        )
        .unwrap()
}

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
    let art = fetch_cache(&r.a, &source);
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

/// The layers of `image` above the busybox fixture's (the ones a build made).
fn built_layers(store: &Store, image: &cairn_store::Digest) -> Vec<cairn_store::image::ImageLayer> {
    let base = store.resolve("busybox:fixture").unwrap();
    let below = store.image(&base).unwrap().layers.len();
    store.image(image).unwrap().layers.split_off(below)
}

/// `fsck --full`'s check, as the CLI runs it: layer dirs re-read in a user
/// namespace (their files may belong to subordinate IDs).
struct TaskVerifier(Launcher);

impl cairn_store::gc::LayerVerifier for TaskVerifier {
    fn tree_digest(&self, dir: &std::path::Path) -> Result<cairn_store::Digest, String> {
        self.0
            .tree_digest(&IdMapping::for_current_user(), dir)
            .map_err(|e| e.to_string())
    }

    /// As the CLI does it: the blob extracted by a task with the sandboxes'
    /// mapping (layers extracted from blobs name their blob).
    fn blob_tree_digest(
        &self,
        blob: &std::path::Path,
        scratch: &std::path::Path,
    ) -> Result<cairn_store::Digest, String> {
        let mapping = IdMapping::for_current_user();
        let limits = cairn_layer::ExtractLimits::default();
        let got = self
            .0
            .extract_layer(&mapping, blob, scratch, limits, "fsck", true);
        let remover = cairn_sandbox::TaskRemover {
            launcher: &self.0,
            mapping: &mapping,
        };
        cairn_store::layer_dirs::TreeRemover::remove_tree(&remover, scratch)?;
        got.map_err(|e| e.to_string())?
            .tree
            .ok_or_else(|| "no tree digest".to_string())
    }
}

fn assert_sound(store: &Store, when: &str) {
    assert_eq!(store.fsck().unwrap(), Vec::<String>::new(), "fsck {when}");
    let verifier = TaskVerifier(Launcher::current_exe().unwrap());
    let full = store.fsck_full(&verifier).unwrap();
    assert_eq!(full, Vec::<String>::new(), "fsck --full {when}");
}

/// What `cmd` prints in a new sandbox of `image` (created, run, removed).
fn run_in(store: &Store, image: &str, cmd: &[&str]) -> String {
    let manager = SandboxManager::new(store, Launcher::current_exe().unwrap());
    let sb = manager.create(image, CreateOptions::default()).unwrap();
    let opts = ExecOptions {
        argv: Argv::Direct(cmd.iter().map(|s| s.to_string()).collect()),
        ..ExecOptions::default()
    };
    let out = manager.exec_output(&sb.id, opts).unwrap();
    manager.remove(&sb.id).unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A layer taken from the cache is kept as its verified blob, not
/// extracted: after a fully cached build the store has every layer's blob
/// and no dir for any of them, and fsck (quick and full) finds nothing
/// wrong with that. A sandbox of the image extracts them on demand and
/// shows the first store's RUN output.
fn cached_layers_stay_blobs_until_something_needs_their_tree(f: &Fixture) {
    let r = Runners::new();
    let ctx = r.context("lazy", EIGHT_STEPS);
    let cache = format!("{}/cache/lazy:main", f.registry.host());
    let mut req = common::request(&ctx, "localhost/lazy:latest");
    req.cache_to = export(&cache, CacheMode::Min);
    let first = build(&r.a, &req);
    let mut req = common::request(&ctx, "localhost/lazy:latest");
    req.cache_from = import(&cache);
    let second = build(&r.b, &req);
    assert!(common::ran_lines(&second).is_empty(), "{:?}", second.steps);
    assert_eq!(first.manifest, second.manifest);

    let layers = built_layers(&r.b, &second.manifest);
    assert_eq!(layers.len(), 5, "COPY, RUN, RUN, WORKDIR, RUN");
    for l in &layers {
        assert!(r.b.has_blob(&l.blob.digest), "blob {}", l.blob.digest);
        assert!(
            !r.b.has_layer_dir(&l.diff_id),
            "{} was extracted",
            l.diff_id
        );
    }
    assert_sound(&r.b, "after the cached build");

    let want = run_in(&r.a, "localhost/lazy:latest", &["cat", "/app/both"]);
    assert!(want.starts_with(|c: char| c.is_ascii_digit()), "{want:?}");
    let got = run_in(&r.b, "localhost/lazy:latest", &["cat", "/app/both"]);
    assert_eq!(got, want);
    for l in &layers {
        assert!(r.b.has_layer_dir(&l.diff_id), "{} not extracted", l.diff_id);
    }
    assert_sound(&r.b, "after the sandbox extracted the layers");
}

/// A partly cached build whose first miss is a RUN on top of layers
/// imported lazily: they are extracted for it and it sees their files;
/// the layers it reused are the first store's, byte for byte.
fn a_miss_on_lazy_layers_runs_on_their_files(f: &Fixture) {
    let r = Runners::new();
    let cache = format!("{}/cache/partly:main", f.registry.host());
    let ctx = r.context("partly-a", EIGHT_STEPS);
    let mut req = common::request(&ctx, "localhost/partly:latest");
    req.cache_to = export(&cache, CacheMode::Min);
    let first = build(&r.a, &req);
    let more = format!("{EIGHT_STEPS}RUN cat /a.txt /app/both > /app/seen\n");
    let ctx = r.context("partly-b", &more);
    let mut req = common::request(&ctx, "localhost/partly:latest");
    req.cache_from = import(&cache);
    let second = build(&r.b, &req);
    assert_eq!(common::ran_lines(&second), [9]);

    let reused = built_layers(&r.a, &first.manifest);
    let layers = built_layers(&r.b, &second.manifest);
    assert_eq!(layers.len(), reused.len() + 1);
    for (got, want) in layers.iter().zip(&reused) {
        assert_eq!(got.blob.digest, want.blob.digest);
        assert_eq!(got.diff_id, want.diff_id);
    }
    let both = run_in(&r.a, "localhost/partly:latest", &["cat", "/app/both"]);
    let seen = run_in(&r.b, "localhost/partly:latest", &["cat", "/app/seen"]);
    assert_eq!(seen, format!("hello\n{both}"));
    assert_sound(&r.b, "after the partly cached build");
}

/// A cache manifest whose entries name the wrong diff ids (every other
/// field true, the blobs real): the check made while the blob downloads
/// refuses them, so the step runs here and its image carries the true
/// diff id. (Believed, the lie would go into the image config, whose
/// layers would then not match it.)
fn a_cache_manifest_lying_about_diff_ids_is_not_believed(f: &Fixture) {
    let r = Runners::new();
    let ctx = r.context("lie", "FROM busybox:fixture\nRUN date +%s%N > /f\n");
    let source = format!("{}/cache/lie:src", f.registry.host());
    let mut req = common::request(&ctx, "localhost/lie:latest");
    req.cache_to = export(&source, CacheMode::Max);
    build(&r.a, &req);
    let art = fetch_cache(&r.a, &source);
    let lie = cairn_store::Digest::of(b"not this layer");
    let mut doc: serde_json::Value = serde_json::from_slice(&art.config).unwrap();
    for entry in doc["entries"].as_array_mut().unwrap() {
        entry["diff_id"] = lie.to_string().into();
    }
    let server = HttpServer::start();
    server.put("/v2/", "{}", None);
    for layer in &art.layers {
        let blob = r.a.read_blob_bytes(&layer.digest).unwrap();
        server.put(&format!("/v2/cache/big/blobs/{}", layer.digest), blob, None);
    }
    let config = serde_json::to_vec(&doc).unwrap();
    serve_cache_manifest(&server, "lie", &config, &art, None);

    req.cache_to = vec![];
    req.cache_from = import(&format!("{}/cache/big:lie", server.addr()));
    let result = build(&r.b, &req);
    assert_eq!(common::ran_lines(&result), [2]);
    let layers = built_layers(&r.b, &result.manifest);
    assert!(layers.iter().all(|l| l.diff_id != lie), "{layers:?}");
    assert_sound(&r.b, "after refusing the lie");
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
    cached_layers_stay_blobs_until_something_needs_their_tree,
    a_miss_on_lazy_layers_runs_on_their_files,
    a_cache_manifest_lying_about_diff_ids_is_not_believed,
    one_timestamp_one_digest_in_two_stores,
);
