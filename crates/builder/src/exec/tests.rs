//! The executor over a fake [`FsTasks`] (no sandbox, no root) and a temp
//! store, driving the real scheduler over real plans: parallel stages,
//! failure and cancel, events in order with the plan's keys and reasons,
//! cache hits that do no work, `--target`, `COPY --from` ordering.

mod fake_tasks;

use crate::plan::{CacheView, StepKey};
use crate::{BuildError, BuildEvent, BuildRequest, Builder, ErrorKind, StepOutcome};
use cairn_sandbox::idmap::IdMapping;
use cairn_sandbox::CancelToken;
use cairn_store::Store;
use fake_tasks::FakeTasks;
use std::sync::Arc;

const TAG: &str = "localhost/exec-test:latest";

struct Fixture {
    _tmp: tempfile::TempDir,
    store: Store,
    context: std::path::PathBuf,
    /// The requests' cancel token (the fake's `cancel` action fires it).
    cancel: CancelToken,
}

impl Fixture {
    fn new(files: &[(&str, &str)]) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let context = tmp.path().join("context");
        std::fs::create_dir_all(&context).unwrap();
        for (name, text) in files {
            std::fs::write(context.join(name), text).unwrap();
        }
        Fixture {
            _tmp: tmp,
            store,
            context,
            cancel: CancelToken::new(),
        }
    }

    fn tasks(&self) -> Arc<FakeTasks<'_>> {
        Arc::new(FakeTasks::new(&self.store, self.cancel.clone()))
    }

    fn request(&self, dockerfile: &str) -> BuildRequest {
        BuildRequest {
            dockerfile: dockerfile.into(),
            context: self.context.clone(),
            tags: vec![TAG.into()],
            cancel: Some(self.cancel.clone()),
            ..Default::default()
        }
    }

    fn builder<'s>(&'s self, tasks: &Arc<FakeTasks<'s>>) -> Builder<'s> {
        let mut builder =
            Builder::over_tasks(&self.store, tasks.clone(), IdMapping::host_identity());
        builder.parallelism = 2;
        builder
    }

    /// Build `dockerfile`; its result and every event.
    fn build(
        &self,
        tasks: &Arc<FakeTasks<'_>>,
        dockerfile: &str,
        target: Option<&str>,
    ) -> (Result<crate::BuildResult, BuildError>, Vec<BuildEvent>) {
        let mut req = self.request(dockerfile);
        req.target = target.map(String::from);
        let mut events = Vec::new();
        let result = self
            .builder(tasks)
            .build_with_events(&req, &mut |e| events.push(e.clone()));
        (result, events)
    }

    fn tagged(&self) -> bool {
        self.store.resolve(TAG).is_ok()
    }
}

/// The RUN scripts the fake ran, in order.
fn runs(calls: &[String]) -> Vec<&str> {
    calls
        .iter()
        .filter_map(|c| c.strip_prefix("run:"))
        .collect()
}

fn started_lines(events: &[BuildEvent]) -> Vec<(usize, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::StepStarted { stage, line, .. } => Some((*stage, *line)),
            _ => None,
        })
        .collect()
}

#[test]
fn independent_stages_run_at_once() {
    let f = Fixture::new(&[]);
    let tasks = f.tasks();
    // Each RUN waits for the other: built one after the other, the first
    // would give up and fail.
    let dockerfile = "FROM scratch AS one\nRUN meet;one\n\
                      FROM scratch AS two\nRUN meet;two\n\
                      FROM scratch\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n";
    let (result, _) = f.build(&tasks, dockerfile, None);
    result.expect("both stages met");
    let calls = tasks.take_calls();
    let mut ran = runs(&calls);
    ran.sort();
    assert_eq!(ran, ["meet;one", "meet;two"]);
    assert!(f.tagged());
}

