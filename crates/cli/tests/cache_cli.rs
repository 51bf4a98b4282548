//! `cairn build --cache-to/--cache-from type=registry,...` through the real
//! binary: two stores (no shared files) and a real registry, as root and
//! rootless. The second store runs no RUN and gets the first's digest; a
//! dead cache registry only warns; bad flag values exit 2.

mod cli_env;

use cairn_testsupport::registry_server::RegistryServer;
use cli_env::*;

const DOCKERFILE: &str = "FROM busybox:fixture
RUN date +%s%N | tee /stamp
COPY a.txt /a.txt
RUN cat /stamp /a.txt > /both
";

/// `cairn build` of a fresh context holding DOCKERFILE in `env`, with `flags`.
fn build(env: &Env, name: &str, flags: &[&str]) -> std::process::Output {
    let ctx = env.context_dir(name, &[("Dockerfile", DOCKERFILE), ("a.txt", "a\n")]);
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(flags);
    args.push(ctx.to_str().unwrap());
    env.cairn(&args)
}

#[test]
fn a_second_store_builds_from_the_registry_cache() {
    let reg = RegistryServer::start();
    for user in users() {
        let (a, b) = (Env::new(user), Env::new(user));
        let who = user.unwrap_or("root");
        let cache = format!("type=registry,ref={}/{who}/cache:main,mode=max", reg.host());
        let first = ok(&build(&a, "ctx", &["--cache-to", &cache]), "build A");
        let out = build(
            &b,
            "ctx",
            &["--cache-from", &cache.replace(",mode=max", "")],
        );
        let second = ok(&out, "build B");
        assert_eq!(first.trim(), second.trim(), "{}", text(&out.stderr));
        // Every RUN came from the cache: the plain progress says so.
        let log = text(&out.stderr);
        let runs: Vec<&str> = log.lines().filter(|l| l.contains("RUN ")).collect();
        assert!(!runs.is_empty(), "{log}");
        assert!(runs.iter().all(|l| l.contains("(cached)")), "{log}");
        assert!(!log.contains("] | "), "a RUN printed output in B:\n{log}");
    }
}

#[test]
fn a_dead_cache_registry_only_warns() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = format!("type=registry,ref=127.0.0.1:{closed}/cache:t");
    for user in users() {
        let env = Env::new(user);
        let out = build(&env, "dead", &["--cache-from", &dead, "--cache-to", &dead]);
        ok(&out, "build with a dead cache registry");
        let err = text(&out.stderr);
        assert!(
            err.contains("--cache-from") && err.contains("WARN"),
            "{err}"
        );
        assert!(err.contains("--cache-to"), "{err}");
        // ignore-error=false (BuildKit's default) makes the export fail the build.
        let strict = format!("{dead},ignore-error=false");
        let out = build(&env, "strict", &["--cache-to", &strict]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    }
}

#[test]
fn bad_cache_flags_exit_2() {
    let env = Env::new(None);
    for (flag, value, says) in [
        ("--cache-to", "type=local,dest=/tmp/x", "unknown attribute"),
        ("--cache-to", "type=gha", "not supported"),
        (
            "--cache-to",
            "type=registry,ref=r/c:t,mode=all",
            "expected min or max",
        ),
        ("--cache-from", "type=registry", "missing ref"),
        (
            "--cache-from",
            "type=registry,ref=r/c:t,mode=max",
            "unknown attribute",
        ),
    ] {
        let out = build(&env, "bad", &[flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
}
