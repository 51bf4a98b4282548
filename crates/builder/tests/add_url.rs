//! `ADD <url>` and `--checksum` through the library, against a real HTTP
//! server on a loopback port, as root and again as the unprivileged test
//! user (harness = false: `main` calls the init hook).

mod common;

use cairn_builder::{BuildError, Builder};
use cairn_sandbox::{init_hook, Launcher};
use cairn_store::Store;
use cairn_testsupport::http_server::HttpServer;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// 2015-10-21T07:28:00Z, as an HTTP date and in seconds.
const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const LAST_MODIFIED_SECS: u64 = 1_445_412_480;

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
    server: HttpServer,
}

/// One entry of a layer tar.
#[derive(Debug)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    body: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = cairn_testsupport::store_with_busybox(tmp.path());
        Fixture {
            tmp,
            store,
            server: HttpServer::start(),
        }
    }

    fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &[u8])]) -> PathBuf {
        common::write_context(self.tmp.path(), name, dockerfile, files)
    }

    /// Build, tagging `tag`; the manifest digest and the lines that ran.
    fn build(&self, context: &Path, tag: &str) -> Result<(String, Vec<usize>), BuildError> {
        let req = common::request(context, &format!("localhost/{tag}:latest"));
        let builder = Builder::new(&self.store, Launcher::current_exe().unwrap());
        let result = builder.build(&req, &mut |_| {})?;
        Ok((result.manifest.to_string(), common::ran_lines(&result)))
    }

    fn tagged(&self, tag: &str) -> bool {
        self.store
            .resolve(&format!("localhost/{tag}:latest"))
            .is_ok()
    }

    /// The entries of layer `index` (0: the busybox base) of `manifest`.
    fn layer(&self, manifest: &str, index: usize) -> HashMap<String, Entry> {
        let (_, parsed) = self.store.manifest(&manifest.parse().unwrap()).unwrap();
        let blob = self
            .store
            .read_blob_bytes(&parsed.children[index].digest)
            .unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        let mut entries = HashMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let path = path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let header = entry.header().clone();
            let mut body = Vec::new();
            entry.read_to_end(&mut body).unwrap();
            entries.insert(
                path,
                Entry {
                    kind: header.entry_type(),
                    mode: header.mode().unwrap() & 0o7777,
                    uid: header.uid().unwrap(),
                    gid: header.gid().unwrap(),
                    mtime: header.mtime().unwrap(),
                    body,
                },
            );
        }
        entries
    }

    /// Downloads or scratch dirs left in the store's tmp/.
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.tmp.path().join("store/tmp"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("add-url-") || n.starts_with("build-copy-"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn sha256(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

fn file<'a>(layer: &'a HashMap<String, Entry>, path: &str) -> &'a Entry {
    layer
        .get(path)
        .unwrap_or_else(|| panic!("{path} not in the layer: {:?}", layer.keys()))
}

fn downloads_to_a_dir_and_to_a_name(f: &Fixture) {
    f.server
        .put("names/tool.bin", "tool body\n", Some(LAST_MODIFIED));
    f.server.put("names/plain", "no date\n", None);
    let url = f.server.url("names/tool.bin");
    let df = format!(
        "FROM busybox:fixture\nADD {url} /opt/\nADD {url} /opt/renamed.bin\nADD {url} /etc\nADD {} /plain-file\n",
        f.server.url("names/plain?x=1")
    );
    let ctx = f.context("names", &df, &[]);
    let (manifest, ran) = f.build(&ctx, "names").unwrap();
    assert_eq!(ran, vec![2, 3, 4, 5]);
    // A trailing slash: the URL's last path segment names the file.
    let layer = f.layer(&manifest, 1);
    let tool = file(&layer, "opt/tool.bin");
    assert_eq!(tool.kind, tar::EntryType::Regular);
    assert_eq!(tool.body, b"tool body\n");
    assert_eq!(tool.mode, 0o600, "BuildKit's mode for downloads");
    assert_eq!((tool.uid, tool.gid), (0, 0));
    assert_eq!(tool.mtime, LAST_MODIFIED_SECS, "mtime from Last-Modified");
    // No trailing slash, no such dir: the destination is the file's name.
    let layer = f.layer(&manifest, 2);
    let renamed = file(&layer, "opt/renamed.bin");
    assert_eq!((renamed.mode, renamed.mtime), (0o600, LAST_MODIFIED_SECS));
    assert!(!layer.contains_key("opt/tool.bin"));
    // An existing dir without the slash: the file goes inside it.
    let layer = f.layer(&manifest, 3);
    assert_eq!(file(&layer, "etc/tool.bin").body, b"tool body\n");
    // Without Last-Modified the mtime is the epoch (BuildKit); the query is
    // not part of the name.
    let layer = f.layer(&manifest, 4);
    let plain = file(&layer, "plain-file");
    assert_eq!((plain.mode, plain.mtime), (0o600, 0));
    assert_eq!(plain.body, b"no date\n");
}

fn chown_and_chmod(f: &Fixture) {
    f.server
        .put("owned/data.txt", "owned\n", Some(LAST_MODIFIED));
    let url = f.server.url("owned/data.txt");
    let df = format!(
        "FROM busybox:fixture\nADD --chown=1000:1001 {url} /srv/new/\nADD --chmod=755 {url} /bin/data\nADD --chown=nobody {url} /n.txt\n"
    );
    let ctx = f.context("owned", &df, &[]);
    let (manifest, _) = f.build(&ctx, "owned").unwrap();
    let layer = f.layer(&manifest, 1);
    let data = file(&layer, "srv/new/data.txt");
    assert_eq!((data.uid, data.gid, data.mode), (1000, 1001, 0o600));
    // The dirs ADD creates belong to the --chown user too (buildah's rule).
    let dir = file(&layer, "srv/new");
    assert_eq!((dir.uid, dir.gid, dir.mode), (1000, 1001, 0o755));
    let layer = f.layer(&manifest, 2);
    let data = file(&layer, "bin/data");
    assert_eq!((data.uid, data.mode), (0, 0o755));
    // A name resolves in the image's passwd (busybox: nobody is 65534).
    let layer = f.layer(&manifest, 3);
    assert_eq!(file(&layer, "n.txt").uid, 65534);
}

fn checksum_pins_and_keys_the_download(f: &Fixture) {
    let body = b"pinned content\n";
    f.server.put("pin/blob", &body[..], Some(LAST_MODIFIED));
    let df = format!(
        "FROM busybox:fixture\nADD --checksum={} {} /pinned\n",
        sha256(body),
        f.server.url("pin/blob")
    );
    let ctx = f.context("pin", &df, &[]);
    let (first, ran) = f.build(&ctx, "pin").unwrap();
    assert_eq!(ran, vec![2]);
    let layer = f.layer(&first, 1);
    assert_eq!(file(&layer, "pinned").body, body);
    // Cached: the key is the checksum, so the rebuild asks the server
    // nothing, even though what it serves has changed since.
    f.server.put("pin/blob", "changed upstream\n", None);
    let before = f.server.requests();
    let (second, ran) = f.build(&ctx, "pin").unwrap();
    assert_eq!(ran, Vec::<usize>::new());
    assert_eq!(second, first);
    assert_eq!(f.server.requests(), before, "a cached step fetched");
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
}

fn checksum_mismatch_adds_nothing(f: &Fixture) {
    let wanted = b"the right bytes\n";
    f.server.put("mismatch/file", "the wrong bytes\n", None);
    let url = f.server.url("mismatch/file");
    let df = format!(
        "FROM busybox:fixture\nADD --checksum={} {url} /f\n",
        sha256(wanted)
    );
    let ctx = f.context("mismatch", &df, &[]);
    let err = f.build(&ctx, "mismatch").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, BuildError::Fetch(_)), "{err:?}");
    assert!(
        message.contains(&url) && message.contains("line 2"),
        "{message}"
    );
    assert!(message.contains(&sha256(wanted)), "{message}");
    assert!(message.contains(&sha256(b"the wrong bytes\n")), "{message}");
    assert!(!f.tagged("mismatch"));
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
    // Nothing was cached: once the server has the right bytes, the step runs.
    f.server.put("mismatch/file", &wanted[..], None);
    let (manifest, ran) = f.build(&ctx, "mismatch").unwrap();
    assert_eq!(ran, vec![2]);
    assert_eq!(file(&f.layer(&manifest, 1), "f").body, wanted);
}

