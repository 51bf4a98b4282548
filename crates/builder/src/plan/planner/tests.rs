//! The planner through an in-memory store view (no store, no root): which
//! keys planning alone can tell, that they chain and change as the cache
//! rules say, stage pruning and `--target`, and one test per reason kind
//! the planner can give (context files and mount sources are the
//! executor's: `explain::tests` and `crates/cli/tests/explain_cli.rs`).

use super::*;
use crate::keys::base_key;
use crate::state::StageState;
use cairn_store::cache::CacheEntry;
use std::collections::{HashMap, HashSet};

/// The store as the planner sees it, in memory.
#[derive(Default)]
struct FakeView {
    cached: HashSet<String>,
    records: HashMap<String, (String, Vec<KeyInput>)>,
    images: HashMap<String, StageState>,
}

impl CacheView for FakeView {
    fn peek(&self, key: &str) -> Result<Option<CacheEntry>, BuildError> {
        Ok(self.cached.contains(key).then(|| CacheEntry {
            key: key.to_string(),
            layer_digest: None,
            diff_id: None,
            size: 0,
            value: String::new(),
        }))
    }

    fn step_record(&self, slot: &str) -> Result<Option<(String, Vec<KeyInput>)>, BuildError> {
        Ok(self.records.get(slot).cloned())
    }

    fn image(&self, name: &str) -> Result<Option<StageState>, BuildError> {
        Ok(self.images.get(name).cloned())
    }
}

impl FakeView {
    /// `graph` was built: every known key is recorded for its slot, and
    /// the layers of its RUN steps are cached.
    fn built(&mut self, graph: &BuildGraph) {
        for step in graph.stages.iter().flat_map(|s| &s.steps) {
            if let StepKey::Known { key, inputs } = &step.key {
                self.records
                    .insert(step.slot.clone(), (key.clone(), inputs.clone()));
                if step.outcome == Some(StepOutcome::WouldRun) {
                    self.cached.insert(key.clone());
                }
            }
        }
    }

    /// An image `name` in the store with manifest `digest` and `env`.
    fn image(mut self, name: &str, digest: &str, env: &[(&str, &str)]) -> Self {
        let platform = "linux/amd64";
        let inputs = vec![KeyInput::Base {
            image: name.into(),
            digest: digest.into(),
            platform: platform.into(),
        }];
        let key = base_key(digest, platform);
        let mut state = StageState::empty(&Platform::host(), &key, inputs);
        for (k, v) in env {
            state.config.run_mut().set_env(k, v);
        }
        self.images.insert(name.into(), state);
        self
    }
}

fn request(text: &str, args: &[(&str, &str)]) -> BuildRequest {
    BuildRequest {
        dockerfile: text.into(),
        context: "/nonexistent-context".into(),
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..BuildRequest::default()
    }
}

fn plan_req(req: &BuildRequest, view: &FakeView) -> BuildGraph {
    let doc = cairn_dockerfile::parse_deferring_quotes(&req.dockerfile).unwrap();
    let input = PlanInput {
        req,
        platform: None,
    };
    plan_build(&doc, &input, view).unwrap()
}

fn plan(text: &str, view: &FakeView) -> BuildGraph {
    plan_req(&request(text, &[]), view)
}

/// The steps of the last stage.
fn last(graph: &BuildGraph) -> &[StepPlan] {
    &graph.stages.last().unwrap().steps
}

fn key(step: &StepPlan) -> &str {
    match &step.key {
        StepKey::Known { key, .. } => key,
        StepKey::Pending(p) => panic!("pending: {p:?}"),
    }
}

/// Plan `old`, record it as built, then plan `new`: the reasons of the
/// last stage's steps.
fn reasons_after(old: &BuildRequest, new: &BuildRequest, view: FakeView) -> Vec<Option<Reason>> {
    let mut view = view;
    let before = plan_req(old, &view);
    view.built(&before);
    last(&plan_req(new, &view))
        .iter()
        .map(|s| s.reason.clone())
        .collect()
}

#[test]
fn config_and_plain_run_steps_are_keyed_copy_and_mounts_wait_for_execution() {
    let g = plan(
        "FROM scratch\nENV A=1\nRUN x\nCOPY a /a\nRUN y\n",
        &FakeView::default(),
    );
    let steps = last(&g);
    assert_eq!(steps.len(), 5);
    assert_eq!(key(&steps[0]), "scratch");
    assert_eq!(steps[1].outcome, Some(StepOutcome::Config));
    assert_eq!(steps[2].outcome, Some(StepOutcome::WouldRun));
    assert_eq!(steps[3].key, StepKey::Pending(Pending::Sources));
    assert_eq!(steps[4].key, StepKey::Pending(Pending::After { line: 4 }));
    let g = plan(
        "FROM scratch\nRUN --mount=type=cache,target=/c x\n",
        &FakeView::default(),
    );
    assert_eq!(last(&g)[1].key, StepKey::Pending(Pending::MountSources));
}

