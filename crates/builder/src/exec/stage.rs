//! One stage: its FROM, its base's ONBUILD triggers, then each instruction in its scope.

use super::StageInputs;
use crate::base::record_platform;
use crate::config::{Field, Runtime};
use crate::config_apply::StageProgress;
use crate::events::{Msg, StepCtx};
use crate::plan::{platform_args, step_slots};
use crate::report::StepOutcome;
use crate::state::StageState;
use crate::{BuildError, Builder};
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::scope::{scope_at, Scope, ScopeInput};
use cairn_registry::Platform;
use cairn_sandbox::CancelToken;
use std::collections::BTreeMap;
use std::sync::mpsc;

impl Builder<'_> {
    pub(crate) fn build_stage(
        &self,
        inputs: &StageInputs,
        index: usize,
        globals: &BTreeMap<String, String>,
        tx: &mpsc::Sender<Msg>,
        cancel: &CancelToken,
    ) -> Result<StageState, BuildError> {
        let StageInputs { req, doc, done, .. } = *inputs;
        let file = req.dockerfile_name();
        let stage = &doc.stages[index];
        let slots = step_slots(req, index);
        let ordinal = std::cell::Cell::new(0usize);
        let caller = self.caller_cancel(req);
        let ctx = |line: usize| {
            ordinal.set(ordinal.get() + 1);
            StepCtx {
                tx: tx.clone(),
                stage: index,
                line,
                cancel: cancel.clone(),
                caller: caller.clone(),
                slot: format!("{slots}:{}", ordinal.get()),
            }
        };
        let from_at = crate::Position::line(&file, stage.line);
        let base = expand_word(&stage.base, globals, doc.escape).map_err(|e| {
            BuildError::input_at(from_at.clone(), format!("FROM {}: {e}", stage.base))
        })?;
        let mut state = StageState::empty(&self.target_platform(), "", vec![]);
        let platform = match &stage.platform {
            Some(p) => Some(
                expand_word(p, globals, doc.escape)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        text.parse::<Platform>()
                            .map_err(|e| format!("{text:?}: {e}"))
                    })
                    .map_err(|e| {
                        BuildError::input_at(from_at.clone(), format!("FROM --platform={e}"))
                    })?,
            ),
            None => None,
        };
        // FROM --platform, else the build's --platform (None: the host's).
        let platform = platform.or_else(|| self.platform.clone());
        let from_step = ctx(stage.line);
        self.step(req, &from_step, &stage.original, &mut state, |state| {
            crate::tenancy::check_readable(req.organization.as_deref(), &base, "FROM")
                .map_err(|e| e.at_from(from_at.clone()))?;
            let for_platform = platform.clone().unwrap_or_else(Platform::host);
            *state = self
                .resolve_base(
                    &base,
                    doc,
                    done,
                    &from_step,
                    req.organization.as_deref(),
                    &for_platform,
                )
                .map_err(|e| e.at_from(from_at.clone()))?;
            if let Some(platform) = &platform {
                record_platform(state, platform, &base, &from_step);
            }
            Ok(StepOutcome::Config)
        })?;

        let mut stage_state = StageProgress::default();
        // The base's ONBUILD triggers run first, with the base's ENV only
        // (BuildKit's dispatchOnBuildTriggers); the new image keeps none.
        let triggers = state.config.on_build();
        if !triggers.is_empty() {
            state.config.run_mut().on_build = Field::Null;
            let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
            let trigger_doc = cairn_dockerfile::parse(&text).map_err(|e| {
                let at = crate::Position::line(&file, stage.line);
                BuildError::input_at(at, format!("an ONBUILD trigger of {base}: {e}"))
            })?;
            let instructions = trigger_doc
                .stages
                .first()
                .map(|s| s.instructions.as_slice())
                .unwrap_or_default();
            for trigger in instructions {
                let vars: BTreeMap<String, String> = state.config.env().into_iter().collect();
                let mut inst = trigger.clone();
                inst.line = stage.line;
                // Its positions are in the trigger text, not this file.
                inst.positions = Default::default();
                let step = ctx(stage.line);
                let text = format!("ONBUILD {}", inst.original);
                self.step(req, &step, &text, &mut state, |state| {
                    let scope = Scope {
                        vars: vars.clone(),
                        run_args: BTreeMap::new(),
                    };
                    self.dispatch(inputs, &inst, &scope, state, &mut stage_state, &step)
                })?;
            }
        }

        // The scope replays the stage's ENV and ARG lines over the env the
        // stage started with (after its base's triggers); replaying them over
        // the current env would expand each ENV again with later values.
        let scope_input = ScopeInput {
            build_args: req.build_args.clone(),
            base_env: state.config.env(),
            platform: platform_args(&self.target_platform()),
        };
        for (i, inst) in stage.instructions.iter().enumerate() {
            if let Some(e) = &inst.deferred {
                return Err(BuildError::parse(&file, e));
            }
            let scope =
                scope_at(doc, &scope_input, index, i).map_err(|e| BuildError::scope(&file, e))?;
            let step = ctx(inst.line);
            self.step(req, &step, &inst.original, &mut state, |state| {
                self.dispatch(inputs, inst, &scope, state, &mut stage_state, &step)
            })?;
        }
        Ok(state)
    }
}