fn checksum_flag_errors_are_input_errors(f: &Fixture) {
    f.server.put("flags/x", "x", None);
    let url = f.server.url("flags/x");
    let good = sha256(b"x");
    let before = f.server.requests();
    let cases: Vec<(String, &str)> = vec![
        (format!("ADD --checksum=sha256:abc {url} /x"), "sha256:abc"),
        (
            format!("ADD --checksum=SHA256:{} {url} /x", "a".repeat(64)),
            "SHA256:",
        ),
        (format!("ADD --checksum={good} local.txt /x"), "non-HTTP(S)"),
        (
            format!("ADD --checksum={good} {url} {url} /d/"),
            "multiple sources",
        ),
        (format!("COPY --checksum={good} local.txt /x"), "checksum"),
    ];
    for (i, (line, expected)) in cases.iter().enumerate() {
        let df = format!("FROM busybox:fixture\n{line}\n");
        let ctx = f.context(&format!("flags{i}"), &df, &[("local.txt", b"local")]);
        let err = f.build(&ctx, "flags").unwrap_err();
        assert!(err.is_bad_input(), "{line}: {err:?}");
        assert!(err.to_string().contains(expected), "{line}: {err}");
    }
    assert_eq!(f.server.requests(), before, "a refused flag fetched");
    assert!(!f.tagged("flags"));
}

