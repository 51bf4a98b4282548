//! `cairn build --dry-run` and `--explain` through the real binary: the
//! plan names the context file or build arg that changed, a dry run
//! changes nothing, and a real rebuild explains itself the same way.

mod cli_env;

use cli_env::*;
use std::path::Path;

const DOCKERFILE: &str =
    "FROM busybox:fixture\nARG V=1\nCOPY a.txt b.txt /app/\nRUN echo ran-marker-$V && echo $V > /v\n";

/// Entries in a store dir (blobs or layer dirs), to see that nothing was written.
fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn store_counts(env: &Env) -> (usize, usize) {
    (
        count(&env.store.join("blobs/sha256")),
        count(&env.store.join("layers")),
    )
}

/// The plan's line for Dockerfile line `line`.
fn plan_line(plan: &str, line: usize) -> String {
    plan.lines()
        .find(|l| l.contains(&format!(" line {line}: ")))
        .unwrap_or_else(|| panic!("no line {line} in the plan:\n{plan}"))
        .to_string()
}

#[test]
fn dry_run_names_the_changed_file_and_changes_nothing() {
    for user in users() {
        let env = Env::new(user);
        let ctx = env.context_dir(
            "ctx",
            &[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")],
        );
        let c = ctx.to_str().unwrap();
        ok(
            &env.cairn(&["build", "-q", "-t", "first", c]),
            "first build",
        );

        let plan = ok(&env.cairn(&["build", "--dry-run", c]), "dry run");
        assert!(plan_line(&plan, 3).starts_with("hit"), "{plan}");
        assert!(plan_line(&plan, 4).starts_with("hit"), "{plan}");

        std::fs::write(ctx.join("b.txt"), "b changed").unwrap();
        let before = store_counts(&env);
        let out = env.cairn(&[
            "build",
            "--dry-run",
            "--progress",
            "json",
            "-t",
            "second",
            c,
        ]);
        let plan = ok(&out, "dry run after a change");
        let copy = plan_line(&plan, 3);
        assert!(
            copy.starts_with("miss") && copy.contains("context file b.txt changed"),
            "{plan}"
        );
        assert!(!copy.contains("a.txt changed"), "{plan}");
        let run = plan_line(&plan, 4);
        assert!(run.starts_with("miss") && run.contains("b.txt"), "{plan}");
        // Nothing ran, nothing was written or tagged.
        let events = text(&out.stderr);
        assert!(!events.contains("ran-marker-1"), "a RUN ran: {events}");
        assert!(
            !events.contains("\"event\":\"output\""),
            "a RUN ran: {events}"
        );
        assert!(!events.contains("layer_committed"), "{events}");
        assert_eq!(store_counts(&env), before, "the dry run wrote to the store");
        let images = ok(&env.cairn(&["images"]), "images");
        assert!(!images.contains("second"), "{images}");
        // The JSON step events carry the reason as fields.
        let done: Vec<serde_json::Value> = events
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &serde_json::Value| e["event"] == "step_done" && e["line"] == 3)
            .collect();
        assert_eq!(done[0]["outcome"], "would_run", "{events}");
        assert_eq!(done[0]["reason"]["kind"], "file_changed", "{events}");
        assert_eq!(done[0]["reason"]["path"], "b.txt", "{events}");
    }
}

#[test]
fn dry_run_names_a_changed_build_arg() {
    for user in users() {
        let env = Env::new(user);
        let ctx = env.context_dir(
            "ctx",
            &[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")],
        );
        let c = ctx.to_str().unwrap();
        ok(&env.cairn(&["build", "-q", c]), "first build");
        let plan = ok(
            &env.cairn(&["build", "--dry-run", "--build-arg", "V=2", c]),
            "dry run with another arg",
        );
        let copy = plan_line(&plan, 3);
        assert!(
            copy.starts_with("miss") && copy.contains("build arg V changed: \"1\" -> \"2\""),
            "{plan}"
        );
        let run = plan_line(&plan, 4);
        assert!(
            run.starts_with("miss") && run.contains("build arg V"),
            "{plan}"
        );
        // JSON plan on stdout with --format json.
        let json = ok(
            &env.cairn(&[
                "build",
                "--dry-run",
                "--format",
                "json",
                "--build-arg",
                "V=2",
                c,
            ]),
            "json plan",
        );
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        let step = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["line"] == 3)
            .unwrap();
        assert_eq!(step["status"], "miss");
        assert_eq!(step["reason"]["name"], "V");
        assert_eq!(step["reason"]["old"], "1");
        assert_eq!(step["reason"]["new"], "2");
        // The planner's keys: FROM is keyed, COPY waits for its sources.
        let first = &v["steps"][0];
        assert_eq!(first["key"].as_str().map(str::len), Some(64), "{first}");
        assert_eq!(step["key_pending"]["kind"], "sources", "{step}");
    }
}

#[test]
fn explain_names_the_same_reasons_while_building() {
    for user in users() {
        let env = Env::new(user);
        let ctx = env.context_dir(
            "ctx",
            &[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")],
        );
        let c = ctx.to_str().unwrap();
        ok(&env.cairn(&["build", "-q", c]), "first build");
        std::fs::write(ctx.join("b.txt"), "b changed").unwrap();
        let dry = ok(&env.cairn(&["build", "--dry-run", c]), "dry run");
        let out = env.cairn(&["build", "--explain", "--progress", "plain", c]);
        ok(&out, "explained build");
        let log = text(&out.stderr);
        assert!(log.contains("ran-marker-1"), "the RUN did not run: {log}");
        assert!(log.contains("(miss: context file b.txt changed)"), "{log}");
        assert!(dry.contains("context file b.txt changed"), "{dry}");
        // Built: the same plan is now all hits.
        let plan = ok(&env.cairn(&["build", "--dry-run", c]), "dry run after");
        assert!(plan_line(&plan, 4).starts_with("hit"), "{plan}");

        let out = env.cairn(&["build", "--explain", "--build-arg", "V=3", c]);
        ok(&out, "build with another arg");
        let log = text(&out.stderr);
        assert!(
            log.contains("(miss: build arg V changed: \"1\" -> \"3\")"),
            "{log}"
        );
    }
}
