//! `cairn run` and `cairn sandbox` driven through the real binary, as root
//! and (when scripts/setup-test-env.sh has created it) as the unprivileged
//! test user with a subordinate ID range.

mod cli_env;

use cli_env::*;

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
        assert!(
            text(&out.stderr).contains("not applied"),
            "cpu limit not reported as not applied"
        );

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
        let out = env.cairn(&["run", "--rm", "no-such-image:1"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out.stderr).contains("no-such-image"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            code(&["run", "--rm", "--network", "bogus", "busybox:fixture"]),
            Some(2)
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
