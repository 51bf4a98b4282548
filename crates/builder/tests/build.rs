//! Builds through the library over a real store, as root and again as the
//! unprivileged test user (harness = false: `main` calls the init hook).

mod common;

use cairn_builder::{
    BuildError, BuildEvent, BuildRequest, Builder, CancelToken, OutputStream, StepOutcome,
};
use cairn_sandbox::{init_hook, Launcher};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Fixture;

impl Fixture {
    /// Build; returns the manifest digest and which steps ran (not cached), by line.
    fn build(
        &self,
        context: &Path,
        args: &[(&str, &str)],
    ) -> Result<(String, Vec<usize>), cairn_builder::BuildError> {
        let req = self.request(context, args);
        let builder = Builder::new(&self.store, Launcher::current_exe().unwrap());
        let result = builder.build(&req, &mut |_| {})?;
        Ok((result.manifest.to_string(), common::ran_lines(&result)))
    }

    /// Build with `builder`, collecting every event.
    fn build_events(
        &self,
        builder: Builder,
        context: &Path,
        on_event: &mut dyn FnMut(&BuildEvent),
    ) -> (
        Result<cairn_builder::BuildResult, BuildError>,
        Vec<BuildEvent>,
    ) {
        let req = self.request(context, &[]);
        let mut events = Vec::new();
        let result = builder.build_with_events(&req, &mut |e| {
            on_event(e);
            events.push(e.clone());
        });
        (result, events)
    }

    fn builder(&self) -> Builder<'_> {
        Builder::new(&self.store, Launcher::current_exe().unwrap())
    }

    fn request(&self, context: &Path, args: &[(&str, &str)]) -> BuildRequest {
        let mut req = common::request(context, "localhost/test:latest");
        req.build_args = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>();
        req
    }

    fn config(&self, manifest: &str) -> Value {
        let (_, parsed) = self.store.manifest(&manifest.parse().unwrap()).unwrap();
        serde_json::from_slice(
            &self
                .store
                .read_blob_bytes(&parsed.config.unwrap().digest)
                .unwrap(),
        )
        .unwrap()
    }

    /// `umoci unpack` of the result, as a real peer reads it.
    fn unpack(&self, manifest: &str) -> PathBuf {
        common::unpack(&self.store, self.tmp.path(), manifest)
    }
}

const DOCKERFILE: &str = "FROM busybox:fixture
ARG FLAVOUR=plain
ENV GREETING=hello
WORKDIR /app
COPY a.txt ./
COPY dir/ /data/
RUN echo \"$GREETING $FLAVOUR\" > /app/out && rm /etc/nsswitch.conf
COPY b.txt /app/
LABEL org.example=yes
EXPOSE 8080
ENTRYPOINT [\"cat\"]
CMD [\"/app/out\"]
";

fn filesystem_and_config(f: &Fixture) {
    let ctx = f.context(
        "fs",
        DOCKERFILE,
        &[("a.txt", "A\n"), ("b.txt", "B\n"), ("dir/x/y.txt", "Y\n")],
    );
    let (manifest, _) = f.build(&ctx, &[]).unwrap();
    let root = f.unpack(&manifest);
    assert_eq!(
        std::fs::read_to_string(root.join("app/out")).unwrap(),
        "hello plain\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("app/a.txt")).unwrap(),
        "A\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("data/x/y.txt")).unwrap(),
        "Y\n",
        "COPY dir/ copies its contents"
    );
    assert!(!root.join("data/dir").exists());
    assert!(
        !root.join("etc/nsswitch.conf").exists(),
        "RUN deletion (whiteout) lost"
    );
    assert!(
        !root.join("etc/hosts").exists(),
        "mount stub /etc/hosts committed"
    );
    let cfg = f.config(&manifest);
    let c = &cfg["config"];
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Entrypoint"], serde_json::json!(["cat"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/app/out"]));
    assert_eq!(c["Labels"]["org.example"], "yes");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some());
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hello"));
    // FLAVOUR is an ARG: seen by RUN, not kept in the image.
    assert!(!c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().unwrap().starts_with("FLAVOUR")));
    let history = cfg["history"].as_array().unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|h| h.get("empty_layer").is_none())
            .count(),
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len()
    );
}