#[test]
fn keys_chain_the_parent_and_are_the_executors() {
    let view = FakeView::default();
    let g = plan("FROM scratch\nENV A=1\nRUN x\n", &view);
    let steps = last(&g);
    // The same function and scope the executor's dispatch starts from.
    let req = request("FROM scratch\nENV A=1\nRUN x\n", &[]);
    let doc = cairn_dockerfile::parse(&req.dockerfile).unwrap();
    let input = PlanInput {
        req: &req,
        platform: None,
    };
    let env = crate::config::scratch(&Platform::host()).env();
    let scope = scope_at(&doc, &scope_input(&input, env), 0, 1).unwrap();
    assert_eq!(scope.vars.get("A").map(String::as_str), Some("1"));
    let run = &doc.stages[0].instructions[1];
    let expected = instruction_key(key(&steps[1]), run, &scope.vars, &scope.run_args).finish();
    assert_eq!(key(&steps[2]), expected);
    // A change before a step changes its key; planning again does not.
    let other = plan("FROM scratch\nENV A=2\nRUN x\n", &view);
    assert_ne!(key(&last(&other)[2]), key(&steps[2]));
    assert_eq!(
        key(&last(&plan("FROM scratch\nENV A=1\nRUN x\n", &view))[2]),
        expected
    );
}

#[test]
fn arg_scoping_decides_which_keys_a_build_arg_changes() {
    let text = "FROM scratch\nRUN before\nARG V\nRUN after\n";
    let view = FakeView::default();
    let one = plan_req(&request(text, &[("V", "1")]), &view);
    let two = plan_req(&request(text, &[("V", "2")]), &view);
    assert_eq!(key(&last(&one)[1]), key(&last(&two)[1]));
    assert_ne!(key(&last(&one)[3]), key(&last(&two)[3]));
}