fn without_checksum_the_content_keys_the_step(f: &Fixture) {
    f.server
        .put("unpinned/v", "version 1\n", Some(LAST_MODIFIED));
    let df = format!(
        "FROM busybox:fixture\nADD {} /v\nRUN cat /v > /copy\n",
        f.server.url("unpinned/v")
    );
    let ctx = f.context("unpinned", &df, &[]);
    let (first, ran) = f.build(&ctx, "unpinned").unwrap();
    assert_eq!(ran, vec![2, 3]);
    // Unchanged: fetched again to learn its digest, and nothing reruns.
    let before = f.server.requests();
    let (second, ran) = f.build(&ctx, "unpinned").unwrap();
    assert_eq!(ran, Vec::<usize>::new());
    assert_eq!(second, first);
    assert_eq!(f.server.requests(), before + 1);
    // A new body reruns the ADD and what follows.
    f.server
        .put("unpinned/v", "version 2\n", Some(LAST_MODIFIED));
    let (third, ran) = f.build(&ctx, "unpinned").unwrap();
    assert_eq!(ran, vec![2, 3]);
    assert_eq!(file(&f.layer(&third, 1), "v").body, b"version 2\n");
    assert_eq!(file(&f.layer(&third, 2), "copy").body, b"version 2\n");
    // Same body, new Last-Modified: the file's mtime changes, so does the layer.
    f.server.put("unpinned/v", "version 2\n", None);
    let (fourth, ran) = f.build(&ctx, "unpinned").unwrap();
    assert_eq!(ran, vec![2, 3]);
    assert_eq!(file(&f.layer(&fourth, 1), "v").mtime, 0);
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
}

fn http_errors_are_clear(f: &Fixture) {
    // 404: the Dockerfile names something that is not there (exit 2).
    let missing = f.server.url("errors/missing.txt");
    let ctx = f.context(
        "e404",
        &format!("FROM busybox:fixture\nADD {missing} /m\n"),
        &[],
    );
    let err = f.build(&ctx, "errors").unwrap_err();
    assert!(err.is_bad_input(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&missing) && message.contains("404") && message.contains("line 2"),
        "{message}"
    );
    // The same with --checksum: found when the step runs, same error.
    let ctx = f.context(
        "e404sum",
        &format!(
            "FROM busybox:fixture\nADD --checksum={} {missing} /m\n",
            sha256(b"")
        ),
        &[],
    );
    let err = f.build(&ctx, "errors").unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("404"),
        "{err}"
    );
    // Nobody listening: a failure naming the URL (exit 1), after retries.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("http://127.0.0.1:{port}/file");
    let ctx = f.context(
        "refused",
        &format!("FROM busybox:fixture\nADD {refused} /r\n"),
        &[],
    );
    let err = f.build(&ctx, "errors").unwrap_err();
    assert!(!err.is_bad_input(), "{err:?}");
    assert!(err.to_string().contains(&refused), "{err}");
    // git sources stay refused.
    for line in [
        "ADD https://github.com/moby/buildkit.git#v0.10.1 /src",
        "ADD --keep-git-dir https://github.com/moby/buildkit.git /src",
        "ADD git@github.com:moby/buildkit.git /src",
    ] {
        let ctx = f.context("git", &format!("FROM busybox:fixture\n{line}\n"), &[]);
        let err = f.build(&ctx, "errors").unwrap_err();
        assert!(matches!(err, BuildError::Unsupported(_)), "{line}: {err:?}");
    }
    assert!(!f.tagged("errors"));
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
}

fn archives_are_not_extracted(f: &Fixture) {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "inside.txt", &b"inside"[..])
        .unwrap();
    let archive = tar.into_inner().unwrap().finish().unwrap();
    f.server.put("archives/a.tar.gz", archive.clone(), None);
    let df = format!(
        "FROM busybox:fixture\nADD --checksum={} {} /dl/\n",
        sha256(&archive),
        f.server.url("archives/a.tar.gz")
    );
    let ctx = f.context("archives", &df, &[]);
    let (manifest, _) = f.build(&ctx, "archives").unwrap();
    let layer = f.layer(&manifest, 1);
    assert_eq!(file(&layer, "dl/a.tar.gz").body, archive);
    assert!(!layer.contains_key("dl/inside.txt"), "{:?}", layer.keys());
}

cairn_testsupport::suite_main![Fixture;
    downloads_to_a_dir_and_to_a_name,
    chown_and_chmod,
    checksum_pins_and_keys_the_download,
    checksum_mismatch_adds_nothing,
    checksum_flag_errors_are_input_errors,
    without_checksum_the_content_keys_the_step,
    http_errors_are_clear,
    archives_are_not_extracted,
];