fn cache_reruns_exactly_what_changed(f: &Fixture) {
    // Content differs from filesystem_and_config's: the cache is shared by content.
    let ctx = f.context(
        "cache",
        DOCKERFILE,
        &[
            ("a.txt", "cache A\n"),
            ("b.txt", "B\n"),
            ("dir/x/y.txt", "Y\n"),
            (".dockerignore", "ignored.txt\n"),
        ],
    );
    let (first, ran) = f.build(&ctx, &[]).unwrap();
    assert!(!ran.is_empty());
    let (again, ran) = f.build(&ctx, &[]).unwrap();
    assert_eq!(ran, Vec::<usize>::new(), "unchanged rebuild executed steps");
    assert_eq!(first, again, "unchanged rebuild gave another image");

    // An ignored file changing reruns nothing.
    std::fs::write(ctx.join("ignored.txt"), "noise").unwrap();
    assert_eq!(f.build(&ctx, &[]).unwrap().1, Vec::<usize>::new());

    // b.txt is read by the COPY on line 8: that step reruns, nothing before it.
    std::fs::write(ctx.join("b.txt"), "B2\n").unwrap();
    assert_eq!(f.build(&ctx, &[]).unwrap().1, vec![8]);

    // a.txt changes the COPY on line 5, so the steps after it that make layers rerun.
    std::fs::write(ctx.join("a.txt"), "A2\n").unwrap();
    assert_eq!(f.build(&ctx, &[]).unwrap().1, vec![5, 6, 7, 8]);

    // A build arg reruns from the first step that sees it (ARG is on line 2):
    // WORKDIR on line 4 makes /app, a layer, and every later layer step.
    let (_, ran) = f.build(&ctx, &[("FLAVOUR", "spicy")]).unwrap();
    assert_eq!(ran, vec![4, 5, 6, 7, 8]);

    // Touching a file without changing it reruns nothing (mtimes are not in keys).
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(ctx.join("a.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(
        f.build(&ctx, &[("FLAVOUR", "spicy")]).unwrap().1,
        Vec::<usize>::new()
    );
}

fn failures_are_clear(f: &Fixture) {
    let ctx = f.context(
        "fail",
        "FROM busybox:fixture\nRUN echo boom && exit 3\n",
        &[],
    );
    let err = f.build(&ctx, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            cairn_builder::BuildError::RunFailed {
                code: 3,
                line: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_bad_input());
    let ctx = f.context("missing", "FROM busybox:fixture\nCOPY nope.txt /\n", &[]);
    let err = f.build(&ctx, &[]).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("nope.txt"),
        "{err}"
    );
    let ctx = f.context("noimage", "FROM nosuch:image\n", &[]);
    assert!(f.build(&ctx, &[]).unwrap_err().is_bad_input());
    let ctx = f.context("syntax", "FROM busybox:fixture\nFROBNICATE x\n", &[]);
    let err = f.build(&ctx, &[]).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains(":2:"),
        "{err}"
    );
}

fn multi_stage_from_an_earlier_stage(f: &Fixture) {
    let df = "FROM busybox:fixture AS base\nRUN echo base > /base.txt\nFROM base\nRUN cat /base.txt > /copy.txt\n";
    let ctx = f.context("multi", df, &[]);
    let (manifest, _) = f.build(&ctx, &[]).unwrap();
    let root = f.unpack(&manifest);
    assert_eq!(
        std::fs::read_to_string(root.join("copy.txt")).unwrap(),
        "base\n"
    );
}

