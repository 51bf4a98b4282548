//! `cairn run` as docker users type it: no `--` needed, exit 125 for
//! Cairn's own errors, -d/--name/--entrypoint/--env-file/-v/-m/--cpus/-i/-t,
//! as root and rootless, through the real binary.

mod cli_env;

use cli_env::*;
use std::process::Command;

#[test]
fn run_takes_the_command_after_the_image() {
    for user in users() {
        let env = Env::new(user);
        let out = env.cairn(&["run", "--rm", "busybox:fixture", "echo", "hi"]);
        assert_eq!(ok(&out, "run without --"), "hi\n");
        // Options after the image are the command's, not Cairn's.
        let out = env.cairn(&["run", "--rm", "busybox:fixture", "ls", "-d", "/etc"]);
        assert_eq!(ok(&out, "run ls -d"), "/etc\n");
        let out = env.cairn(&[
            "run",
            "--rm",
            "busybox:fixture",
            "sh",
            "-c",
            "echo $0",
            "--rm",
        ]);
        assert_eq!(ok(&out, "run sh -c"), "--rm\n");
        // `--` is still accepted.
        let out = env.cairn(&["run", "--rm", "busybox:fixture", "--", "echo", "dashed"]);
        assert_eq!(ok(&out, "run --"), "dashed\n");
    }
}

#[test]
fn cairns_own_errors_exit_125_and_the_commands_pass_through() {
    for user in users() {
        let env = Env::new(user);
        let code = |args: &[&str]| env.cairn(args).status.code();
        let out = env.cairn(&["run", "nosuch:1", "true"]);
        assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("nosuch"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            code(&["run", "--bogus-flag", "busybox:fixture", "true"]),
            Some(125)
        );
        assert_eq!(
            code(&["run", "--network", "bogus", "busybox:fixture"]),
            Some(125)
        );
        assert_eq!(
            code(&["run", "--rm", "-m", "lots", "busybox:fixture", "true"]),
            Some(125)
        );
        assert_eq!(
            code(&[
                "run",
                "--rm",
                "-v",
                "named:/data",
                "busybox:fixture",
                "true"
            ]),
            Some(125)
        );
        assert_eq!(
            code(&["run", "--rm", "busybox:fixture", "sh", "-c", "exit 2"]),
            Some(2)
        );
        assert_eq!(
            code(&["run", "--rm", "busybox:fixture", "sh", "-c", "exit 125"]),
            Some(125)
        );
        assert_eq!(
            code(&["run", "--rm", "busybox:fixture", "no-such-command"]),
            Some(127)
        );
        assert_eq!(
            code(&["run", "--rm", "busybox:fixture", "/etc/passwd"]),
            Some(126)
        );
        // Other commands keep exit 2 for bad input.
        assert_eq!(code(&["rmi", "nosuch:1"]), Some(2));
    }
}

