//! Builds through the library over a real store, as root and again as the
//! unprivileged test user (harness = false: `main` calls the init hook).

use cairn_build::{BuildRequest, Builder, StepOutcome};
use cairn_layer::Compression;
use cairn_sandbox::{init_hook, Launcher, Network};
use cairn_store::transport::Transport;
use cairn_store::Store;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = cairn_testsupport::store_with_busybox(tmp.path());
        Fixture { tmp, store }
    }

    fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        for (path, body) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        dir
    }

    /// Build; returns the manifest digest and which steps ran (not cached), by line.
    fn build(
        &self,
        context: &Path,
        args: &[(&str, &str)],
    ) -> Result<(String, Vec<usize>), cairn_build::BuildError> {
        let req = BuildRequest {
            dockerfile: std::fs::read_to_string(context.join("Dockerfile")).unwrap(),
            dockerfile_path: context.join("Dockerfile"),
            context: context.to_path_buf(),
            tags: vec!["localhost/test:latest".into()],
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            target: None,
            no_cache: false,
            compression: Compression::Gzip,
            timestamp: None,
            network: Network::Host,
        };
        let builder = Builder::new(&self.store, Launcher::current_exe().unwrap());
        let result = builder.build(&req, &mut |_| {})?;
        let ran = result
            .steps
            .iter()
            .filter(|s| s.outcome == StepOutcome::Ran)
            .map(|s| s.line)
            .collect();
        Ok((result.manifest.to_string(), ran))
    }

    fn config(&self, manifest: &str) -> Value {
        let (_, parsed) = self.store.manifest(&manifest.parse().unwrap()).unwrap();
        serde_json::from_slice(
            &self
                .store
                .read_blob_bytes(&parsed.config.unwrap().digest)
                .unwrap(),
        )
        .unwrap()
    }

    /// `umoci unpack` of the result, as a real peer reads it.
    fn unpack(&self, manifest: &str) -> PathBuf {
        let out = self.tmp.path().join(format!("export-{}", &manifest[7..19]));
        let bundle = self.tmp.path().join(format!("bundle-{}", &manifest[7..19]));
        self.store
            .export(
                manifest,
                &Transport::parse(&format!("oci:{}:t", out.display())).unwrap(),
            )
            .unwrap();
        let st = Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:t", out.display()))
            .arg(&bundle)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "umoci unpack failed");
        bundle.join("rootfs")
    }
}

const DOCKERFILE: &str = "FROM busybox:fixture
ARG FLAVOUR=plain
ENV GREETING=hello
WORKDIR /app
COPY a.txt ./
COPY dir/ /data/
RUN echo \"$GREETING $FLAVOUR\" > /app/out && rm /etc/nsswitch.conf
COPY b.txt /app/
LABEL org.example=yes
EXPOSE 8080
ENTRYPOINT [\"cat\"]
CMD [\"/app/out\"]
";

fn filesystem_and_config(f: &Fixture) {
    let ctx = f.context(
        "fs",
        DOCKERFILE,
        &[("a.txt", "A\n"), ("b.txt", "B\n"), ("dir/x/y.txt", "Y\n")],
    );
    let (manifest, _) = f.build(&ctx, &[]).unwrap();
    let root = f.unpack(&manifest);
    assert_eq!(
        std::fs::read_to_string(root.join("app/out")).unwrap(),
        "hello plain\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("app/a.txt")).unwrap(),
        "A\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("data/x/y.txt")).unwrap(),
        "Y\n",
        "COPY dir/ copies its contents"
    );
    assert!(!root.join("data/dir").exists());
    assert!(
        !root.join("etc/nsswitch.conf").exists(),
        "RUN deletion (whiteout) lost"
    );
    assert!(
        !root.join("etc/hosts").exists(),
        "mount stub /etc/hosts committed"
    );
    let cfg = f.config(&manifest);
    let c = &cfg["config"];
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Entrypoint"], serde_json::json!(["cat"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/app/out"]));
    assert_eq!(c["Labels"]["org.example"], "yes");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some());
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hello"));
    // FLAVOUR is an ARG: seen by RUN, not kept in the image.
    assert!(!c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().unwrap().starts_with("FLAVOUR")));
    let history = cfg["history"].as_array().unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|h| h.get("empty_layer").is_none())
            .count(),
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len()
    );
}

