//! The docker/podman/buildah habits of issue 20 beyond `run`: `build`
//! defaults and flags, `inspect`, `history`, `images -q`, `rmi -f`,
//! `logout --all`, `version`, `info`, completions and man pages.

mod cli_env;

use cli_env::*;
use std::process::Command;

fn cairn_plain(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn build_finds_its_context_and_containerfile() {
    for user in users() {
        let env = Env::new(user);
        // A directory with only a Containerfile, built from inside it with no argument.
        let ctx = env.subdir("ctx");
        std::fs::write(
            ctx.join("Containerfile"),
            "FROM busybox:fixture\nRUN echo built > /m\n",
        )
        .unwrap();
        let out = env.cairn_at(&ctx, b"", &["build", "-q", "-t", "local/cf:1"]);
        let digest = ok(&out, "build in a Containerfile dir");
        assert!(
            digest.starts_with("sha256:") && digest.lines().count() == 1,
            "-q printed {digest:?}"
        );
        assert_eq!(text(&out.stderr), "", "-q printed progress");
        let out = env.cairn(&["run", "--rm", "local/cf:1", "cat", "/m"]);
        assert_eq!(ok(&out, "run the build"), "built\n");

        // No Dockerfile at all: the message says what Cairn was doing, exit 2.
        let empty = env.subdir("empty");
        let out = env.cairn_at(&empty, b"", &["build"]);
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert!(
            err.contains("reading the Dockerfile")
                && err.contains("Containerfile")
                && err.contains("context"),
            "{err}"
        );
        assert!(!err.contains("os error"), "raw io text: {err}");

        // -f - reads the Dockerfile from stdin; --iidfile gets the digest.
        let iid = env.dir().join("iid");
        let out = env.cairn_at(
            &empty,
            b"FROM busybox:fixture\nENV FROM_STDIN=1\n",
            &["build", "-f", "-", "--iidfile", iid.to_str().unwrap(), "."],
        );
        let digest = ok(&out, "build -f -");
        assert_eq!(std::fs::read_to_string(&iid).unwrap(), digest.trim());
        let out = env.cairn(&["inspect", "--format", "{{.Config.Env}}", digest.trim()]);
        assert!(ok(&out, "inspect").contains("FROM_STDIN=1"));
    }
}

#[test]
fn build_labels_annotations_pull_policy_and_json() {
    let env = Env::new(None);
    let ctx = env.subdir("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:fixture\nLABEL from.file=yes\n",
    )
    .unwrap();
    let out = env.cairn_at(
        &ctx,
        b"",
        &[
            "build",
            "--label",
            "org.example.team=core",
            "--annotation",
            "org.opencontainers.image.source=https://example.com/x",
            "-t",
            "local/lab:1",
            "--format",
            "json",
            "--progress",
            "plain",
            ".",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&ok(&out, "build --label")).unwrap();
    let digest = report["digest"].as_str().unwrap().to_string();
    assert_eq!(report["tags"][0], "local/lab:1");
    assert!(report["size"].as_u64().unwrap() > 0);
    assert!(report["seconds"].as_f64().is_some());
    let out = env.cairn(&["inspect", "local/lab:1"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "inspect")).unwrap();
    assert_eq!(
        v[0]["Id"],
        digest.as_str(),
        "the tag points at the labelled image"
    );
    assert_eq!(v[0]["Config"]["Labels"]["org.example.team"], "core");
    assert_eq!(v[0]["Config"]["Labels"]["from.file"], "yes");
    assert_eq!(v[0]["ImageConfig"]["config"]["Labels"]["from.file"], "yes");
    // Docker's templates, as docker users write them.
    let format = |t: &str| ok(&env.cairn(&["inspect", "--format", t, "local/lab:1"]), t);
    let labels = "{{index .Config.Labels \"org.example.team\"}}";
    assert_eq!(format(labels), "core\n");
    let env_lines = format("{{range .Config.Env}}{{println .}}{{end}}");
    assert!(
        env_lines.starts_with("PATH=") && env_lines.ends_with("\n\n"),
        "{env_lines:?}"
    );
    let user = "{{if .Config.User}}{{.Config.User}}{{else}}root{{end}} {{.Os}}";
    assert_eq!(format(user), "root linux\n");
    let layers = "{{len .RootFS.diff_ids}} {{join .Config.Cmd \",\"}}";
    assert!(format(layers).starts_with("1 "), "{}", format(layers));
    let out = env.cairn(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{nope .}}",
        "local/lab:1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("column 22: unknown function \"nope\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        v[0]["Manifest"]["annotations"]["org.opencontainers.image.source"],
        "https://example.com/x"
    );
    ok(&env.cairn(&["fsck"]), "fsck after relabel");

    // --pull=never: a FROM image missing from the store is an error, not a pull.
    std::fs::write(ctx.join("Dockerfile"), "FROM 127.0.0.1:9/nowhere/none:1\n").unwrap();
    let out = env.cairn_at(&ctx, b"", &["build", "--pull=never", "."]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nowhere/none"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        env.cairn_at(&ctx, b"", &["build", "--pull=sometimes", "."])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn inspect_history_images_q_and_rmi_f() {
    let env = Env::new(None);
    let out = env.cairn(&["inspect", "busybox:fixture"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "inspect")).unwrap();
    assert_eq!(v[0]["Type"], "image");
    assert_eq!(v[0]["Names"][0], "docker.io/library/busybox:fixture");
    assert!(v[0]["Manifest"]["layers"].is_array());
    let id = v[0]["Id"].as_str().unwrap();
    let out = env.cairn(&[
        "inspect",
        "-f",
        "{{.Id}} {{json .Names}}",
        "busybox:fixture",
    ]);
    assert_eq!(
        ok(&out, "inspect -f"),
        format!("{id} [\"docker.io/library/busybox:fixture\"]\n")
    );
    assert_eq!(
        env.cairn(&["inspect", "-f", "{{.Id", "busybox:fixture"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        env.cairn(&["inspect", "nothing-by-this-name"])
            .status
            .code(),
        Some(2)
    );

    let out = env.cairn(&["history", "--format", "json", "busybox:fixture"]);
    let h: serde_json::Value = serde_json::from_str(&ok(&out, "history")).unwrap();
    assert!(h[0]["created_by"].as_str().unwrap().contains("busybox"));
    assert!(h[0]["size"].as_u64().unwrap() > 0);

    let out = env.cairn(&["images", "-q"]);
    assert_eq!(ok(&out, "images -q"), format!("{id}\n"));
    assert_eq!(env.cairn(&["rmi", "nosuch:1"]).status.code(), Some(2));
    ok(
        &env.cairn(&["rmi", "-f", "nosuch:1"]),
        "rmi -f of a missing name",
    );
    ok(&env.cairn(&["rmi", "-f", "busybox:fixture"]), "rmi -f");
    let out = env.cairn(&["images", "--format", "json"]);
    assert!(
        !ok(&out, "images").contains("busybox:fixture"),
        "rmi -f left the name"
    );
}

#[test]
fn logout_all_forgets_every_registry() {
    let env = Env::new(None);
    let auth = env.dir().join("auth.json");
    let auth = auth.to_str().unwrap();
    for host in ["127.0.0.1:5999", "localhost:5998"] {
        ok(
            &env.cairn(&[
                "login",
                "--no-verify",
                "--authfile",
                auth,
                "-u",
                "u",
                "-p",
                "p",
                host,
            ]),
            "login",
        );
    }
    let out = env.cairn(&["logout", "--all", "--authfile", auth]);
    ok(&out, "logout --all");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(auth).unwrap()).unwrap();
    assert_eq!(doc["auths"].as_object().map_or(0, |m| m.len()), 0, "{doc}");
    assert_eq!(
        env.cairn(&["logout", "--authfile", auth]).status.code(),
        Some(2)
    );
}

#[test]
fn version_and_info_report_this_machine() {
    let out = cairn_plain(&["version", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "version")).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    // What the machine is, found independently of Cairn.
    let hybrid = std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for user in users() {
        let env = Env::new(user);
        let out = env.cairn(&["info", "--format", "json"]);
        let info: serde_json::Value = serde_json::from_str(&ok(&out, "info")).unwrap();
        let want = if v2 {
            "v2"
        } else if hybrid {
            "hybrid"
        } else {
            "v1"
        };
        assert_eq!(info["cgroups"]["version"], want, "{info}");
        if hybrid {
            assert!(info["cgroups"]["v1_controllers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "memory"));
        }
        assert_eq!(info["host"]["rootless"], user.is_some());
        assert_eq!(info["store"]["path"], env.store.to_str().unwrap());
        // Overlay in a user namespace, tried by hand with unshare(1) as the same user.
        let dir = env.subdir("ovl");
        let script = format!(
            "cd {0} && mkdir -p l u w m && mount -t overlay overlay -o lowerdir={0}/l,upperdir={0}/u,workdir={0}/w {0}/m",
            dir.display()
        );
        let by_hand = env
            .command("unshare", &["-Urm", "sh", "-c", &script])
            .status
            .success();
        assert_eq!(info["userns"]["overlay_in_userns"], by_hand, "{info}");
        assert_eq!(info["userns"]["user_namespace"], true);
        if let Some(u) = user {
            let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
            let start: u64 = subuid
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{u}:")))
                .and_then(|r| r.split(':').next())
                .and_then(|s| s.parse().ok())
                .unwrap();
            assert_eq!(info["ids"]["single_id"], false, "{info}");
            assert_eq!(info["ids"]["uid_map"][1]["host"], start, "{info}");
        }
        let out = env.cairn(&["info"]);
        assert!(ok(&out, "info text").contains("overlay_in_userns"));
    }
}

#[test]
fn completions_and_man_pages_are_generated() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cairn"),
        ("fish", "complete -c cairn"),
    ] {
        let out = cairn_plain(&["completion", shell]);
        let script = ok(&out, shell);
        assert!(
            script.contains(marker),
            "{shell}: {}",
            &script[..200.min(script.len())]
        );
        assert!(
            script.contains("entrypoint") && script.contains("snapshot"),
            "{shell}"
        );
    }
    assert_eq!(cairn_plain(&["completion", "tcsh"]).status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    ok(
        &cairn_plain(&["__docs", "--man", dir.path().to_str().unwrap()]),
        "man pages",
    );
    for page in [
        "cairn.1",
        "cairn-run.1",
        "cairn-build.1",
        "cairn-sandbox-exec.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let run = std::fs::read_to_string(dir.path().join("cairn-run.1")).unwrap();
    assert!(run.contains("entrypoint"));
}

#[test]
fn docs_cli_md_is_generated_from_clap() {
    let out = cairn_plain(&["__docs"]);
    let generated = ok(&out, "__docs");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(checked_in == generated, "docs/cli.md is stale: run `UPDATE_GOLDEN=1 cargo test --release -p cairn-cli --test habits_cli docs_cli_md`");
}

#[test]
fn every_argument_has_help_and_short_flags_mean_one_thing() {
    let out = cairn_plain(&["__docs"]);
    let reference = ok(&out, "__docs");
    // Every argument row has a meaning.
    for line in reference.lines().filter(|l| l.starts_with("| `")) {
        let meaning = line
            .rsplit(" | ")
            .next()
            .unwrap_or("")
            .trim_end_matches(" |")
            .trim();
        assert!(!meaning.is_empty() && meaning != "|", "no help: {line}");
    }
    // -e is --env wherever it appears, except snapshot create/push (the seed's -e is --entrypoint).
    let mut section = String::new();
    for line in reference.lines() {
        if let Some(s) = line.strip_prefix("## `") {
            section = s.trim_end_matches('`').to_string();
        }
        if line.starts_with("| `-e, ") {
            let snapshot = section.starts_with("cairn snapshot");
            assert!(
                line.starts_with("| `-e, --env")
                    || snapshot && line.starts_with("| `-e, --entrypoint"),
                "{section}: {line}"
            );
        }
    }
}

#[test]
fn store_flag_shows_only_where_a_store_is_used() {
    for sub in ["parse", "login", "logout", "version", "completion"] {
        let help = ok(&cairn_plain(&[sub, "--help"]), sub);
        assert!(
            !help.contains("--store"),
            "{sub} --help shows --store:\n{help}"
        );
    }
    for sub in ["build", "images", "run", "prune"] {
        let help = ok(&cairn_plain(&[sub, "--help"]), sub);
        assert!(
            help.contains("--store"),
            "{sub} --help lacks --store:\n{help}"
        );
    }
}

/// `cairn ... | head -1`: a reader that goes away ends the command quietly
/// with 141 (128 + SIGPIPE), as shell tools do, not with a panic report.
#[test]
fn a_closed_stdout_ends_quietly() {
    let store = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["snapshot", "list"])
        .env("CAIRN_STORE", store.path().join("store"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the command prints its table.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "status {:?}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "a broken pipe printed a report"
    );
}