#[test]
fn entrypoint_env_file_and_volumes() {
    for user in users() {
        let env = Env::new(user);
        let out = env.cairn(&[
            "run",
            "--rm",
            "--entrypoint",
            "echo",
            "busybox:fixture",
            "a",
            "b",
        ]);
        assert_eq!(ok(&out, "--entrypoint"), "a b\n");

        let envfile = env.dir().join("vars.env");
        std::fs::write(&envfile, "# a comment\n\nA=1\nB=two words\nC=from file\n").unwrap();
        let out = env.cairn(&[
            "run",
            "--rm",
            "--env-file",
            envfile.to_str().unwrap(),
            "-e",
            "C=from flag",
            "busybox:fixture",
            "sh",
            "-c",
            "echo \"$A|$B|$C\"",
        ]);
        assert_eq!(ok(&out, "--env-file"), "1|two words|from flag\n");
        let out = env.cairn(&[
            "run",
            "--rm",
            "--env-file",
            "/nonexistent.env",
            "busybox:fixture",
            "true",
        ]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("reading the env file /nonexistent.env: not found"),
            "{}",
            text(&out.stderr)
        );

        let vol = env.subdir("vol");
        std::fs::write(vol.join("in"), "from host\n").unwrap();
        // As root, container root is a subordinate ID (as with Docker's
        // userns-remap): a root-owned host dir is not its to write, so the
        // test opens the dir to everyone, as a user of -v would have to.
        std::fs::set_permissions(&vol, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let spec = format!("{}:/mnt/v", vol.display());
        let out = env.cairn(&[
            "run",
            "--rm",
            "-v",
            &spec,
            "busybox:fixture",
            "sh",
            "-c",
            "cat /mnt/v/in; echo back > /mnt/v/out",
        ]);
        assert_eq!(ok(&out, "-v"), "from host\n");
        assert_eq!(std::fs::read_to_string(vol.join("out")).unwrap(), "back\n");
        let ro = format!("{}:/mnt/v:ro", vol.display());
        let out = env.cairn(&[
            "run",
            "--rm",
            "--volume",
            &ro,
            "busybox:fixture",
            "sh",
            "-c",
            "echo x > /mnt/v/ro",
        ]);
        assert_ne!(out.status.code(), Some(0));
        assert!(!vol.join("ro").exists(), "a :ro volume was written");
    }
}

#[test]
fn limits_are_accepted_with_docker_units() {
    for user in users() {
        let env = Env::new(user);
        let out = env.cairn(&[
            "run",
            "--rm",
            "--cpus",
            "1.5",
            "-m",
            "512m",
            "--name",
            "lim",
            "busybox:fixture",
            "true",
        ]);
        // Applied where a delegated cgroup v2 offers the controllers, else a warning says why.
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        if stderr.contains("not applied") {
            assert!(stderr.contains("memory=0.5GB"), "{stderr}");
        }
    }
}

#[test]
fn detached_run_names_a_sandbox_with_logs() {
    for user in users() {
        let env = Env::new(user);
        let out = env.cairn(&[
            "run",
            "-d",
            "--name",
            "bg",
            "busybox:fixture",
            "sh",
            "-c",
            "echo started; echo oops >&2; exit 7",
        ]);
        let id = ok(&out, "run -d").trim().to_string();
        assert_eq!(id.len(), 24, "{id}");
        // The detached command runs on its own; wait for its exit code.
        let mut state = String::new();
        for _ in 0..200 {
            let out = env.cairn(&[
                "inspect",
                "--format",
                "{{.state}} {{.exit_code}} {{.id}}",
                "bg",
            ]);
            state = ok(&out, "inspect").trim().to_string();
            if state.starts_with("exited") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(state, format!("exited 7 {id}"));
        let logs = ok(&env.cairn(&["logs", "bg"]), "logs");
        assert!(logs.contains("started") && logs.contains("oops"), "{logs}");
        // The name is taken while the sandbox lives, and it lives on for exec.
        assert_eq!(
            env.cairn(&["run", "--name", "bg", "busybox:fixture", "true"])
                .status
                .code(),
            Some(125)
        );
        let out = env.cairn(&["sandbox", "exec", "bg", "--", "echo", "still here"]);
        assert_eq!(ok(&out, "exec"), "still here\n");
        ok(&env.cairn(&["sandbox", "rm", &id]), "rm");
        assert_eq!(
            env.cairn(&["inspect", "--type", "sandbox", "bg"])
                .status
                .code(),
            Some(2)
        );
    }
}

#[test]
fn stdin_only_with_i_and_a_pty_with_t() {
    for user in users() {
        let env = Env::new(user);
        let out = env.cairn_at(
            env.dir(),
            b"typed\n",
            &["run", "--rm", "-i", "busybox:fixture", "cat"],
        );
        assert_eq!(ok(&out, "run -i"), "typed\n");
        let out = env.cairn_at(
            env.dir(),
            b"typed\n",
            &["run", "--rm", "busybox:fixture", "cat"],
        );
        assert_eq!(
            ok(&out, "run without -i"),
            "",
            "stdin reached a command without -i"
        );

        let probe = "test -t 0 && echo in; test -t 1 && echo out; test -t 2 && echo err; true";
        let out = env.cairn(&["run", "--rm", "busybox:fixture", "sh", "-c", probe]);
        assert_eq!(ok(&out, "no -t"), "");
        let out = env.cairn(&["run", "--rm", "-t", "busybox:fixture", "sh", "-c", probe]);
        // A terminal's line discipline turns \n into \r\n.
        assert_eq!(ok(&out, "-t"), "in\r\nout\r\nerr\r\n");
        // -i -t wants a terminal on stdin, as docker's does.
        let out = env.cairn_at(
            env.dir(),
            b"x\n",
            &["run", "--rm", "-i", "-t", "busybox:fixture", "cat"],
        );
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("not a TTY"),
            "{}",
            text(&out.stderr)
        );
        // On a terminal (script's pty), typed input reaches the command.
        let line = format!(
            "{} run --rm -i -t busybox:fixture sh -c 'read x; echo got $x'",
            env!("CARGO_BIN_EXE_cairn")
        );
        let out = env.cairn_at_cmd("script", b"typed\n", &["-qec", &line, "/dev/null"]);
        assert!(
            text(&out.stdout).contains("got typed"),
            "{}",
            text(&out.stdout)
        );
    }
}

/// `SCRIPT` run by script(1) on a pseudo-terminal of its own; what the terminal saw.
fn on_a_pty(env: &Env, script: &str) -> String {
    let out = env.cairn_at_cmd("script", b"", &["-qec", script, "/dev/null"]);
    assert!(out.status.success(), "{script}: {}", text(&out.stdout));
    text(&out.stdout)
}

#[test]
fn t_makes_the_pty_the_commands_controlling_terminal() {
    let cairn = env!("CARGO_BIN_EXE_cairn");
    for user in users() {
        let env = Env::new(user);
        // The terminal has a name, our size, and belongs to the command's
        // session, whose process group is in the foreground (job control).
        let probe =
            "tty; stty size; read pid comm state ppid pgrp sid tty tpgid rest </proc/self/stat; \
                     echo ids $pid $pgrp $sid $tpgid tty=$tty";
        let shown = on_a_pty(
            &env,
            &format!("stty rows 33 cols 77; {cairn} run --rm -t busybox:fixture sh -c '{probe}'"),
        );
        // (Two terminals, each turning \n into \r\n.)
        let lines: Vec<&str> = shown.lines().map(str::trim_end).collect();
        assert!(lines.contains(&"/dev/console"), "{shown:?}");
        assert!(lines.contains(&"33 77"), "{shown:?}");
        let ids: Vec<&str> = lines
            .iter()
            .find_map(|l| l.strip_prefix("ids "))
            .unwrap_or_else(|| panic!("{shown:?}"))
            .split_whitespace()
            .collect();
        assert!(
            ids[..4].iter().all(|id| *id == ids[0]) && ids[4] != "tty=0",
            "pid, pgrp, session, terminal's foreground group, terminal: {ids:?}"
        );

        // A resize of our terminal reaches the command as SIGWINCH and a new
        // size. (Our stdout is a pipe here: the size comes from stdin.)
        let waiter = "trap \"stty size; exit 0\" WINCH; echo ready; i=0; \
                      while [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; echo no-winch";
        let shown = on_a_pty(
            &env,
            &format!(
                "stty rows 20 cols 60; {cairn} run --rm -t busybox:fixture sh -c '{waiter}' | \
                 while read -r l; do echo \"$l\"; case \"$l\" in ready*) stty rows 50 cols 120 </dev/tty;; esac; done"
            ),
        );
        assert!(shown.contains("50 120"), "no resize seen: {shown:?}");
    }
}

#[test]
fn run_help_shows_the_docker_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    assert!(
        help.contains("cairn run [OPTIONS] IMAGE [COMMAND [ARG...]]"),
        "{help}"
    );
    for flag in [
        "--detach",
        "--interactive",
        "--tty",
        "--name",
        "--entrypoint",
        "--env-file",
        "--volume",
        "--cpus",
        "--memory",
    ] {
        assert!(help.contains(flag), "{flag} missing from run --help");
    }
}

#[test]
fn sandbox_exec_takes_the_command_without_dashes() {
    let env = Env::new(None);
    let out = env.cairn(&["sandbox", "create", "--name", "ex", "busybox:fixture"]);
    ok(&out, "create");
    let out = env.cairn(&["sandbox", "exec", "ex", "ls", "-d", "/etc"]);
    assert_eq!(ok(&out, "exec without --"), "/etc\n");
    let out = env.cairn(&[
        "sandbox", "exec", "-e", "A=1", "ex", "--", "sh", "-c", "echo $A",
    ]);
    assert_eq!(ok(&out, "exec with --"), "1\n");
}
