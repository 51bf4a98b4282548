//! Pull and push progress: transfer bars on a terminal (driven through a
//! pseudo-terminal with script(1)), none when piped; `--format json`
//! results; `--log-level` / `RUST_LOG` reach the library's tracing.

mod cli_env;

use cairn_testsupport::registry_server::RegistryServer;
use cli_env::*;

/// `cairn ARGS` on a pty (script's), its output as the terminal saw it.
fn on_a_pty(env: &Env, args: &[&str]) -> String {
    on_a_pty_with(env, &[], args)
}

/// [`on_a_pty`] with `vars` (`NAME=VALUE`) in cairn's environment.
fn on_a_pty_with(env: &Env, vars: &[&str], args: &[&str]) -> String {
    let line = std::iter::once("env".to_string())
        .chain(vars.iter().map(|v| format!("'{v}'")))
        .chain(std::iter::once(env!("CARGO_BIN_EXE_cairn").to_string()))
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = env.cairn_at_cmd("script", b"", &["-qec", &line, "/dev/null"]);
    assert!(out.status.success(), "{line}: {}", text(&out.stdout));
    text(&out.stdout)
}

#[test]
fn transfer_bars_on_a_terminal_only() {
    let reg = RegistryServer::start();
    for user in users() {
        let env = Env::new(user);
        let who = user.unwrap_or("root");
        let dest = format!("{}/{who}/progress:1", reg.host());

        let shown = on_a_pty(&env, &["push", "busybox:fixture", &dest]);
        assert!(
            shown.contains("total:") && shown.contains("\x1b["),
            "no push bars: {shown:?}"
        );
        assert!(shown.contains("done"), "{shown:?}");

        let shown = on_a_pty(&env, &["pull", &dest]);
        assert!(
            shown.contains("total:") && shown.contains("/s"),
            "no pull bars: {shown:?}"
        );

        // Piped: the summary line only, no bars, no escapes.
        let out = env.cairn(&["push", "busybox:fixture", &dest]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("total:") && !err.contains('\x1b'), "{err:?}");
        let out = env.cairn(&["pull", &dest]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            !err.contains("total:") && !err.contains('\x1b') && err.contains("pulled"),
            "{err:?}"
        );

        // --quiet: nothing on stderr even on a terminal; the digest on stdout.
        let shown = on_a_pty(&env, &["pull", "-q", &dest]);
        assert!(
            !shown.contains("total:") && shown.trim().starts_with("sha256:"),
            "{shown:?}"
        );
    }
}

/// The transfer lines whose bar is neither empty nor full: a blob caught
/// part of the way.
fn partial_bars(shown: &str) -> Vec<&str> {
    shown
        .split(['\n', '\r'])
        .filter(|l| {
            let Some(bar) = l.split_once(": [").and_then(|(_, r)| r.split_once(']')) else {
                return false;
            };
            bar.0.len() == 24 && bar.0.starts_with('=') && bar.0.ends_with(' ')
        })
        .collect()
}

#[test]
fn push_shows_the_bytes_of_a_big_layer_as_they_go() {
    use std::io::Read;
    // A registry per push: pushed to one, the layer would be mounted from
    // the repository that has it instead of sent again.
    let regs: Vec<RegistryServer> = (0..3).map(|_| RegistryServer::start()).collect();
    for user in users() {
        let env = Env::new(user);
        let who = user.unwrap_or("root");
        // 12 MiB that gzip cannot shrink: one layer of about that size.
        let ctx = env.context_dir("big", &[("Dockerfile", "FROM scratch\nCOPY blob /blob\n")]);
        let mut noise = vec![0u8; 12 << 20];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut noise)
            .unwrap();
        std::fs::write(ctx.join("blob"), &noise).unwrap();
        env.give_to_user(&ctx);
        let ctx = ctx.to_str().unwrap();
        ok(
            &env.cairn(&["build", "-q", "-t", "big:1", ctx]),
            "build big:1",
        );

        // One PUT read 1 MiB at a time, then chunked PATCHes of 4 MiB: both
        // show the layer part-way, with its rate.
        let chunked = vec!["CAIRN_MONOLITHIC_MAX=1048576"];
        for (reg, how, vars) in [(&regs[0], "mono", vec![]), (&regs[1], "chunked", chunked)] {
            let dest = format!("{}/{who}/{how}:1", reg.host());
            let shown = on_a_pty_with(&env, &vars, &["push", "big:1", &dest]);
            let partial = partial_bars(&shown);
            assert!(
                !partial.is_empty(),
                "{how}: no layer shown part-way: {shown:?}"
            );
            assert!(
                partial
                    .iter()
                    .any(|l| l.contains("MiB /") && l.contains("/s")),
                "{how}: {partial:?}"
            );
        }

        // Piped: a plain line per blob as it ends, no bars, no escapes.
        let dest = format!("{}/{who}/piped:1", regs[2].host());
        let out = env.cairn(&["push", "big:1", &dest]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            partial_bars(&err).is_empty() && !err.contains('\x1b') && !err.contains("total:"),
            "{err:?}"
        );
        assert!(
            err.contains("12.0 MiB in "),
            "no plain line for the layer: {err:?}"
        );
    }
}

#[test]
fn pull_and_push_report_json() {
    let reg = RegistryServer::start();
    let env = Env::new(None);
    let dest = format!("{}/json/busybox:1", reg.host());
    let out = env.cairn(&["push", "--format", "json", "busybox:fixture", &dest]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "push --format json")).unwrap();
    assert_eq!(v["destination"], dest.as_str());
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(v["bytes_uploaded"].as_u64().unwrap() > 0);
    let out = env.cairn(&["pull", "--format", "json", &dest]);
    let p: serde_json::Value = serde_json::from_str(&ok(&out, "pull --format json")).unwrap();
    assert_eq!(p["digest"], v["digest"]);
    assert!(p["seconds"].as_f64().is_some());
}

#[test]
fn log_level_shows_the_librarys_tracing() {
    let env = Env::new(None);
    // A limit that cannot be applied is a library warning: seen at the default level.
    let quiet = env.cairn(&[
        "--log-level",
        "error",
        "run",
        "--rm",
        "--cpus",
        "1",
        "busybox:fixture",
        "true",
    ]);
    let default = env.cairn(&["run", "--rm", "--cpus", "1", "busybox:fixture", "true"]);
    let applied = !text(&default.stderr).contains("not applied");
    if !applied {
        assert!(
            text(&default.stderr).contains("WARN"),
            "{}",
            text(&default.stderr)
        );
        assert!(
            !text(&quiet.stderr).contains("not applied"),
            "{}",
            text(&quiet.stderr)
        );
    }
    // RUST_LOG wins over --log-level: info shows the FROM auto-pull notice.
    let reg = RegistryServer::start();
    let dest = format!("{}/logs/busybox:1", reg.host());
    ok(&env.cairn(&["push", "busybox:fixture", &dest]), "push");
    let ctx = env.subdir("ctx");
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {dest}\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["build", "--progress", "plain", "."])
        .env("CAIRN_STORE", &env.store)
        .env("RUST_LOG", "info")
        .current_dir(&ctx)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("not in the store, pulling"), "{err}");
}