fn copy_from_keeps_owners_modes_and_links(f: &Fixture) {
    use std::os::unix::fs::MetadataExt;
    let df = "FROM busybox:fixture AS builder
RUN mkdir -p /out/sub && echo hi > /out/sub/f && ln /out/sub/f /out/sub/hard && cp /bin/busybox /out/suid && chmod 4755 /out/suid && chown -R 1000:1000 /out && chmod 4755 /out/suid && rm /etc/nsswitch.conf
FROM busybox:fixture
COPY --from=builder /out /dst
COPY --from=builder --chown=app:staff /out/sub/f /owned.txt
COPY --from=0 /etc/passwd /fromzero/
";
    let ctx = f.context("from", df, &[]);
    let (manifest, _) = f.build(&ctx, &[]).unwrap();
    let cfg = f.config(&manifest);
    let ids: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4, "base + three COPY layers");
    let layer = |i: usize| f.store.layer_dir(&ids[i].parse().unwrap());
    let mapping = cairn_sandbox::idmap::IdMapping::for_current_user();
    let dst = layer(1).join("dst");
    let file = std::fs::metadata(dst.join("sub/f")).unwrap();
    assert_eq!(
        Some(file.uid()),
        mapping.host_uid(1000),
        "COPY --from must keep owners"
    );
    assert_eq!(
        file.ino(),
        std::fs::metadata(dst.join("sub/hard")).unwrap().ino(),
        "hard link lost"
    );
    assert_eq!(
        std::fs::metadata(dst.join("suid")).unwrap().mode() & 0o7777,
        0o4755,
        "setuid lost"
    );
    let owned = std::fs::metadata(layer(2).join("owned.txt")).unwrap();
    assert_eq!(
        (Some(owned.uid()), Some(owned.gid())),
        (mapping.host_uid(1000), mapping.host_gid(50))
    );
    // Stage 0 deleted nsswitch.conf: the overlay view of its layers hides it.
    let err = f.build(&f.context("from-missing", "FROM busybox:fixture AS b\nRUN rm /etc/nsswitch.conf\nFROM busybox:fixture\nCOPY --from=b /etc/nsswitch.conf /x\n", &[]), &[]).unwrap_err();
    assert!(err.to_string().contains("nsswitch.conf"), "{err}");
    let _ = manifest;
}

/// Where the event `pred` matches first, by position.
fn position(events: &[BuildEvent], pred: impl Fn(&BuildEvent) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("event not found in {events:#?}"))
}

fn events_tell_the_story(f: &Fixture) {
    let ctx = f.context(
        "events",
        "FROM busybox:fixture\nRUN echo to-out && echo to-err >&2 && printf 'no newline'\nENV X=1\n",
        &[],
    );
    let (result, events) = f.build_events(f.builder(), &ctx, &mut |_| {});
    let manifest = result.unwrap().manifest;
    let started = position(&events, |e| {
        matches!(e, BuildEvent::StepStarted { line: 2, .. })
    });
    let out = position(
        &events,
        |e| matches!(e, BuildEvent::Output { line: 2, stream: OutputStream::Stdout, text, .. } if text == "to-out"),
    );
    let err = position(
        &events,
        |e| matches!(e, BuildEvent::Output { line: 2, stream: OutputStream::Stderr, text, .. } if text == "to-err"),
    );
    position(
        &events,
        |e| matches!(e, BuildEvent::Output { line: 2, text, .. } if text == "no newline"),
    );
    let layer = position(
        &events,
        |e| matches!(e, BuildEvent::LayerCommitted { line: 2, size, .. } if *size > 0),
    );
    let done = position(&events, |e| {
        matches!(
            e,
            BuildEvent::StepDone {
                line: 2,
                outcome: StepOutcome::Ran,
                ..
            }
        )
    });
    assert!(started < out && started < err && out < done && err < done && layer < done);
    assert_eq!(
        events.last(),
        Some(&BuildEvent::Finished {
            manifest,
            duration: match events.last() {
                Some(BuildEvent::Finished { duration, .. }) => *duration,
                _ => panic!("last event is not Finished: {events:#?}"),
            }
        })
    );
    // JSON as `--progress json` prints it.
    let json = serde_json::to_value(&events[out]).unwrap();
    assert_eq!(json["event"], "output");
    assert_eq!(json["stream"], "stdout");

    // A rebuild: the RUN is cached, says so, and prints nothing.
    let (result, events) = f.build_events(f.builder(), &ctx, &mut |_| {});
    assert_eq!(result.unwrap().manifest, manifest);
    position(&events, |e| {
        matches!(e, BuildEvent::StepCached { line: 2, .. })
    });
    assert!(!events.iter().any(|e| matches!(
        e,
        BuildEvent::Output { .. } | BuildEvent::LayerCommitted { .. }
    )));

    // A failing RUN: its output, then Failed.
    let ctx = f.context(
        "events-fail",
        "FROM busybox:fixture\nRUN echo why-it-failed && exit 4\n",
        &[],
    );
    let (result, events) = f.build_events(f.builder(), &ctx, &mut |_| {});
    assert!(matches!(result, Err(BuildError::RunFailed { code: 4, .. })));
    position(
        &events,
        |e| matches!(e, BuildEvent::Output { text, .. } if text == "why-it-failed"),
    );
    assert!(matches!(
        events.last(),
        Some(BuildEvent::Failed {
            cancelled: false,
            ..
        })
    ));
}

