//! What the caller's run policy holds against a Dockerfile: the network
//! entitlement, the default pids limit, memory/time limits, and the
//! sandbox defences in RUN steps. As root and again as the unprivileged test
//! user (harness = false: `main` calls the init hook).

mod common;

use cairn_builder::{BuildError, BuildEvent, BuildRequest, Builder, RunPolicy};
use cairn_sandbox::{init_hook, Launcher, Network};
use common::Fixture;

/// A build's result, its RUN output (both streams) and its warnings.
struct Outcome {
    result: Result<cairn_builder::BuildResult, BuildError>,
    output: String,
    warnings: Vec<String>,
}

fn build(
    f: &Fixture,
    name: &str,
    dockerfile: &str,
    tweak: impl FnOnce(&mut BuildRequest),
) -> Outcome {
    let context = f.context(name, dockerfile, &[]);
    let mut req = common::request(&context, &format!("localhost/{name}:latest"));
    req.no_cache = true;
    tweak(&mut req);
    let builder = Builder::new(&f.store, Launcher::current_exe().unwrap());
    let (mut output, mut warnings) = (String::new(), Vec::new());
    let result = builder.build_with_events(&req, &mut |e| match e {
        BuildEvent::Output { text, .. } => {
            output.push_str(text);
            output.push('\n');
        }
        BuildEvent::Warning { message } => warnings.push(message.clone()),
        _ => {}
    });
    Outcome {
        result,
        output,
        warnings,
    }
}

fn network_host_needs_the_entitlement(f: &Fixture) {
    let dockerfile = "FROM busybox:fixture\nRUN true\nRUN --network=host ls /sys/class/net\n";
    let none = |req: &mut BuildRequest| req.network = Network::None;
    let o = build(f, "nethost", dockerfile, none);
    let err = o
        .result
        .expect_err("RUN --network=host widened --network none");
    let msg = err.to_string();
    assert!(
        msg.contains("Dockerfile:3") && msg.contains("network.host"),
        "{msg}"
    );
    assert!(err.is_bad_input(), "{msg}");
    // Granted, it runs on the host's network (more than loopback).
    let o = build(f, "nethost", dockerfile, |req| {
        req.network = Network::None;
        req.run_policy.allow_network_host = true;
    });
    o.result.unwrap();
    assert!(
        o.output.lines().any(|l| l != "lo" && !l.is_empty()),
        "{}",
        o.output
    );
    // Without --network none, --network=host is the default and needs nothing.
    build(f, "nethost", dockerfile, |_| {}).result.unwrap();
}

fn fork_bomb_meets_the_default_pids_limit(f: &Fixture) {
    if cairn_sandbox::idmap::IdMapping::for_current_user().single_id {
        println!("  (skipped: no subordinate ID range for this user)");
        return;
    }
    let dockerfile = "FROM busybox:fixture\n\
        RUN i=0; while [ $i -lt 3000 ]; do sleep 20 & i=$((i+1)); done; echo all-started\n";
    let o = build(f, "forkbomb", dockerfile, |_| {});
    assert!(o.result.is_err(), "the fork bomb's step succeeded");
    assert!(!o.output.contains("all-started"), "{}", o.output);
    assert!(o.output.contains("fork"), "{}", o.output);
}

fn memory_hog_is_killed_by_the_memory_limit(f: &Fixture) {
    let dockerfile = "FROM busybox:fixture\n\
        RUN dd if=/dev/zero of=/dev/null bs=256M count=1 && echo survived\n";
    let limit = |req: &mut BuildRequest| {
        req.run_policy = RunPolicy {
            memory_bytes: Some(64 << 20),
            ..RunPolicy::default()
        }
    };
    let o = build(f, "memhog", dockerfile, limit);
    if nix::unistd::geteuid().is_root() {
        // This host has v1 memory controllers: root uses them.
        assert!(
            o.result.is_err(),
            "the hog survived a 64 MiB limit: {}",
            o.output
        );
        assert!(!o.output.contains("survived"), "{}", o.output);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    } else if o.result.is_ok() {
        // No delegated cgroup: the limit is reported, never silently dropped.
        assert!(
            o.warnings.iter().any(|w| w.contains("memory=")),
            "unapplied limit not reported: {:?}",
            o.warnings
        );
    }
}

fn timeout_stops_a_step(f: &Fixture) {
    let dockerfile = "FROM busybox:fixture\nRUN sleep 30\n";
    let started = std::time::Instant::now();
    let o = build(f, "slow", dockerfile, |req| {
        req.run_policy.timeout = Some(std::time::Duration::from_millis(300));
    });
    let msg = o
        .result
        .expect_err("a 30 s step outlived a 0.3 s timeout")
        .to_string();
    assert!(
        msg.contains("timed out") && msg.contains("Dockerfile:2"),
        "{msg}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

fn run_steps_get_the_sandbox_defences(f: &Fixture) {
    let dockerfile = "FROM busybox:fixture\n\
        RUN grep -E '^(CapEff|Seccomp):' /proc/self/status; \
            echo x > /proc/sys/kernel/core_pattern || echo core-refused; \
            cat /proc/self/uid_map\n";
    let o = build(f, "defences", dockerfile, |_| {});
    o.result.unwrap();
    assert!(o.output.contains("00000000a80425fb"), "{}", o.output);
    assert!(o.output.contains("Seccomp:\t2"), "{}", o.output);
    assert!(o.output.contains("core-refused"), "{}", o.output);
    if nix::unistd::geteuid().is_root() {
        // The uid_map line, wherever stderr's lines fell around it (stdout
        // and stderr are read from two pipes: their order is not kept).
        let map = o
            .output
            .lines()
            .find(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.len() == 3 && fields.iter().all(|x| x.parse::<u64>().is_ok())
            })
            .unwrap_or_default()
            .to_string();
        let host: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(host.first(), Some(&"0"), "{map}");
        assert_ne!(host.get(1), Some(&"0"), "RUN as root is host root: {map}");
    }
}

cairn_testsupport::suite_main![Fixture;
    network_host_needs_the_entitlement,
    fork_bomb_meets_the_default_pids_limit,
    memory_hog_is_killed_by_the_memory_limit,
    timeout_stops_a_step,
    run_steps_get_the_sandbox_defences,
];
