//! The pure planner: a parsed Dockerfile, the build args, the target and a
//! read-only [`CacheView`] of the store in; the build graph out — the
//! stages the target needs in dependency order, each stage's steps, and
//! each step's cache key with the named inputs that made it, hit or miss,
//! and, against the last build of the same step, why it misses.
//!
//! It runs nothing, writes nothing and reads no file: keys whose inputs
//! only execution (or the context) can give are planned as
//! [`StepKey::Pending`], and the executor resolves them as it goes. Those
//! are COPY/ADD (their sources are digested from the context or read from
//! another stage's filesystem), `RUN --mount` (its sources likewise), the
//! base's ONBUILD triggers, a FROM image that is not in the store, and
//! every step after one of those in the same stage (keys chain). A stage
//! that starts from an earlier stage is keyed when that stage's last step is.
//!
//! Per-step input errors (a bad `$` expansion, a bad HEALTHCHECK flag, a
//! quoting error deferred to its stage) do not fail the plan: the step is
//! pending and the executor reports the error when it reaches the step, as
//! today, so a plan never fails a build that would not fail.

use super::cache_view::CacheView;
use super::{needed_stages, platform_args, stage_index, step_slots};
use crate::config::{ImageConfig, Runtime};
use crate::config_apply::{apply_config, StageProgress};
use crate::explain::{step_reason, Reason};
use crate::keys::{instruction_key, platform_key, KeyInput};
use crate::{BuildError, BuildRequest, StepOutcome};
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::scope::{global_scope, scope_at, ScopeInput};
use cairn_dockerfile::{Command, Dockerfile, Instruction};
use cairn_registry::Platform;
use std::collections::BTreeMap;

/// The build graph of one request.
#[derive(Debug, Clone)]
pub struct BuildGraph {
    /// The stage the build produces.
    pub target: usize,
    /// The stages the target needs, in dependency order.
    pub order: Vec<usize>,
    /// For every stage of the Dockerfile, the stages it reads (FROM,
    /// `COPY --from`, `--mount from=`); empty for stages not needed.
    pub deps: Vec<Vec<usize>>,
    /// The needed stages' plans, in `order`.
    pub stages: Vec<StagePlan>,
}

/// One stage of the graph.
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub index: usize,
    pub name: Option<String>,
    /// The FROM word after expansion with the global ARGs.
    pub base: String,
    /// FROM first, then each instruction.
    pub steps: Vec<StepPlan>,
}

/// One step of a stage.
#[derive(Debug, Clone)]
pub struct StepPlan {
    pub line: usize,
    pub text: String,
    /// Where the step stands across builds (the key of its last build's
    /// record, see `slots`).
    pub slot: String,
    pub key: StepKey,
    /// Known keys: `Cached` (a usable layer is in the store), `WouldRun`
    /// (a RUN whose key is not cached), `Config` (FROM and config-only
    /// instructions). None while the key is pending.
    pub outcome: Option<StepOutcome>,
    /// Why it would run (or why a config-only step's key changed), from
    /// the last build of the same step.
    pub reason: Option<Reason>,
}

/// A step's cache key as far as planning can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKey {
    /// The key and the inputs that made it, in hashing order.
    Known { key: String, inputs: Vec<KeyInput> },
    /// Only execution can finish it.
    Pending(Pending),
}

/// Why a key waits for execution.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pending {
    /// COPY/ADD: its sources are digested from the context (or from the
    /// source stage's filesystem) when the step runs.
    Sources,
    /// `RUN --mount`: its sources' digests likewise.
    MountSources,
    /// The FROM image is not in the store (it would be pulled or imported).
    BaseNotInStore { image: String },
    /// The base image's ONBUILD triggers run first.
    OnBuildTriggers,
    /// The stage starts from stage `index`, whose key is pending.
    Stage { index: usize },
    /// The step at `line` has a pending key (or an input error the
    /// executor will report), and keys chain.
    After { line: usize },
}

/// What a plan starts from besides the Dockerfile.
pub(crate) struct PlanInput<'a> {
    pub req: &'a BuildRequest,
    /// The build's platform (`--platform`), None for this machine's.
    pub platform: Option<Platform>,
}

/// The stages, order and dependencies of `req`'s target: what the
/// scheduler needs before anything runs. Fails as a build would: unknown
/// target, a cycle, a bad global ARG.
pub(crate) fn stage_graph(doc: &Dockerfile, input: &PlanInput) -> Result<StageGraph, BuildError> {
    let file = input.req.dockerfile_name();
    let target = match &input.req.target {
        Some(t) => stage_index(doc, t)
            .ok_or_else(|| BuildError::not_found(None, format!("target stage {t:?} not found")))?,
        None => doc.stages.len().saturating_sub(1),
    };
    let globals = global_scope(doc, &scope_input(input, vec![]))
        .map_err(|e| BuildError::input(format!("{file}: {e}")))?;
    let (order, deps) = needed_stages(doc, target, &globals)?;
    Ok(StageGraph {
        target,
        order,
        deps,
    })
}