#[test]
fn unneeded_stages_are_pruned_and_target_picks_the_stage() {
    let text = "FROM scratch AS a\nRUN a\nFROM scratch AS unused\nRUN u\n\
                FROM a AS final\nRUN f\n";
    let g = plan(text, &FakeView::default());
    assert_eq!(g.order, vec![0, 2]);
    assert_eq!(g.target, 2);
    assert_eq!(g.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(g.deps[2], vec![0]);
    let mut req = request(text, &[]);
    req.target = Some("UNUSED".into());
    let g = plan_req(&req, &FakeView::default());
    assert_eq!((g.target, g.order.clone()), (1, vec![1]));
    req.target = Some("nope".into());
    let doc = cairn_dockerfile::parse(text).unwrap();
    let input = PlanInput {
        req: &req,
        platform: None,
    };
    assert!(plan_build(&doc, &input, &FakeView::default()).is_err());
}

#[test]
fn a_stage_from_an_earlier_stage_starts_from_its_key_or_waits_for_it() {
    let g = plan(
        "FROM scratch AS a\nRUN a\nFROM a\nRUN b\n",
        &FakeView::default(),
    );
    assert_eq!(key(&g.stages[1].steps[0]), key(&g.stages[0].steps[1]));
    let g = plan(
        "FROM scratch AS a\nCOPY x /x\nFROM a\nRUN b\n",
        &FakeView::default(),
    );
    assert_eq!(
        g.stages[1].steps[0].key,
        StepKey::Pending(Pending::Stage { index: 0 })
    );
}

#[test]
fn the_stage_env_comes_from_the_base_image() {
    let text = "FROM base\nRUN echo $GREETING\n";
    let hello = FakeView::default().image("base", "sha256:aa", &[("GREETING", "hello")]);
    let bye = FakeView::default().image("base", "sha256:aa", &[("GREETING", "bye")]);
    assert_ne!(
        key(&last(&plan(text, &hello))[1]),
        key(&last(&plan(text, &bye))[1])
    );
}

#[test]
fn a_cached_run_is_a_hit_without_a_reason() {
    let req = request("FROM scratch\nRUN x\n", &[]);
    let reasons = reasons_after(&req, &req, FakeView::default());
    assert_eq!(reasons, vec![None, None]);
    let mut view = FakeView::default();
    view.built(&plan_req(&req, &view));
    assert_eq!(
        last(&plan_req(&req, &view))[1].outcome,
        Some(StepOutcome::Cached)
    );
}

#[test]
fn reason_not_built_before() {
    let g = plan("FROM scratch\nRUN x\n", &FakeView::default());
    assert_eq!(last(&g)[1].reason, Some(Reason::NotBuiltBefore));
}

#[test]
fn reason_no_cache() {
    let req = request("FROM scratch\nRUN x\n", &[]);
    let mut no_cache = req.clone();
    no_cache.no_cache = true;
    let reasons = reasons_after(&req, &no_cache, FakeView::default());
    assert_eq!(reasons[1], Some(Reason::NoCache));
}

#[test]
fn reason_layer_missing() {
    let req = request("FROM scratch\nRUN x\n", &[]);
    let mut view = FakeView::default();
    view.built(&plan_req(&req, &view));
    view.cached.clear(); // pruned
    assert_eq!(
        last(&plan_req(&req, &view))[1].reason,
        Some(Reason::LayerMissing)
    );
}

#[test]
fn reason_base_changed_and_base_not_in_store() {
    let req = request("FROM base\nRUN x\n", &[]);
    let mut view = FakeView::default().image("base", "sha256:aa", &[]);
    view.built(&plan_req(&req, &view));
    let view = FakeView {
        records: view.records,
        ..FakeView::default()
    }
    .image("base", "sha256:bb", &[]);
    let steps = plan_req(&req, &view);
    let from = &last(&steps)[0];
    assert!(matches!(
        &from.reason,
        Some(Reason::BaseChanged { image, old, new })
            if image == "base" && old.starts_with("sha256:aa") && new.starts_with("sha256:bb")
    ));
    // The RUN after it names the base as the root cause.
    assert!(matches!(
        &last(&steps)[1].reason,
        Some(Reason::ParentChanged { line: 1, cause: Some(c) }) if matches!(**c, Reason::BaseChanged { .. })
    ));
    let g = plan("FROM elsewhere\nRUN x\n", &FakeView::default());
    assert_eq!(
        last(&g)[0].key,
        StepKey::Pending(Pending::BaseNotInStore {
            image: "elsewhere".into()
        })
    );
}

#[test]
fn reason_stage_changed() {
    let old = request("FROM scratch AS a\nRUN a\nFROM a\nRUN b\n", &[]);
    let new = request("FROM scratch AS a\nRUN A\nFROM a\nRUN b\n", &[]);
    let reasons = reasons_after(&old, &new, FakeView::default());
    assert_eq!(reasons[0], Some(Reason::StageChanged { name: "a".into() }));
}

#[test]
fn reason_instruction_changed_and_parent_changed() {
    let old = request("FROM scratch\nRUN a\nRUN b\n", &[]);
    let new = request("FROM scratch\nRUN a2\nRUN b\n", &[]);
    let reasons = reasons_after(&old, &new, FakeView::default());
    assert_eq!(
        reasons[1],
        Some(Reason::InstructionChanged {
            old: "RUN a".into(),
            new: "RUN a2".into()
        })
    );
    assert!(matches!(
        &reasons[2],
        Some(Reason::ParentChanged { line: 2, cause: Some(c) })
            if matches!(**c, Reason::InstructionChanged { .. })
    ));
}

#[test]
fn reason_build_arg_changed_names_old_and_new() {
    let text = "FROM scratch\nARG V\nRUN x\n";
    let reasons = reasons_after(
        &request(text, &[("V", "1")]),
        &request(text, &[("V", "2")]),
        FakeView::default(),
    );
    assert_eq!(
        reasons[2],
        Some(Reason::VarChanged {
            name: "V".into(),
            arg: true,
            old: Some("1".into()),
            new: Some("2".into())
        })
    );
}

#[test]
fn reason_heredoc_changed() {
    let old = request("FROM scratch\nRUN <<EOF\necho 1\nEOF\n", &[]);
    let new = request("FROM scratch\nRUN <<EOF\necho 2\nEOF\n", &[]);
    let reasons = reasons_after(&old, &new, FakeView::default());
    assert_eq!(reasons[1], Some(Reason::HeredocChanged { index: 0 }));
}

#[test]
fn reason_setting_changed_for_from_platform() {
    let view = FakeView::default().image("base", "sha256:aa", &[]);
    let old = request("FROM --platform=linux/amd64 base\nRUN x\n", &[]);
    let new = request("FROM --platform=linux/arm64 base\nRUN x\n", &[]);
    let reasons = reasons_after(&old, &new, view);
    assert_eq!(
        reasons[0],
        Some(Reason::SettingChanged {
            name: "FROM --platform".into()
        })
    );
}

#[test]
fn input_errors_wait_for_the_executor() {
    // A quoting error (deferred to its stage, as BuildKit does) does not
    // fail the plan: the step and those after it are pending, and the build
    // reports it when it gets there.
    let g = plan("FROM scratch\nENV A=\"open\nRUN x\n", &FakeView::default());
    assert_eq!(
        last(&g)[1].key,
        StepKey::Pending(Pending::After { line: 2 })
    );
    assert_eq!(
        last(&g)[2].key,
        StepKey::Pending(Pending::After { line: 2 })
    );
}
