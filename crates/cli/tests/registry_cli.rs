//! `cairn login/logout/push/pull` and `build --push` / `FROM` a registry,
//! through the real binary against a real registry, as root and rootless.

mod cli_env;

use cairn_testsupport::registry_server::RegistryServer;
use cli_env::*;
use std::process::Command;

fn skopeo_digest(reference: &str) -> String {
    skopeo_digest_with_creds(reference, "")
}

fn skopeo_digest_with_creds(reference: &str, creds: &str) -> String {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]);
    if !creds.is_empty() {
        cmd.args(["--creds", creds]);
    }
    let out = cmd.arg(format!("docker://{reference}")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

#[test]
fn login_push_pull_run_and_logout() {
    let reg = RegistryServer::start_with_auth("bob", "hunter2");
    for user in users() {
        let env = Env::new(user);
        let authfile = env.dir().join("auth.json");
        let authfile = authfile.to_str().unwrap();
        let who = user.unwrap_or("root");
        let dest = format!("{}/{who}/busybox:1", reg.host());

        // Without credentials the push is refused, exit 1, and says how to log in.
        let out = env.cairn(&["push", "--authfile", authfile, "busybox:fixture", &dest]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("cairn login"),
            "{}",
            text(&out.stderr)
        );

        // A wrong password is refused by login, and nothing is stored.
        let out = env.cairn(&[
            "login",
            "--authfile",
            authfile,
            "-u",
            "bob",
            "-p",
            "nope",
            &reg.host(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("rejected"),
            "{}",
            text(&out.stderr)
        );
        assert!(!std::path::Path::new(authfile).exists());

        let out = env.cairn(&[
            "login",
            "--authfile",
            authfile,
            "-u",
            "bob",
            "-p",
            "hunter2",
            &reg.host(),
        ]);
        ok(&out, "login");
        let pushed = ok(
            &env.cairn(&["push", "--authfile", authfile, "busybox:fixture", &dest]),
            "push",
        );
        let pushed = pushed.trim().to_string();
        assert_eq!(skopeo_digest_with_creds(&dest, "bob:hunter2"), pushed);

        // Pull into a fresh store and run from it (layers extracted on the way).
        let out = env.command(
            "env",
            &[
                &format!("CAIRN_STORE={}", env.dir().join("second").display()),
                env!("CARGO_BIN_EXE_cairn"),
                "pull",
                "--authfile",
                authfile,
                &dest,
            ],
        );
        assert_eq!(ok(&out, "pull").trim(), pushed);
        let out = env.command(
            "env",
            &[
                &format!("CAIRN_STORE={}", env.dir().join("second").display()),
                env!("CARGO_BIN_EXE_cairn"),
                "run",
                "--rm",
                &dest,
                "--",
                "cat",
                "/etc/hostname",
            ],
        );
        ok(&out, "run from the pulled image");

        let out = env.cairn(&["logout", "--authfile", authfile, &reg.host()]);
        ok(&out, "logout");
        let out = env.cairn(&["logout", "--authfile", authfile, &reg.host()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    }
}

#[test]
fn build_from_a_registry_image_and_push_the_result() {
    let reg = RegistryServer::start();
    for user in users() {
        let env = Env::new(user);
        let who = user.unwrap_or("root");
        let base = format!("{}/{who}/base:1", reg.host());
        ok(&env.cairn(&["push", "busybox:fixture", &base]), "push base");
        // A store that has never seen the base: FROM pulls it.
        let dockerfile =
            format!("FROM {base}\nRUN echo built > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n");
        let ctx = env.context_dir("ctx", &[("Dockerfile", &dockerfile)]);
        let app = format!("{}/{who}/app:1", reg.host());
        let out = env.command(
            "env",
            &[
                &format!("CAIRN_STORE={}", env.dir().join("fresh").display()),
                env!("CARGO_BIN_EXE_cairn"),
                "build",
                "-t",
                &app,
                "--push",
                ctx.to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let stdout = ok(&out, "build --push");
        // The pull of the base shows each blob's transfer (plain: when complete).
        assert!(
            stderr.matches("] pulled sha256:").count() >= 2,
            "no transfer lines for the FROM pull: {stderr}"
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        assert_eq!(lines[0], lines[1], "built and pushed digests");
        assert_eq!(skopeo_digest(&app), lines[0]);
    }
}

#[test]
fn bad_input_exits_2() {
    let reg = RegistryServer::start();
    let env = Env::new(None);
    for (args, needle) in [
        (
            vec!["pull".to_string(), format!("{}/no/such:1", reg.host())],
            "not found",
        ),
        (
            vec!["pull".into(), "team/UPPER:1".into()],
            "bad image reference",
        ),
        (
            vec![
                "pull".into(),
                "--platform".into(),
                "linux".into(),
                "x:1".into(),
            ],
            "os/architecture",
        ),
        (
            vec![
                "push".into(),
                "nosuch:1".into(),
                format!("{}/x/y:1", reg.host()),
            ],
            "nosuch",
        ),
        (
            vec![
                "push".into(),
                "busybox:fixture".into(),
                "--region".into(),
                "mars".into(),
                "--regions-file".into(),
                "/nonexistent.toml".into(),
            ],
            "nonexistent.toml",
        ),
        (
            vec![
                "login".into(),
                "-u".into(),
                "a".into(),
                "-p".into(),
                "b".into(),
                "not a host".into(),
            ],
            "not a registry",
        ),
        (
            vec![
                "push".into(),
                "--creds".into(),
                "nocolon".into(),
                "busybox:fixture".into(),
                "x:1".into(),
            ],
            "USER:PASSWORD",
        ),
    ] {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.cairn(&argv);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn push_to_two_regions() {
    let (eu, us) = (RegistryServer::start(), RegistryServer::start());
    let env = Env::new(None);
    let file = write_regions(&env, None, &[("eu", eu.host()), ("us", us.host())]);
    let f = file.to_str().unwrap();
    let out = env.cairn(&[
        "push",
        "busybox:fixture",
        "--region",
        "eu",
        "--region",
        "us",
        "--regions-file",
        f,
    ]);
    let stdout = ok(&out, "push to regions");
    assert_eq!(stdout.lines().count(), 2);
    let d = stdout.lines().next().unwrap();
    assert_eq!(
        skopeo_digest(&format!("{}/snap/busybox:fixture", eu.host())),
        d
    );
    assert_eq!(
        skopeo_digest(&format!("{}/snap/busybox:fixture", us.host())),
        d
    );
    // Again: nothing moves.
    let out = env.cairn(&[
        "push",
        "busybox:fixture",
        "--region",
        "eu",
        "--region",
        "us",
        "--regions-file",
        f,
    ]);
    ok(&out, "push again");
    assert_eq!(
        text(&out.stderr).matches("0 blobs uploaded").count(),
        2,
        "{}",
        text(&out.stderr)
    );
}

/// Every blob `data` file under the registry's storage.
fn registry_blob_files(reg: &RegistryServer) -> std::collections::BTreeSet<std::path::PathBuf> {
    let mut found = std::collections::BTreeSet::new();
    let mut dirs = vec![reg.storage_dir().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name() == Some("data".as_ref())
                && path.starts_with(reg.storage_dir().join("docker/registry/v2/blobs"))
            {
                found.insert(path);
            }
        }
    }
    found
}

fn dir_names(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Default::default(),
    }
}

#[test]
fn a_blob_failing_its_digest_after_streamed_extraction_leaves_no_layer_dir_and_no_blob() {
    let reg = RegistryServer::start();
    for user in users() {
        let env = Env::new(user);
        let who = user.unwrap_or("root");
        let base = format!("{}/{who}/base:1", reg.host());
        ok(&env.cairn(&["push", "busybox:fixture", &base]), "push base");
        let before = registry_blob_files(&reg);
        let ctx = env.context_dir(
            "ctx",
            &[
                (
                    "Dockerfile",
                    "FROM busybox:fixture\nCOPY payload /payload\n",
                ),
                ("payload", &"streamed payload\n".repeat(4096)),
            ],
        );
        let image = format!("{}/{who}/tampered:1", reg.host());
        ok(
            &env.cairn(&["build", "-t", &image, ctx.to_str().unwrap()]),
            "build",
        );
        ok(&env.cairn(&["push", &image, &image]), "push");
        // The new gzip blob is the COPY layer. Its gzip header's OS byte
        // changed: the same archive (the diff id checks out, extraction
        // runs to its end) in different bytes, which only the blob's
        // digest check at the end can refuse.
        let layer = registry_blob_files(&reg)
            .difference(&before)
            .find(|p| std::fs::read(p).unwrap().starts_with(&[0x1f, 0x8b]))
            .cloned()
            .unwrap();
        let hex = layer.parent().unwrap().file_name().unwrap();
        let hex = hex.to_str().unwrap().to_string();
        let mut body = std::fs::read(&layer).unwrap();
        body[9] ^= 1;
        std::fs::write(&layer, &body).unwrap();

        let fresh = Env::new(user);
        // The base's layer dir is made first: the pull adds nothing to it.
        ok(
            &fresh.cairn(&["run", "--rm", "busybox:fixture", "true"]),
            "run",
        );
        let layers_before = dir_names(&fresh.store.join("layers"));
        let out = fresh.cairn(&["pull", &image]);
        assert!(!out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(&hex), "{}", text(&out.stderr));
        let store = &fresh.store;
        assert!(!store.join("blobs/sha256").join(&hex).exists());
        let layers_after = dir_names(&store.join("layers"));
        let new: Vec<_> = layers_after.difference(&layers_before).collect();
        assert!(new.is_empty(), "{new:?}");
        let leftovers = dir_names(&store.join("tmp"));
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let images = text(&fresh.cairn(&["images"]).stdout);
        assert!(!images.contains("tampered"), "{images}");
    }
}

/// A layer extracted while it downloaded has no tree digest taken at
/// adoption: its marker names the blob, and `fsck --full` compares the dir
/// with a fresh extraction of that blob, so a change is still found.
#[test]
fn fsck_full_checks_a_streamed_layer_against_its_blob() {
    let reg = RegistryServer::start();
    for user in users() {
        let env = Env::new(user);
        let who = user.unwrap_or("root");
        let ctx = env.context_dir(
            "ctx",
            &[
                ("Dockerfile", "FROM busybox:fixture\nCOPY data /data\n"),
                ("data", &"checked by fsck\n".repeat(1000)),
            ],
        );
        let image = format!("{}/{who}/checked:1", reg.host());
        ok(
            &env.cairn(&["build", "-t", &image, ctx.to_str().unwrap()]),
            "build",
        );
        ok(&env.cairn(&["push", &image, &image]), "push");

        let fresh = Env::new(user);
        ok(&fresh.cairn(&["pull", &image]), "pull");
        let layers = fresh.store.join("layers");
        // The COPY's layer, by its content (the base's layer is in the
        // store already; its marker names its blob too).
        let marker = std::fs::read_dir(&layers)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.extension() == Some("complete".as_ref())
                    && p.with_extension("").join("data").is_file()
            })
            .expect("the COPY's layer is extracted");
        for entry in std::fs::read_dir(&layers).unwrap() {
            let p = entry.unwrap().path();
            if p.extension() == Some("complete".as_ref()) {
                let body = std::fs::read_to_string(&p).unwrap();
                assert!(body.contains("\"blob\""), "{}: {body}", p.display());
            }
        }
        let dir = marker.with_extension("");
        assert_eq!(
            ok(&fresh.cairn(&["fsck", "--full"]), "fsck --full").trim(),
            "ok"
        );
        // As root (the test runner), change the file behind cairn's back.
        std::fs::write(dir.join("data"), "changed\n").unwrap();
        let out = fresh.cairn(&["fsck", "--full"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert!(
            text(&out.stdout).contains(&dir.display().to_string()),
            "{}",
            text(&out.stdout)
        );
        let leftovers = dir_names(&fresh.store.join("tmp"));
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