/// The stages of a build without their steps: what the scheduler runs.
pub(crate) struct StageGraph {
    pub target: usize,
    /// The stages the target needs, in dependency order.
    pub order: Vec<usize>,
    /// The stages each stage reads.
    pub deps: Vec<Vec<usize>>,
}

/// Plan `doc` for `input` against `view`.
pub(crate) fn plan_build(
    doc: &Dockerfile,
    input: &PlanInput,
    view: &dyn CacheView,
) -> Result<BuildGraph, BuildError> {
    let StageGraph {
        target,
        order,
        deps,
    } = stage_graph(doc, input)?;
    let file = input.req.dockerfile_name();
    let globals = global_scope(doc, &scope_input(input, vec![]))
        .map_err(|e| BuildError::input(format!("{file}: {e}")))?;
    let mut ends: Vec<Option<StageEnd>> = vec![None; doc.stages.len()];
    let mut stages = Vec::new();
    for &index in &order {
        let (plan, end) = plan_stage(doc, input, view, &globals, &ends, index)?;
        ends[index] = Some(end);
        stages.push(plan);
    }
    Ok(BuildGraph {
        target,
        order,
        deps,
        stages,
    })
}

/// Where a planned stage ends: its last key and config, for the stages
/// that start from it.
#[derive(Debug, Clone)]
struct StageEnd {
    key: StepKey,
    config: ImageConfig,
}

/// A stage as the planner walks it: the last key, the config (for the ENV
/// later steps and stages see) and the last change of its own.
struct Walk<'v> {
    view: &'v dyn CacheView,
    slots: String,
    ordinal: usize,
    key: StepKey,
    config: ImageConfig,
    change: Option<(usize, Reason)>,
    no_cache: bool,
    steps: Vec<StepPlan>,
}

impl Walk<'_> {
    /// Add a step whose key is `key`; `runs` when a miss would run it.
    fn push(
        &mut self,
        line: usize,
        text: &str,
        key: StepKey,
        runs: bool,
    ) -> Result<(), BuildError> {
        self.ordinal += 1;
        let slot = format!("{}:{}", self.slots, self.ordinal);
        let (outcome, reason) = match &key {
            StepKey::Pending(_) => (None, None),
            StepKey::Known { key: k, inputs } => {
                let outcome = match runs {
                    false => StepOutcome::Config,
                    true if !self.no_cache && self.view.peek(k)?.is_some() => StepOutcome::Cached,
                    true => StepOutcome::WouldRun,
                };
                let old = self.view.step_record(&slot)?;
                let parent = self.change.as_ref();
                let reason = step_reason(old.as_ref(), k, inputs, outcome, self.no_cache, parent);
                (Some(outcome), reason)
            }
        };
        match &reason {
            Some(Reason::ParentChanged { .. }) | None => {}
            Some(own) => self.change = Some((line, own.clone())),
        }
        self.steps.push(StepPlan {
            line,
            text: text.to_string(),
            slot,
            key: key.clone(),
            outcome,
            reason,
        });
        self.key = key;
        Ok(())
    }

    /// The key after the last step, for an instruction at `line`: the
    /// parent's if known, else pending after the step that made it so.
    fn parent(&self, line: usize) -> Result<String, Pending> {
        match &self.key {
            StepKey::Known { key, .. } => Ok(key.clone()),
            StepKey::Pending(Pending::After { line }) => Err(Pending::After { line: *line }),
            StepKey::Pending(_) => Err(Pending::After {
                line: self.steps.last().map_or(line, |s| s.line),
            }),
        }
    }
}

fn plan_stage(
    doc: &Dockerfile,
    input: &PlanInput,
    view: &dyn CacheView,
    globals: &BTreeMap<String, String>,
    ends: &[Option<StageEnd>],
    index: usize,
) -> Result<(StagePlan, StageEnd), BuildError> {
    let stage = &doc.stages[index];
    let base = expand_word(&stage.base, globals, doc.escape).unwrap_or_else(|_| stage.base.clone());
    // A FROM --platform that does not parse fails the stage when it runs.
    let explicit = stage.platform.as_ref().map(|p| {
        let text = expand_word(p, globals, doc.escape).ok()?;
        text.parse::<Platform>().ok()
    });
    let platform = explicit
        .clone()
        .flatten()
        .or_else(|| input.platform.clone());
    let (key, config) = match explicit {
        Some(None) => (
            StepKey::Pending(Pending::After { line: stage.line }),
            crate::config::scratch(&Platform::host()),
        ),
        _ => base_key(doc, view, ends, index, &base, platform.as_ref())?,
    };
    let mut walk = Walk {
        view,
        slots: step_slots(input.req, index),
        ordinal: 0,
        key: StepKey::Pending(Pending::OnBuildTriggers),
        config: config.clone(),
        change: None,
        no_cache: input.req.no_cache,
        steps: Vec::new(),
    };
    let key = match (key, &platform) {
        (StepKey::Known { key, mut inputs }, Some(p)) => {
            inputs.push(KeyInput::Setting {
                name: "FROM --platform".into(),
                digest: p.to_string(),
            });
            let key = platform_key(&key, &p.to_string());
            StepKey::Known { key, inputs }
        }
        (key, _) => key,
    };
    walk.push(stage.line, &stage.original, key, false)?;
    if !walk.config.on_build().is_empty() {
        walk.key = StepKey::Pending(Pending::OnBuildTriggers);
    }
    let scope_input = ScopeInput {
        base_env: config.env(),
        ..scope_input(input, vec![])
    };
    let mut progress = StageProgress::default();
    for (i, inst) in stage.instructions.iter().enumerate() {
        let key = instruction_step_key(doc, &scope_input, index, i, inst, &mut walk, &mut progress);
        let runs = !is_config_only(inst);
        walk.push(inst.line, &inst.original, key, runs)?;
    }
    let end = StageEnd {
        key: walk.key.clone(),
        config: walk.config.clone(),
    };
    let plan = StagePlan {
        index,
        name: stage.name.clone(),
        base,
        steps: walk.steps,
    };
    Ok((plan, end))
}