fn sandbox_processes(pattern: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-a", "-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cancel_kills_the_run_and_tags_nothing(f: &Fixture) {
    let ctx = f.context(
        "cancel",
        "FROM busybox:fixture\nRUN echo started && sleep 61.5\n",
        &[],
    );
    let token = CancelToken::new();
    let builder = f.builder().with_cancel(token.clone());
    let mut req = f.request(&ctx, &[]);
    req.tags = vec!["localhost/cancelled:latest".into()];
    let mut events = Vec::new();
    // Cancel from the event callback as soon as the RUN speaks: it is running.
    let result = builder.build_with_events(&req, &mut |e| {
        if matches!(e, BuildEvent::Output { text, .. } if text == "started") {
            token.cancel();
        }
        events.push(e.clone());
    });
    assert!(matches!(result, Err(BuildError::Cancelled)), "{result:?}");
    assert!(matches!(
        events.last(),
        Some(BuildEvent::Failed {
            cancelled: true,
            ..
        })
    ));
    assert!(
        f.store.resolve("localhost/cancelled:latest").is_err(),
        "a cancelled build tagged its image"
    );
    assert_eq!(sandbox_processes("sleep 61.5"), "", "the RUN survived");
    let tmp = f.store.layout().tmp();
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("build-"))
        .collect();
    assert!(
        left.is_empty(),
        "scratch dirs left in {}: {left:?}",
        tmp.display()
    );
    // The store is consistent and the cache untouched: the next build runs the step.
    assert!(f.store.fsck().unwrap().is_empty());
}

fn independent_stages_build_at_once(f: &Fixture) {
    let ctx = f.context(
        "parallel",
        "FROM busybox:fixture AS a
RUN sleep 1 && echo a > /a.txt
FROM busybox:fixture AS b
RUN sleep 1 && echo b > /b.txt
FROM busybox:fixture
COPY --from=a /a.txt /
COPY --from=b /b.txt /
",
        &[],
    );
    let builder = f.builder().with_parallelism(2);
    let (result, events) = f.build_events(builder, &ctx, &mut |_| {});
    let manifest = result.unwrap().manifest;
    let started = |line| {
        position(
            &events,
            |e| matches!(e, BuildEvent::StepStarted { line: l, .. } if *l == line),
        )
    };
    let done = |line| {
        position(
            &events,
            |e| matches!(e, BuildEvent::StepDone { line: l, .. } if *l == line),
        )
    };
    // Each RUN started before the other finished: they overlapped.
    assert!(started(2) < done(4) && started(4) < done(2), "{events:#?}");
    // The final stage waited for both.
    assert!(started(6) > done(2).max(done(4)));
    let root = f.unpack(&manifest.to_string());
    assert_eq!(std::fs::read_to_string(root.join("a.txt")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(root.join("b.txt")).unwrap(), "b\n");

    // A stage failing cancels the one running beside it, at once.
    let failing = f.context(
        "parallel-fail",
        "FROM busybox:fixture AS a
RUN sleep 0.3 && exit 3
FROM busybox:fixture AS b
RUN sleep 61.7
FROM busybox:fixture
COPY --from=a /etc/passwd /a
COPY --from=b /etc/passwd /b
",
        &[],
    );
    let (result, _) = f.build_events(f.builder().with_parallelism(2), &failing, &mut |_| {});
    assert!(
        matches!(result, Err(BuildError::RunFailed { code: 3, .. })),
        "{result:?}"
    );
    assert_eq!(
        sandbox_processes("sleep 61.7"),
        "",
        "the sibling RUN survived"
    );

    // --target builds only what the target needs.
    let mut req = f.request(&ctx, &[]);
    req.target = Some("b".into());
    req.no_cache = true;
    let mut stages = std::collections::BTreeSet::new();
    f.builder()
        .build_with_events(&req, &mut |e| {
            if let BuildEvent::StepStarted { stage, .. } = e {
                stages.insert(*stage);
            }
        })
        .unwrap();
    assert_eq!(stages.into_iter().collect::<Vec<_>>(), vec![1]);
}

fn unchanged_context_is_not_reread(f: &Fixture) {
    let big = "x".repeat(1 << 20);
    let ctx = f.context(
        "memo",
        "FROM busybox:fixture\nCOPY . /ctx/\n",
        &[
            ("big.bin", big.as_str()),
            ("a.txt", "A\n"),
            ("sub/b.txt", "B\n"),
        ],
    );
    // Hashes of files changed less than the racy window before are not
    // trusted (their mtime could hide a change): let the files age.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let build = || {
        f.builder()
            .build(&f.request(&ctx, &[]), &mut |_| {})
            .unwrap()
    };
    let first = build();
    assert!(
        first.context_files_read >= 4,
        "{}",
        first.context_files_read
    );
    let again = build();
    assert_eq!(
        again.context_files_read, 0,
        "an unchanged context was re-read"
    );
    assert_eq!(again.manifest, first.manifest);
    assert!(again.steps.iter().all(|s| s.outcome != StepOutcome::Ran));
    // Same size, same mtime, new content: the ctime (and inode data) tell.
    let path = ctx.join("a.txt");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, "Z\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let changed = build();
    assert_eq!(changed.context_files_read, 1);
    assert_ne!(changed.manifest, first.manifest);
    assert!(changed
        .steps
        .iter()
        .any(|s| s.line == 2 && s.outcome == StepOutcome::Ran));
}

