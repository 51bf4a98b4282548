//! The image config bytes a build writes, pinned: each case builds a
//! Dockerfile over a hand-written base (a Docker-written config with
//! Healthcheck, OnBuild, Shell, ArgsEscaped and fields Cairn does not know)
//! with `--timestamp`, and compares the config blob byte for byte, and the
//! manifest digest, with files captured from the code before the typed
//! `ImageConfig` replaced the JSON wrapper (issue 17). A changed byte is a
//! changed image digest for every user. `UPDATE_GOLDEN=1` rewrites them.
//! Root and rootless (harness = false: `main` calls the init hook).

use cairn_builder::Builder;
use cairn_layer::{Compression, Digest};
use cairn_sandbox::{init_hook, Launcher};
use cairn_store::reference::ImageRef;
use cairn_store::transport::Transport;
use cairn_store::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

mod common;

/// A Docker-written config (docker 24 `docker inspect` shape) with no layers.
const DOCKER_BASE: &str = r##"{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","BASE=1"],"Cmd":["sh"],"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":30000000000,"Retries":3},"ArgsEscaped":true,"Image":"sha256:0000000000000000000000000000000000000000000000000000000000000001","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":["LABEL from.onbuild=yes"],"Labels":{"base":"yes"},"Shell":["/bin/sh","-c"],"io.example.unknown":{"b":1,"a":[true,null,1.5]}},"container":"abc","container_config":{"Hostname":"abc","Cmd":["/bin/sh","-c","#(nop) ","CMD [\"sh\"]"]},"created":"2024-01-02T03:04:05.123456789Z","docker_version":"24.0.7","history":[{"created":"2024-01-02T03:04:05.123456789Z","created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true,"comment":"from docker"}],"os":"linux","rootfs":{"type":"layers","diff_ids":[]},"moby.buildkit.buildinfo.v1":"e30="}"##;

/// A bare config: no `config` object, no history.
const BARE_BASE: &str =
    r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

/// Every config instruction over the Docker base (its ONBUILD trigger runs).
const FULL: &str = r#"FROM base:docker
ARG V=1
ENV A=$V B="x y"
ENV BASE=2
LABEL l1=v1 "l 2"="v 2"
MAINTAINER someone <s@example.com>
WORKDIR /app
WORKDIR sub
USER 1000:1000
EXPOSE 80 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=2s --start-period=1s --start-interval=1s --retries=4 CMD curl -f x
SHELL ["/bin/bash", "-c"]
CMD echo hi
ENTRYPOINT ["/bin/app"]
ONBUILD RUN echo later
COPY f /f
"#;

/// From scratch: a layer, exec CMD kept by a later ENTRYPOINT, no healthcheck.
const SCRATCH: &str = r#"FROM scratch
ENV Z=1
COPY f /f
CMD ["x"]
ENTRYPOINT /bin/run me
HEALTHCHECK NONE
"#;

/// Over a bare base: ENTRYPOINT resets the (absent) CMD to null.
const BARE: &str = r#"FROM base:bare
ENTRYPOINT ["/e"]
LABEL k=v
"#;

const CASES: [(&str, &str); 3] = [("full", FULL), ("scratch", SCRATCH), ("bare", BARE)];

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        for (name, config) in [("base:docker", DOCKER_BASE), ("base:bare", BARE_BASE)] {
            let layout = layout_of(tmp.path(), name, config);
            let source = Transport::parse(&format!("oci:{}:t", layout.display())).unwrap();
            store
                .import(&source, Some(&ImageRef::parse(name).unwrap()))
                .unwrap();
        }
        Fixture { tmp, store }
    }
}

/// An OCI layout holding one image with `config` and no layers.
fn layout_of(root: &Path, name: &str, config: &str) -> PathBuf {
    let dir = root.join(format!("layout-{}", name.replace(':', "-")));
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d, bytes.len())
    };
    let (cd, cs) = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[]}}"#
    );
    let (md, ms) = put(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#
    );
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config-golden")
}

/// Build each case and compare its config bytes and manifest digest.
fn configs_are_byte_identical(f: &Fixture) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, dockerfile) in CASES {
        let ctx = common::write_context(f.tmp.path(), name, dockerfile, &[("f", "file\n")]);
        std::fs::set_permissions(ctx.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut req = common::request(&ctx, &format!("localhost/golden-{name}:1"));
        req.timestamp = Some(1_700_000_000);
        req.compression = Compression::None;
        let result = Builder::new(&f.store, Launcher::current_exe().unwrap())
            .build(&req, &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_, parsed) = f.store.manifest(&result.manifest).unwrap();
        let config = f
            .store
            .read_blob_bytes(&parsed.config.unwrap().digest)
            .unwrap();
        let (cfg_path, digest_path) = (
            golden_dir().join(format!("{name}.json")),
            golden_dir().join(format!("{name}.digest")),
        );
        if update {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&cfg_path, &config).unwrap();
            std::fs::write(&digest_path, format!("{}\n", result.manifest)).unwrap();
            continue;
        }
        let want = std::fs::read(&cfg_path).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&config),
            String::from_utf8_lossy(&want),
            "{name}: config bytes changed"
        );
        let want_digest = std::fs::read_to_string(&digest_path).unwrap();
        assert_eq!(
            result.manifest.to_string(),
            want_digest.trim(),
            "{name}: manifest digest changed"
        );
    }
}

cairn_testsupport::suite_main!(Fixture; configs_are_byte_identical);