/// RUN, COPY and ADD make layers (WORKDIR may too, under the same key as
/// its config edit); the rest only edit the config.
fn is_config_only(inst: &Instruction) -> bool {
    !matches!(
        inst.typed().map(|t| t.command),
        Ok(Command::Run(_) | Command::Copy(_) | Command::Add(_))
    )
}

/// The key of instruction `i` of stage `index`, or why it is pending.
fn instruction_step_key(
    doc: &Dockerfile,
    scope_input: &ScopeInput,
    index: usize,
    i: usize,
    inst: &Instruction,
    walk: &mut Walk,
    progress: &mut StageProgress,
) -> StepKey {
    let parent = match walk.parent(inst.line) {
        Ok(parent) => parent,
        Err(pending) => return StepKey::Pending(pending),
    };
    let here = StepKey::Pending(Pending::After { line: inst.line });
    if inst.deferred.is_some() {
        return here;
    }
    let Ok(scope) = scope_at(doc, scope_input, index, i) else {
        return here;
    };
    let Ok(typed) = inst.typed() else {
        return here;
    };
    match &typed.command {
        Command::Copy(_) | Command::Add(_) => return StepKey::Pending(Pending::Sources),
        Command::Run(run) if !run.mounts.is_empty() => {
            return StepKey::Pending(Pending::MountSources)
        }
        Command::Run(_) => {}
        command => {
            let applied =
                apply_config(command, doc.escape, &scope.vars, &mut walk.config, progress);
            if applied.is_err() {
                return here;
            }
        }
    }
    let (key, inputs) =
        instruction_key(&parent, inst, &scope.vars, &scope.run_args).finish_with_inputs();
    StepKey::Known { key, inputs }
}

/// The FROM step's key and the config the stage starts with.
fn base_key(
    doc: &Dockerfile,
    view: &dyn CacheView,
    ends: &[Option<StageEnd>],
    index: usize,
    base: &str,
    platform: Option<&Platform>,
) -> Result<(StepKey, ImageConfig), BuildError> {
    let for_platform = platform.cloned().unwrap_or_else(Platform::host);
    if base.eq_ignore_ascii_case("scratch") {
        let inputs = vec![KeyInput::Base {
            image: "scratch".into(),
            digest: String::new(),
            platform: for_platform.to_string(),
        }];
        let key = StepKey::Known {
            key: "scratch".into(),
            inputs,
        };
        return Ok((key, crate::config::scratch(&for_platform)));
    }
    if let Some(j) = stage_index(doc, base).filter(|j| *j < index) {
        if let Some(end) = &ends[j] {
            let key = match &end.key {
                StepKey::Known { key, .. } => StepKey::Known {
                    key: key.clone(),
                    inputs: vec![KeyInput::Stage {
                        name: base.to_string(),
                        key: key.clone(),
                    }],
                },
                StepKey::Pending(_) => StepKey::Pending(Pending::Stage { index: j }),
            };
            return Ok((key, end.config.clone()));
        }
    }
    let missing = || {
        let key = StepKey::Pending(Pending::BaseNotInStore {
            image: base.to_string(),
        });
        Ok((key, crate::config::scratch(&for_platform)))
    };
    if base.starts_with("oci:") || base.starts_with("oci-archive:") {
        return missing();
    }
    match view.image(base)? {
        Some(state) => Ok((
            StepKey::Known {
                key: state.key,
                inputs: state.inputs,
            },
            state.config,
        )),
        None => missing(),
    }
}

/// The scope every stage's steps start from: build args and the platform
/// ARGs, with `base_env` the stage's base ENV.
fn scope_input(input: &PlanInput, base_env: Vec<(String, String)>) -> ScopeInput {
    let target = input.platform.clone().unwrap_or_else(Platform::host);
    ScopeInput {
        build_args: input.req.build_args.clone(),
        platform: platform_args(&target),
        base_env,
    }
}

#[cfg(test)]
mod tests;
