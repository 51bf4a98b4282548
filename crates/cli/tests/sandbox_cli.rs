//! `cairn run` and `cairn sandbox` driven through the real binary, as root
//! and (when scripts/setup-test-env.sh has created it) as the unprivileged
//! test user with a subordinate ID range.

mod cli_env;

use cli_env::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn host_processes(pattern: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-a", "-f", pattern])
        .output()
        .unwrap();
    text(&out.stdout)
}

#[test]
fn sandbox_lifecycle_through_the_cli() {
    for user in users() {
        let env = Env::new(user);
        let out = env.cairn(&[
            "sandbox",
            "create",
            "busybox:fixture",
            "--name",
            "dev",
            "--cpu",
            "2",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let id = stdout.lines().last().unwrap().to_string();
        assert_eq!(
            id.len(),
            24,
            "the last line of create is the id alone: {stdout:?}"
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("applied") || stderr.is_empty(),
            "cpu limit neither applied nor reported: {stderr}"
        );
        let record: serde_json::Value =
            serde_json::from_slice(&env.cairn(&["sandbox", "ls", "--format", "json"]).stdout)
                .unwrap();
        let v1 = record[0]["v1_cgroups"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if record[0]["cgroup"].is_null() && !v1 {
            assert!(
                stderr.contains("limit not applied: cpu=2: "),
                "cpu limit not reported as not applied: {stderr}"
            );
        }

        let out = env.cairn(&[
            "sandbox",
            "exec",
            "dev",
            "--",
            "sh",
            "-c",
            "echo kept > /state; echo bob:x:1234:1234::/tmp:/bin/sh >> /etc/passwd",
        ]);
        assert!(out.status.success(), "{:?}: {}", user, text(&out.stderr));
        let out = env.cairn(&[
            "sandbox",
            "exec",
            "-u",
            "bob",
            &id[..8],
            "--",
            "sh",
            "-c",
            "cat /state; id -u",
        ]);
        assert_eq!(text(&out.stdout), "kept\n1234\n", "{}", text(&out.stderr));

        let out = env.cairn(&["sandbox", "commit", "dev", "localhost/dev:1"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = env.cairn(&["run", "--rm", "localhost/dev:1", "--", "cat", "/state"]);
        assert_eq!(text(&out.stdout), "kept\n", "{}", text(&out.stderr));

        let out = env.cairn(&["sandbox", "ls", "--format", "json"]);
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            listed.as_array().map(Vec::len),
            Some(1),
            "run --rm left a sandbox behind"
        );
        let out = env.cairn(&["sandbox", "rm", "dev"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = env.cairn(&["fsck"]);
        assert!(out.status.success(), "{}", text(&out.stdout));
    }
}

#[test]
fn exit_codes_follow_docker() {
    for user in users() {
        let env = Env::new(user);
        let code = |args: &[&str]| env.cairn(args).status.code();
        assert_eq!(
            code(&[
                "run",
                "--rm",
                "busybox:fixture",
                "--",
                "sh",
                "-c",
                "exit 42"
            ]),
            Some(42)
        );
        assert_eq!(
            code(&["run", "--rm", "busybox:fixture", "--", "no-such-command"]),
            Some(127)
        );
        assert_eq!(
            code(&["run", "--rm", "busybox:fixture", "--", "/etc/passwd"]),
            Some(126)
        );
        assert_eq!(
            code(&[
                "run",
                "--rm",
                "-u",
                "ghost",
                "busybox:fixture",
                "--",
                "true"
            ]),
            Some(125)
        );
        assert_eq!(
            code(&[
                "run",
                "--rm",
                "-w",
                "/etc/passwd",
                "busybox:fixture",
                "--",
                "true"
            ]),
            Some(125)
        );
        // Cairn's own errors in `run` exit 125, as docker's (issue 20).
        let out = env.cairn(&["run", "--rm", "no-such-image:1"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("no-such-image"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            code(&["run", "--rm", "--network", "bogus", "busybox:fixture"]),
            Some(125)
        );
        assert_eq!(code(&["sandbox", "exec", "nope", "--", "true"]), Some(2));
    }
}

#[test]
fn network_none_cannot_reach_a_host_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    // Accept and hang up at once, so a client that got through finishes.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    for user in users() {
        let env = Env::new(user);
        let probe = format!("echo x | nc -w 1 127.0.0.1 {port} && echo reached");
        let out = env.cairn(&[
            "run",
            "--rm",
            "--timeout",
            "10",
            "--network",
            "none",
            "busybox:fixture",
            "--",
            "sh",
            "-c",
            &probe,
        ]);
        assert!(
            !text(&out.stdout).contains("reached"),
            "--network none reached the host"
        );
        let out = env.cairn(&[
            "run",
            "--rm",
            "--timeout",
            "10",
            "busybox:fixture",
            "--",
            "sh",
            "-c",
            &probe,
        ]);
        assert!(
            text(&out.stdout).contains("reached"),
            "host network could not reach the host: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn prune_removes_sandboxes_whose_owner_died() {
    for user in users() {
        let env = Env::new(user);
        // A `run --rm` killed before it can clean up after itself.
        let cairn = env!("CARGO_BIN_EXE_cairn");
        let mut cmd = match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", cairn]);
                c
            }
            None => Command::new(cairn),
        };
        let mut child = cmd
            .args(["run", "--rm", "busybox:fixture", "--", "sleep", "4322"])
            .env("CAIRN_STORE", &env.store)
            .current_dir("/tmp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sandboxes = env.store.join("sandboxes");
        let deadline = Instant::now() + Duration::from_secs(30);
        let owner = loop {
            let owner = std::fs::read_dir(&sandboxes).ok().and_then(|entries| {
                entries.flatten().find_map(|e| {
                    let bytes = std::fs::read(e.path().join("sandbox.json")).ok()?;
                    let r: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
                    r["owner"]["pid"].as_u64()
                })
            });
            if let Some(pid) = owner.filter(|_| !host_processes("sleep 4322").is_empty()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "the sandbox never started");
            std::thread::sleep(Duration::from_millis(50));
        };
        let st = Command::new("kill")
            .args(["-9", &owner.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let _ = child.wait();
        // Its processes die with their owner (parent-death signals)...
        let deadline = Instant::now() + Duration::from_secs(5);
        while !host_processes("sleep 4322").is_empty() {
            assert!(
                Instant::now() < deadline,
                "sandbox processes outlived their owner: {}",
                host_processes("sleep 4322")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // ...and prune removes what is left of the sandbox.
        assert_eq!(std::fs::read_dir(&sandboxes).unwrap().count(), 1);
        let out = env.cairn(&["prune"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("Removed 1 sandbox(es) whose owner process is gone"),
            "{}",
            text(&out.stdout)
        );
        assert_eq!(std::fs::read_dir(&sandboxes).unwrap().count(), 0);
        let out = env.cairn(&["sandbox", "ls", "--format", "json"]);
        assert_eq!(text(&out.stdout).trim(), "[]");
        let out = env.cairn(&["fsck"]);
        assert!(out.status.success(), "{}", text(&out.stdout));
    }
}

#[test]
fn single_id_fallback_warns_and_explains_a_failed_chown() {
    let Some(user) = cairn_testsupport::norange_user() else {
        eprintln!("note: skipped (needs root to create a user without a subordinate range)");
        return;
    };
    let user: &'static str = Box::leak(user.into_boxed_str());
    let env = Env::new(Some(user));
    let out = env.cairn(&["sandbox", "create", "busybox:fixture", "--name", "solo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("no subordinate ID range for {user}"))
            && stderr.contains("usermod --add-subuids"),
        "{stderr}"
    );
    let out = env.cairn(&[
        "sandbox",
        "exec",
        "solo",
        "--",
        "sh",
        "-c",
        "echo ok > /f && cat /f && id -u",
    ]);
    assert_eq!(text(&out.stdout), "ok\n0\n", "{}", text(&out.stderr));
    let out = env.cairn(&[
        "sandbox",
        "exec",
        "solo",
        "--",
        "sh",
        "-c",
        "touch /x && chown 1000 /x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Invalid argument") && stderr.contains("usermod --add-subuids"),
        "{stderr}"
    );
    let out = env.cairn(&["sandbox", "rm", "solo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `sandbox rm` takes names, never paths: an absolute path, `..` or a path
/// below the sandboxes dir is refused with exit 2 and nothing is deleted.
#[test]
fn sandbox_rm_of_a_path_deletes_nothing() {
    for user in users() {
        let env = Env::new(user);
        let victim = env.dir().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), "x").unwrap();
        let out = env.cairn(&["sandbox", "create", "busybox:fixture", "--name", "dev"]);
        let id = ok(&out, "create").trim().to_string();
        let sandboxes = env.store.join("sandboxes");
        for arg in [
            victim.to_str().unwrap(),
            "..",
            ".",
            "../layers",
            "/",
            &format!("{id}/upper"),
            "",
        ] {
            let out = env.cairn(&["sandbox", "rm", arg]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "rm {arg:?}: {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stderr).contains("cannot name a sandbox"),
                "rm {arg:?}: {}",
                text(&out.stderr)
            );
            let out = env.cairn(&["sandbox", "exec", arg, "--", "true"]);
            assert_eq!(out.status.code(), Some(2), "exec {arg:?}");
        }
        assert!(
            victim.join("keep").is_file(),
            "sandbox rm deleted a host dir"
        );
        assert!(sandboxes.join(&id).join("sandbox.json").is_file());
        assert!(env.store.join("meta.db").is_file(), "the store was wiped");
        let out = env.cairn(&["sandbox", "ls", "--format", "json"]);
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.as_array().map(Vec::len), Some(1));
        // An unknown name is bad input too, and a second sandbox may not take
        // a name already in use.
        let out = env.cairn(&["sandbox", "rm", "nosuch"]);
        assert_eq!(out.status.code(), Some(2));
        let out = env.cairn(&["sandbox", "create", "busybox:fixture", "--name", "dev"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        ok(&env.cairn(&["sandbox", "rm", "dev"]), "rm dev");
        ok(&env.cairn(&["fsck"]), "fsck");
    }
}