#[test]
fn a_failing_step_cancels_the_build_and_says_where() {
    let f = Fixture::new(&[]);
    let tasks = f.tasks();
    // Line 2 fails once line 4 runs; line 4 waits to be killed; line 5
    // must never start.
    let dockerfile = "FROM scratch AS bad\nRUN meet;fail\n\
                      FROM scratch AS slow\nRUN meet;wait-for-cancel\nRUN after\n\
                      FROM scratch\nCOPY --from=bad /x /x\nCOPY --from=slow /y /y\n";
    let (result, events) = f.build(&tasks, dockerfile, None);
    let err = result.expect_err("a step failed");
    assert_eq!(err.kind(), ErrorKind::FailedStep, "{err}");
    let at = err.position().expect("a position");
    assert_eq!((at.file.as_str(), at.line), (crate::INLINE_DOCKERFILE, 2));
    let calls = tasks.take_calls();
    assert!(calls.contains(&"cancelled".to_string()), "{calls:?}");
    assert!(!runs(&calls).contains(&"after"), "{calls:?}");
    assert!(!started_lines(&events).iter().any(|(_, l)| *l >= 5));
    assert!(matches!(
        events.last(),
        Some(BuildEvent::Failed {
            cancelled: false,
            ..
        })
    ));
    assert!(!f.tagged());
}

#[test]
fn the_callers_cancel_stops_before_the_next_step() {
    let f = Fixture::new(&[]);
    let tasks = f.tasks();
    let (result, events) = f.build(&tasks, "FROM scratch\nRUN cancel\nRUN next\n", None);
    assert!(matches!(result, Err(BuildError::Cancelled)), "{result:?}");
    assert_eq!(runs(&tasks.take_calls()), ["cancel"]);
    assert_eq!(started_lines(&events), [(0, 1), (0, 2)]);
    assert!(matches!(
        events.last(),
        Some(BuildEvent::Failed {
            cancelled: true,
            ..
        })
    ));
    assert!(!f.tagged());
}

/// The kinds of a step's events, in order, per line of stage 0.
fn step_story(events: &[BuildEvent]) -> Vec<(usize, &'static str)> {
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::StepStarted { line, .. } => Some((*line, "started")),
            BuildEvent::StepCached { line, .. } => Some((*line, "cached")),
            BuildEvent::LayerCommitted { line, .. } => Some((*line, "committed")),
            BuildEvent::StepDone { line, .. } => Some((*line, "done")),
            _ => None,
        })
        .collect()
}

#[test]
fn events_tell_the_steps_in_order_with_the_plans_keys_and_reasons() {
    let f = Fixture::new(&[]);
    let tasks = f.tasks();
    let text = |a: &str| format!("FROM scratch\nENV A={a}\nRUN one\nRUN two\n");
    f.build(&tasks, &text("1"), None).0.unwrap();
    // What the plan says of the changed file, then what the build does.
    let req = f.request(&text("2"));
    let plan = f.builder(&tasks).plan(&req, &mut |_| {}).unwrap();
    tasks.take_calls();
    let (result, events) = f.build(&tasks, &text("2"), None);
    result.unwrap();
    assert_eq!(runs(&tasks.take_calls()), ["one", "two"]);
    let story = step_story(&events);
    let expected = [
        (1, "started"),
        (1, "done"),
        (2, "started"),
        (2, "done"),
        (3, "started"),
        (3, "committed"),
        (3, "done"),
        (4, "started"),
        (4, "committed"),
        (4, "done"),
    ];
    assert_eq!(story, expected);
    let planned = &plan.graph.stages[0].steps;
    let done: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::StepDone { line, reason, .. } => Some((*line, reason.clone())),
            _ => None,
        })
        .collect();
    let builder = f.builder(&tasks);
    for (step, (line, reason)) in planned.iter().zip(&done) {
        assert_eq!(step.line, *line);
        assert_eq!(&step.reason, reason, "line {line}");
        let StepKey::Known { key, .. } = &step.key else {
            panic!("line {line}: the planner keys FROM scratch, ENV and RUN");
        };
        // The build recorded the plan's key for the step.
        let (recorded, _) = builder.step_record(&step.slot).unwrap().unwrap();
        assert_eq!(&recorded, key, "line {line}");
    }
    assert_eq!(planned.len(), done.len());
    assert!(done[1].1.is_some(), "the ENV change is a reason");

    // Unchanged: started, cached, done for each RUN, and nothing runs.
    let (result, events) = f.build(&tasks, &text("2"), None);
    result.unwrap();
    assert!(tasks.take_calls().is_empty());
    assert_eq!(
        step_story(&events)[4..],
        [
            (3, "started"),
            (3, "cached"),
            (3, "done"),
            (4, "started"),
            (4, "cached"),
            (4, "done")
        ]
    );
}