/// A COPY whose digest came from the recorded scan of an unchanged
/// context still records its files when it runs (its parent changed), so
/// the next build names the one file that changed.
fn a_recorded_scan_still_explains_file_changes(f: &Fixture) {
    let ctx = f.context(
        "scan-explain",
        "FROM busybox:fixture\nARG V\nRUN echo $V\nCOPY . /ctx/\n",
        &[("a.txt", "A\n"), ("sub/b.txt", "B\n")],
    );
    // Settled files: only then is a scan recorded.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let build = |v: &str| {
        f.builder()
            .build(&f.request(&ctx, &[("V", v)]), &mut |_| {})
            .unwrap()
    };
    let copy_step =
        |r: &cairn_builder::BuildResult| r.steps.iter().find(|s| s.line == 4).cloned().unwrap();
    build("1");
    // The context is unchanged: its digest comes from the record; the
    // COPY runs because its parent did.
    let second = build("2");
    assert_eq!(second.context_files_read, 0);
    assert_eq!(copy_step(&second).outcome, StepOutcome::Ran);
    std::fs::write(ctx.join("sub/b.txt"), "C\n").unwrap();
    let third = build("2");
    assert_eq!(third.context_files_read, 1);
    assert_eq!(
        copy_step(&third).reason,
        Some(cairn_builder::Reason::FileChanged {
            path: "sub/b.txt".into(),
            change: cairn_builder::Change::Modified,
        }),
        "the second build recorded the files it did not list"
    );
    let cached = build("2");
    assert_eq!(copy_step(&cached).outcome, StepOutcome::Cached);
}

fn unused_build_args_warn(f: &Fixture) {
    let ctx = f.context(
        "unused-args",
        "ARG GLOBAL=1\nFROM busybox:fixture\nARG USED\nRUN echo $USED\n",
        &[],
    );
    let req = f.request(
        &ctx,
        &[
            ("USED", "x"),
            ("GLOBAL", "2"),
            ("NOBODY", "y"),
            ("HTTP_PROXY", "h"),
            ("ALSO_NOT", "z"),
        ],
    );
    let mut warnings = Vec::new();
    f.builder()
        .build_with_events(&req, &mut |e| {
            if let BuildEvent::Warning { message } = e {
                warnings.push(message.clone());
            }
        })
        .unwrap();
    assert_eq!(
        warnings,
        vec!["one or more build args [ALSO_NOT NOBODY] were not consumed".to_string()]
    );
}