fn cache_reruns_exactly_what_changed(f: &Fixture) {
    // Content differs from filesystem_and_config's: the cache is shared by content.
    let ctx = f.context(
        "cache",
        DOCKERFILE,
        &[
            ("a.txt", "cache A\n"),
            ("b.txt", "B\n"),
            ("dir/x/y.txt", "Y\n"),
            (".dockerignore", "ignored.txt\n"),
        ],
    );
    let (first, ran) = f.build(&ctx, &[]).unwrap();
    assert!(!ran.is_empty());
    let (again, ran) = f.build(&ctx, &[]).unwrap();
    assert_eq!(ran, Vec::<usize>::new(), "unchanged rebuild executed steps");
    assert_eq!(first, again, "unchanged rebuild gave another image");

    // An ignored file changing reruns nothing.
    std::fs::write(ctx.join("ignored.txt"), "noise").unwrap();
    assert_eq!(f.build(&ctx, &[]).unwrap().1, Vec::<usize>::new());

    // b.txt is read by the COPY on line 8: that step reruns, nothing before it.
    std::fs::write(ctx.join("b.txt"), "B2\n").unwrap();
    assert_eq!(f.build(&ctx, &[]).unwrap().1, vec![8]);

    // a.txt changes the COPY on line 5, so the steps after it that make layers rerun.
    std::fs::write(ctx.join("a.txt"), "A2\n").unwrap();
    assert_eq!(f.build(&ctx, &[]).unwrap().1, vec![5, 6, 7, 8]);

    // A build arg reruns from the first step that sees it (line 5 onward: ARG is on line 2).
    let (_, ran) = f.build(&ctx, &[("FLAVOUR", "spicy")]).unwrap();
    assert_eq!(ran, vec![5, 6, 7, 8]);

    // Touching a file without changing it reruns nothing (mtimes are not in keys).
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(ctx.join("a.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(
        f.build(&ctx, &[("FLAVOUR", "spicy")]).unwrap().1,
        Vec::<usize>::new()
    );
}

fn failures_are_clear(f: &Fixture) {
    let ctx = f.context(
        "fail",
        "FROM busybox:fixture\nRUN echo boom && exit 3\n",
        &[],
    );
    let err = f.build(&ctx, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            cairn_build::BuildError::RunFailed {
                code: 3,
                line: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_bad_input());
    let ctx = f.context("missing", "FROM busybox:fixture\nCOPY nope.txt /\n", &[]);
    let err = f.build(&ctx, &[]).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("nope.txt"),
        "{err}"
    );
    let ctx = f.context("noimage", "FROM nosuch:image\n", &[]);
    assert!(f.build(&ctx, &[]).unwrap_err().is_bad_input());
    let ctx = f.context("syntax", "FROM busybox:fixture\nFROBNICATE x\n", &[]);
    let err = f.build(&ctx, &[]).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains(":2:"),
        "{err}"
    );
}

fn multi_stage_from_an_earlier_stage(f: &Fixture) {
    let df = "FROM busybox:fixture AS base\nRUN echo base > /base.txt\nFROM base\nRUN cat /base.txt > /copy.txt\n";
    let ctx = f.context("multi", df, &[]);
    let (manifest, _) = f.build(&ctx, &[]).unwrap();
    let root = f.unpack(&manifest);
    assert_eq!(
        std::fs::read_to_string(root.join("copy.txt")).unwrap(),
        "base\n"
    );
}

fn copy_from_keeps_owners_modes_and_links(f: &Fixture) {
    use std::os::unix::fs::MetadataExt;
    let df = "FROM busybox:fixture AS builder
RUN mkdir -p /out/sub && echo hi > /out/sub/f && ln /out/sub/f /out/sub/hard && cp /bin/busybox /out/suid && chmod 4755 /out/suid && chown -R 1000:1000 /out && chmod 4755 /out/suid && rm /etc/nsswitch.conf
FROM busybox:fixture
COPY --from=builder /out /dst
COPY --from=builder --chown=app:staff /out/sub/f /owned.txt
COPY --from=0 /etc/passwd /fromzero/
";
    let ctx = f.context("from", df, &[]);
    let (manifest, _) = f.build(&ctx, &[]).unwrap();
    let cfg = f.config(&manifest);
    let ids: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4, "base + three COPY layers");
    let layer = |i: usize| f.store.layer_dir(&ids[i].parse().unwrap());
    let mapping = cairn_sandbox::idmap::IdMapping::for_current_user();
    let dst = layer(1).join("dst");
    let file = std::fs::metadata(dst.join("sub/f")).unwrap();
    assert_eq!(
        Some(file.uid()),
        mapping.host_uid(1000),
        "COPY --from must keep owners"
    );
    assert_eq!(
        file.ino(),
        std::fs::metadata(dst.join("sub/hard")).unwrap().ino(),
        "hard link lost"
    );
    assert_eq!(
        std::fs::metadata(dst.join("suid")).unwrap().mode() & 0o7777,
        0o4755,
        "setuid lost"
    );
    let owned = std::fs::metadata(layer(2).join("owned.txt")).unwrap();
    assert_eq!(
        (Some(owned.uid()), Some(owned.gid())),
        (mapping.host_uid(1000), mapping.host_gid(50))
    );
    // Stage 0 deleted nsswitch.conf: the overlay view of its layers hides it.
    let err = f.build(&f.context("from-missing", "FROM busybox:fixture AS b\nRUN rm /etc/nsswitch.conf\nFROM busybox:fixture\nCOPY --from=b /etc/nsswitch.conf /x\n", &[]), &[]).unwrap_err();
    assert!(err.to_string().contains("nsswitch.conf"), "{err}");
    let _ = manifest;
}

fn main() {
    init_hook();
    let fixture = Fixture::new();
    cairn_testsupport::run_suite(
        &fixture,
        cairn_testsupport::test_cases![Fixture;
            filesystem_and_config,
            cache_reruns_exactly_what_changed,
            failures_are_clear,
            multi_stage_from_an_earlier_stage,
            copy_from_keeps_owners_modes_and_links,
        ],
    )
}
