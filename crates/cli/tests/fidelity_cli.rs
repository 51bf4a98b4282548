//! Fidelity round 2 through the binary (issue 15): a relative context and
//! store (`cd ctx && cairn build .`, with a bind mount reaching the sandbox
//! helper), `cairn build --platform` picking a registry base's platform, and
//! the seed CLI's refusals in `snapshot create`. As root and as the
//! unprivileged test user.

mod cli_env;

use cairn::registry::Platform;
use cairn_store::Digest;
use cairn_testsupport::registry_server::RegistryServer;
use cli_env::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn context(env: &Env, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let all: Vec<(&str, &str)> = [("Dockerfile", dockerfile)]
        .into_iter()
        .chain(files.iter().copied())
        .collect();
    env.context_dir(name, &all)
}

/// `cd dir && cairn ARGS` as the env's user.
fn cairn_in(env: &Env, dir: &Path, args: &[&str]) -> Output {
    let mut script = format!(
        "cd '{}' && exec '{}'",
        dir.display(),
        env!("CARGO_BIN_EXE_cairn")
    );
    for a in args {
        script.push_str(&format!(" '{a}'"));
    }
    env.command("sh", &["-c", &script])
}

#[test]
fn relative_context_and_store() {
    for user in users() {
        let env = Env::new(user);
        let ctx = context(
            &env,
            "relctx",
            "FROM busybox:fixture\nRUN --mount=type=bind,target=/ctx cat /ctx/f.txt > /copied\nCOPY f.txt /f\n",
            &[("f.txt", "from the context\n")],
        );
        let out = cairn_in(
            &env,
            &ctx,
            &["build", "--progress", "plain", "-t", "rel:1", "."],
        );
        ok(&out, "build of . from inside the context");
        // The store given relative too, from its parent dir.
        let out = cairn_in(
            &env,
            env.dir(),
            &[
                "--store",
                "store",
                "build",
                "--no-cache",
                "-t",
                "rel:2",
                "relctx",
            ],
        );
        ok(&out, "build with a relative --store and context");
        let out = env.cairn(&["run", "--rm", "rel:2", "--", "cat", "/copied"]);
        assert_eq!(ok(&out, "run"), "from the context\n");
    }
}

/// The busybox fixture as a two-platform index (an arm64 twin of the
/// manifest, same blobs), pushed to `reg`; the (amd64, arm64) digests.
fn push_two_platform_base(dir: &Path, reg: &RegistryServer, name: &str) -> (String, String) {
    let layout = cairn_testsupport::busybox_layout(&dir.join("two-platform"));
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let amd = read(&layout.join("index.json"))["manifests"][0].clone();
    let amd_digest = amd["digest"].as_str().unwrap().to_string();
    let mut arm = read(&blob(&amd_digest));
    arm["annotations"] = serde_json::json!({"test.platform": "arm64"});
    let arm_bytes = serde_json::to_vec(&arm).unwrap();
    let arm_digest = Digest::of(&arm_bytes).to_string();
    std::fs::write(blob(&arm_digest), &arm_bytes).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd_digest,
             "size": std::fs::metadata(blob(&amd_digest)).unwrap().len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_digest,
             "size": arm_bytes.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_digest = Digest::of(&index_bytes).to_string();
    std::fs::write(blob(&index_digest), &index_bytes).unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest,
         "size": index_bytes.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", layout.display()))
        .arg(format!("docker://{}/{name}", reg.host()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    (amd_digest, arm_digest)
}

/// The digest the store holds under a name containing `name`.
fn stored_digest(env: &Env, name: &str) -> String {
    let out = env.cairn(&["images", "--format", "json"]);
    let images: serde_json::Value = serde_json::from_str(&ok(&out, "images")).unwrap();
    images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["names"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n.as_str().unwrap().contains(name)))
        })
        .unwrap_or_else(|| panic!("no image named {name}: {images}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The image config of store image `image`, read from an export of it.
fn config_of(env: &Env, image: &str) -> serde_json::Value {
    let dir = env
        .dir()
        .join(format!("export-{}", image.replace(':', "-")));
    let out = env.cairn(&["export", image, &format!("oci:{}:t", dir.display())]);
    ok(&out, "export");
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |d: &serde_json::Value| {
        dir.join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let index = read(dir.join("index.json"));
    let manifest = read(blob(&index["manifests"][0]["digest"]));
    read(blob(&manifest["config"]["digest"]))
}

#[test]
fn build_platform_picks_the_registry_base() {
    let reg = RegistryServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (amd, arm) = push_two_platform_base(tmp.path(), &reg, "multi/busybox:1");
    let host = Platform::host();
    for user in users() {
        let env = Env::new(user);
        let ctx = context(
            &env,
            "platform",
            &format!(
                "FROM {}/multi/busybox:1\nARG TARGETPLATFORM\nLABEL t=$TARGETPLATFORM\n",
                reg.host()
            ),
            &[],
        );
        let ctx = ctx.to_str().unwrap();
        let out = env.cairn(&["build", "--platform", "linux/arm64", "-t", "p:arm", ctx]);
        ok(&out, "build --platform linux/arm64");
        assert_eq!(stored_digest(&env, "multi/busybox"), arm);
        let cfg = config_of(&env, "p:arm");
        assert_eq!(cfg["architecture"], "arm64");
        assert_eq!(cfg["config"]["Labels"]["t"], "linux/arm64");
        // Without --platform: this machine's platform.
        let out = env.cairn(&["rmi", &format!("{}/multi/busybox:1", reg.host())]);
        ok(&out, "rmi the base");
        let out = env.cairn(&["build", "-t", "p:host", ctx]);
        ok(&out, "build for the host");
        if host.architecture == "amd64" {
            assert_eq!(stored_digest(&env, "multi/busybox"), amd);
        }
        let out = env.cairn(&["build", "--platform", "linux", ctx]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("--platform"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn snapshot_create_refuses_what_the_seed_refuses() {
    let env = Env::new(None);
    let ctx = context(&env, "snapctx", "FROM busybox:fixture\n", &[]);
    let df = ctx.join("Dockerfile");
    let df = df.to_str().unwrap();
    let out = env.cairn(&[
        "snapshot",
        "create",
        "s1",
        "-i",
        "busybox:fixture",
        "-c",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--context goes with --dockerfile"),
        "{}",
        text(&out.stderr)
    );
    for args in [
        vec!["snapshot", "create", "s2", "-f", df, "-e", "sh"],
        vec![
            "snapshot",
            "create",
            "s3",
            "-f",
            df,
            "-c",
            ctx.to_str().unwrap(),
            "--entrypoint",
            "sh",
        ],
    ] {
        let out = env.cairn(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("put ENTRYPOINT in the Dockerfile"),
            "{}",
            text(&out.stderr)
        );
    }
    // Nothing was recorded by the refusals.
    let out = env.cairn(&["snapshot", "list", "--format", "json"]);
    let listed = ok(&out, "list");
    for name in ["s1:", "s2:", "s3:"] {
        assert!(!listed.contains(name), "{listed}");
    }
}

#[test]
fn snapshot_sandbox_by_language_needs_the_operator_table() {
    let env = Env::new(None);
    let out = env.cairn(&["snapshot", "sandbox", "--language", "python"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no general snapshot for language \"python\""),
        "{}",
        text(&out.stderr)
    );
}