#[test]
fn a_cached_step_calls_no_task() {
    let f = Fixture::new(&[("a.txt", "a")]);
    let tasks = f.tasks();
    let dockerfile = "FROM scratch AS src\nRUN made\n\
                      FROM scratch\nCOPY a.txt /a.txt\nWORKDIR /w\nRUN w\nCOPY --from=src /made /made\n";
    f.build(&tasks, dockerfile, None).0.unwrap();
    let first = tasks.take_calls();
    assert_eq!(runs(&first), ["made", "w"]);
    assert_eq!(first.iter().filter(|c| *c == "commit").count(), 5);
    let (result, _) = f.build(&tasks, dockerfile, None);
    let outcomes: Vec<StepOutcome> = result.unwrap().steps.iter().map(|s| s.outcome).collect();
    assert!(
        outcomes.iter().all(|o| *o != StepOutcome::Ran),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == StepOutcome::Cached)
            .count(),
        5
    );
    // A COPY's key reads the image (its destination through the image's
    // links, `--from` sources listed): the only calls left make sure the
    // layers are there (the fake fails the build if one is not).
    let calls = tasks.take_calls();
    assert!(calls.iter().all(|c| c.starts_with("extract:")), "{calls:?}");

    // Without COPY, a cached build calls nothing at all.
    let dockerfile = "FROM scratch\nRUN one\nWORKDIR /w\nRUN two\n";
    f.build(&tasks, dockerfile, None).0.unwrap();
    assert_eq!(runs(&tasks.take_calls()), ["one", "two"]);
    let (result, _) = f.build(&tasks, dockerfile, None);
    let cached = result
        .unwrap()
        .steps
        .iter()
        .filter(|s| s.outcome == StepOutcome::Cached)
        .count();
    assert_eq!(cached, 3);
    assert_eq!(tasks.take_calls(), Vec::<String>::new());
}

#[test]
fn target_runs_only_the_stages_it_needs() {
    let f = Fixture::new(&[]);
    let tasks = f.tasks();
    let dockerfile = "FROM scratch AS base\nRUN base\n\
                      FROM scratch AS unused\nRUN unused\n\
                      FROM base AS final\nRUN final\n\
                      FROM scratch AS after\nRUN after\n";
    let (result, events) = f.build(&tasks, dockerfile, Some("final"));
    result.unwrap();
    assert_eq!(runs(&tasks.take_calls()), ["base", "final"]);
    let stages: std::collections::BTreeSet<usize> =
        started_lines(&events).iter().map(|(s, _)| *s).collect();
    assert_eq!(stages, [0, 2].into());
}

#[test]
fn copy_from_waits_for_its_stage() {
    let f = Fixture::new(&[]);
    let tasks = f.tasks();
    let dockerfile =
        "FROM scratch AS src\nRUN made\nFROM scratch\nRUN other\nCOPY --from=src /made /made\n";
    let (result, events) = f.build(&tasks, dockerfile, None);
    result.unwrap();
    let calls = tasks.take_calls();
    let at = |call: &str| calls.iter().position(|c| c == call).expect(call);
    assert!(at("run:made") < at("run:other"), "{calls:?}");
    assert!(at("run:other") < at("copy_from:/made"), "{calls:?}");
    // Stage 0 was done (its layer committed) before stage 1 started.
    let committed = events
        .iter()
        .position(|e| matches!(e, BuildEvent::LayerCommitted { stage: 0, .. }))
        .unwrap();
    let second = events
        .iter()
        .position(|e| matches!(e, BuildEvent::StepStarted { stage: 1, .. }))
        .unwrap();
    assert!(committed < second);
}