fn from_platform_is_recorded(f: &Fixture) {
    let ctx = f.context(
        "platform",
        "FROM --platform=linux/arm64/v8 busybox:fixture\nRUN true\nFROM --platform=$BUILDPLATFORM scratch AS native\nCOPY --from=0 /bin/busybox /b\n",
        &[],
    );
    let mut req = f.request(&ctx, &[]);
    req.target = Some("0".into());
    let mut warnings = Vec::new();
    let result = f
        .builder()
        .build_with_events(&req, &mut |e| {
            if let BuildEvent::Warning { message } = e {
                warnings.push(message.clone());
            }
        })
        .unwrap();
    let cfg = f.config(&result.manifest.to_string());
    assert_eq!(cfg["architecture"], "arm64");
    assert_eq!(cfg["variant"], "v8");
    assert_eq!(cfg["os"], "linux");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("is for linux/amd64"), "{warnings:?}");
    // $BUILDPLATFORM is this machine's: no warning, amd64 recorded.
    req.target = None;
    let result = f.builder().build(&req, &mut |_| {}).unwrap();
    assert_eq!(
        f.config(&result.manifest.to_string())["architecture"],
        "amd64"
    );
    let bad = f.context(
        "badplatform",
        "FROM --platform=linux busybox:fixture\n",
        &[],
    );
    let err = f.build(&bad, &[]).unwrap_err();
    assert!(err.is_bad_input());
    assert!(
        err.to_string()
            .contains("Dockerfile:1: FROM --platform=\"linux\""),
        "{err}"
    );
}

/// The pure planner and the build agree: after a build, every step the
/// planner could key has the dry run's outcome and reason, cached or not,
/// and a changed build arg is named by both.
fn planner_agrees_with_the_build(f: &Fixture) {
    let ctx = f.context(
        "planner",
        "FROM busybox:fixture AS base\nARG V=1\nENV E=$V\nRUN echo $E > /e\n\
         LABEL l=$V\nFROM base\nRUN cat /e\nCOPY a.txt /a\nRUN true\n",
        &[("a.txt", "a")],
    );
    f.builder()
        .build(&f.request(&ctx, &[("V", "1")]), &mut |_| {})
        .unwrap();
    for (value, run_outcome) in [("1", StepOutcome::Cached), ("2", StepOutcome::WouldRun)] {
        let req = f.request(&ctx, &[("V", value)]);
        let plan = f.builder().plan(&req, &mut |_| {}).unwrap();
        let mut keyed = 0;
        for stage in &plan.graph.stages {
            for step in &stage.steps {
                let Some(outcome) = step.outcome else {
                    continue;
                };
                keyed += 1;
                let report = plan
                    .steps
                    .iter()
                    .find(|s| s.stage == stage.index && s.line == step.line)
                    .unwrap();
                assert_eq!(report.outcome, outcome, "{value}: line {}", step.line);
                assert_eq!(report.reason, step.reason, "{value}: line {}", step.line);
            }
        }
        // Both FROMs, ARG, ENV, RUN, LABEL, the second RUN; COPY and after wait.
        assert_eq!(keyed, 7, "V={value}");
        let run = &plan.graph.stages[0].steps[3];
        assert_eq!(run.outcome, Some(run_outcome));
        if value == "2" {
            assert!(
                matches!(
                    &run.reason,
                    Some(cairn_builder::Reason::ParentChanged { cause: Some(c), .. })
                        if matches!(&**c, cairn_builder::Reason::VarChanged { name, .. } if name == "V")
                ),
                "{:?}",
                run.reason
            );
        }
        let copy = &plan.graph.stages[1].steps[2];
        assert_eq!(
            copy.key,
            cairn_builder::StepKey::Pending(cairn_builder::Pending::Sources)
        );
    }
}

cairn_testsupport::suite_main![Fixture;
    filesystem_and_config,
    cache_reruns_exactly_what_changed,
    failures_are_clear,
    multi_stage_from_an_earlier_stage,
    copy_from_keeps_owners_modes_and_links,
    events_tell_the_story,
    cancel_kills_the_run_and_tags_nothing,
    independent_stages_build_at_once,
    unchanged_context_is_not_reread,
    a_recorded_scan_still_explains_file_changes,
    unused_build_args_warn,
    from_platform_is_recorded,
    planner_agrees_with_the_build,
];
