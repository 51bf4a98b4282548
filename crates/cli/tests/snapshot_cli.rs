//! `cairn snapshot` through the real binary: create from a Dockerfile, an
//! image, a local image and a sandbox; start sandboxes from snapshots;
//! delete under a running sandbox; regions; output formats; a build killed
//! mid-way. As root and as the unprivileged test user.

mod cli_env;

use cairn_testsupport::registry_server::RegistryServer;
use cli_env::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn write_ctx(env: &Env, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    env.context_dir(name, files)
}

fn get_json(env: &Env, key: &str) -> serde_json::Value {
    let out = env.cairn(&["snapshot", "get", key, "--format", "json"]);
    serde_json::from_str(&ok(&out, "snapshot get")).unwrap()
}

#[test]
fn dockerfile_snapshot_to_sandbox_and_back() {
    for user in users() {
        let env = Env::new(user);
        let ctx = write_ctx(
            &env,
            "proj",
            &[
                ("Dockerfile", "FROM busybox:fixture\nCOPY app/ /app/\nRUN echo built > /built && echo hello-from-run\nENTRYPOINT [\"sh\"]\n"),
                ("app/run.sh", "echo app\n"),
                ("unrelated.bin", "not in the context"),
            ],
        );
        let df = ctx.join("Dockerfile");
        let out = env.cairn(&[
            "snapshot",
            "create",
            "web:1.0.0",
            "-f",
            df.to_str().unwrap(),
            "--cpu",
            "2",
        ]);
        ok(&out, "create from a Dockerfile");
        assert!(
            text(&out.stderr).contains("RUN echo built"),
            "build log streamed: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("| hello-from-run"),
            "RUN output streamed: {}",
            text(&out.stderr)
        );
        let kept = ok(
            &env.cairn(&["snapshot", "log", "web:1.0.0"]),
            "snapshot log",
        );
        assert!(
            kept.contains("| hello-from-run") && kept.contains("is active"),
            "{kept}"
        );
        let snap = get_json(&env, "web");
        assert_eq!(snap["state"], "active");
        assert_eq!(snap["cpu"], 2);
        assert_eq!(snap["entrypoint"], serde_json::json!(["sh"]));
        assert_eq!(snap["buildInfo"]["sourceKind"], "dockerfile");
        assert!(snap["size"].as_u64().unwrap() > 0);

        // A second version; NAME alone means the highest.
        ok(
            &env.cairn(&[
                "snapshot",
                "create",
                "web:1.10.0",
                "-f",
                df.to_str().unwrap(),
            ]),
            "create 1.10.0",
        );
        assert_eq!(get_json(&env, "web")["name"], "web:1.10.0");
        // The same name:version again is refused.
        let out = env.cairn(&[
            "snapshot",
            "create",
            "web:1.0.0",
            "-f",
            df.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

        // Sandbox from the snapshot; change it; commit it as a snapshot; a
        // new sandbox from that one sees the change.
        let out = env.cairn(&["snapshot", "sandbox", "web:1.0.0"]);
        let sb = ok(&out, "snapshot sandbox")
            .trim()
            .lines()
            .last()
            .unwrap()
            .to_string();
        ok(
            &env.cairn(&[
                "sandbox",
                "exec",
                &sb,
                "--",
                "sh",
                "-c",
                "cat /built /app/run.sh && echo changed > /state",
            ]),
            "exec",
        );
        assert!(get_json(&env, "web:1.0.0")["lastUsedAt"].is_string());
        ok(
            &env.cairn(&["snapshot", "commit", &sb, "--name", "web-dev:1"]),
            "commit a sandbox",
        );
        let out = env.cairn(&["snapshot", "sandbox", "web-dev:1"]);
        let sb2 = ok(&out, "sandbox from committed")
            .trim()
            .lines()
            .last()
            .unwrap()
            .to_string();
        let out = env.cairn(&["sandbox", "exec", &sb2, "--", "cat", "/state"]);
        assert_eq!(ok(&out, "exec in the second sandbox"), "changed\n");

        // Deleting the snapshot leaves the running sandbox alone; new ones are refused.
        ok(&env.cairn(&["snapshot", "delete", "web:1.0.0"]), "delete");
        let out = env.cairn(&["sandbox", "exec", &sb, "--", "cat", "/built"]);
        assert_eq!(ok(&out, "exec after delete"), "built\n");
        let out = env.cairn(&["snapshot", "sandbox", "web:1.0.0"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        ok(&env.cairn(&["prune"]), "prune");
        let out = env.cairn(&["sandbox", "exec", &sb, "--", "cat", "/built"]);
        assert_eq!(ok(&out, "exec after prune"), "built\n");
        for s in [&sb, &sb2] {
            ok(&env.cairn(&["sandbox", "rm", s]), "sandbox rm");
        }
        ok(&env.cairn(&["snapshot", "delete", "--all"]), "delete --all");
        let out = env.cairn(&["snapshot", "list", "--format", "json"]);
        let page: serde_json::Value = serde_json::from_str(&ok(&out, "list")).unwrap();
        assert_eq!(page["total"], 0);
    }
}

#[test]
fn formats_orgs_and_bad_input() {
    let env = Env::new(None);
    ok(
        &env.cairn(&[
            "snapshot",
            "push",
            "busybox:fixture",
            "--name",
            "base:1",
            "-e",
            "sleep 1000",
        ]),
        "push",
    );
    let json_out = ok(
        &env.cairn(&["snapshot", "list", "--format", "json"]),
        "list json",
    );
    let page: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    let yaml_out = ok(
        &env.cairn(&["snapshot", "list", "--format", "yaml"]),
        "list yaml",
    );
    let yaml: serde_json::Value = serde_norway::from_str(&yaml_out).unwrap();
    assert_eq!(page, yaml, "JSON and YAML carry the same fields and values");
    let item = &page["items"][0];
    for field in [
        "id",
        "name",
        "organizationId",
        "general",
        "state",
        "imageName",
        "size",
        "entrypoint",
        "cpu",
        "gpu",
        "mem",
        "disk",
        "buildInfo",
        "regionIds",
        "createdAt",
        "updatedAt",
        "lastUsedAt",
    ] {
        assert!(item.get(field).is_some(), "field {field} missing: {item}");
    }
    assert_eq!(page["page"], 1);
    assert_eq!(page["limit"], 100);
    assert_eq!(item["entrypoint"], serde_json::json!(["sleep", "1000"]));

    // Another organization sees nothing of ours and cannot delete it.
    let other = |args: &[&str]| {
        let mut a = vec!["snapshot", "--org", "other"];
        a.extend_from_slice(&args[1..]);
        env.cairn(&a)
    };
    let out = other(&["snapshot", "list", "--format", "json"]);
    let page: serde_json::Value = serde_json::from_str(&ok(&out, "other list")).unwrap();
    assert_eq!(page["total"], 0);
    for args in [
        vec!["snapshot", "get", "base:1"],
        vec!["snapshot", "delete", "base:1"],
    ] {
        let out = other(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("not found"),
            "{}",
            text(&out.stderr)
        );
    }

    for (args, needle) in [
        (vec!["snapshot", "create", "x:1"], "--dockerfile"),
        (
            vec!["snapshot", "create", "x:1", "-f", "/nonexistent/Dockerfile"],
            "nonexistent",
        ),
        (
            vec!["snapshot", "create", "x:1", "-f", "Dockerfile", "-e", "sh"],
            "cannot be used with",
        ),
        (
            vec![
                "snapshot",
                "create",
                "x:1",
                "-i",
                "busybox:fixture",
                "--cpu",
                "0",
            ],
            "cpu=0",
        ),
        (
            vec![
                "snapshot",
                "create",
                "x:1",
                "-i",
                "busybox:fixture",
                "--region",
                "mars",
            ],
            "mars",
        ),
        (vec!["snapshot", "list", "--state", "sleepy"], "sleepy"),
        (vec!["snapshot", "list", "--page", "0"], "page"),
        (vec!["snapshot", "get", "nosuch"], "not found"),
        (
            vec!["snapshot", "push", "nosuch:1", "--name", "n:1"],
            "nosuch",
        ),
    ] {
        let out = env.cairn(&args);
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
fn a_build_killed_midway_is_reported_build_failed() {
    let env = Env::new(None);
    let ctx = write_ctx(
        &env,
        "slow",
        &[("Dockerfile", "FROM busybox:fixture\nRUN sleep 30\n")],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "snapshot",
            "create",
            "slow:1",
            "-f",
            ctx.join("Dockerfile").to_str().unwrap(),
        ])
        .env("CAIRN_STORE", &env.store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the record says building, then kill the builder outright.
    let mut building = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let out = env.cairn(&["snapshot", "list", "--format", "json"]);
        if text(&out.stdout).contains("\"building\"") {
            building = true;
            break;
        }
    }
    assert!(building, "never saw the snapshot building");
    child.kill().unwrap();
    child.wait().unwrap();
    let snap = get_json(&env, "slow:1");
    assert_eq!(snap["state"], "build_failed", "{snap}");
    let out = env.cairn(&["snapshot", "sandbox", "slow:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn regions_with_two_registries() {
    let (eu, us) = (RegistryServer::start(), RegistryServer::start());
    let env = Env::new(None);
    let regions = write_regions(&env, Some("eu"), &[("eu", eu.host()), ("us", us.host())]);
    let rf = regions.to_str().unwrap();
    // No --region: the default one.
    let out = env.cairn(&[
        "snapshot",
        "--regions-file",
        rf,
        "push",
        "busybox:fixture",
        "--name",
        "base:1",
    ]);
    ok(&out, "push to the default region");
    let snap = get_json(&env, "base:1");
    assert_eq!(snap["regionIds"], serde_json::json!(["eu"]));
    let image = snap["imageName"].as_str().unwrap().to_string();
    assert!(
        image.starts_with(&format!("{}/snap/default/base:1-", eu.host())),
        "{image}"
    );
    assert!(us.blob_digests().is_empty());

    // Both regions at once.
    let out = env.cairn(&[
        "snapshot",
        "--regions-file",
        rf,
        "create",
        "both:1",
        "-i",
        "busybox:fixture",
        "--region",
        "eu",
        "--region",
        "us",
    ]);
    ok(&out, "create in two regions");
    assert_eq!(
        get_json(&env, "both:1")["regionIds"],
        serde_json::json!(["eu", "us"])
    );
    assert!(!us.blob_digests().is_empty());

    // A sandbox in a region that lacks the snapshot makes it available there first.
    let out = env.cairn(&[
        "snapshot",
        "--regions-file",
        rf,
        "sandbox",
        "base:1",
        "--region",
        "us",
    ]);
    let sb = ok(&out, "sandbox in region us")
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert_eq!(
        get_json(&env, "base:1")["regionIds"],
        serde_json::json!(["eu", "us"])
    );
    let pushed = us.blob_digests();
    assert!(!pushed.is_empty());
    ok(&env.cairn(&["sandbox", "rm", &sb]), "rm");
}
