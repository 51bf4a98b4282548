//! One instruction of a stage: its cache key, then RUN, COPY/ADD, WORKDIR or a config edit.

use crate::config::{History, Runtime};
use crate::config_apply::{apply_config, history_text, StageProgress};
use crate::context::Context;
use crate::events::StepCtx;
use crate::keys::{short_digest, KeyBuilder, KeyInput};
use crate::report::StepOutcome;
use crate::request::BuildRequest;
use crate::state::{created_time, StageState};
use crate::{BuildError, Builder};
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::{Dockerfile, Instruction};
use std::collections::BTreeMap;

impl Builder<'_> {
    /// Run one instruction of a stage (or of its base's ONBUILD triggers).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch(
        &self,
        req: &BuildRequest,
        doc: &Dockerfile,
        context: &Context,
        inst: &Instruction,
        vars: &BTreeMap<String, String>,
        run_args: &BTreeMap<String, String>,
        state: &mut StageState,
        done: &[Option<StageState>],
        stage_state: &mut StageProgress,
        step: &StepCtx,
    ) -> Result<StepOutcome, BuildError> {
        let file = req.dockerfile_name();
        let at = |m: String| BuildError::input(format!("{file}:{}: {m}", inst.line));
        let mut key = KeyBuilder::after(&state.key)
            .instruction(&inst.original)
            .vars(vars, run_args);
        for (i, h) in inst.heredocs.iter().enumerate() {
            key = key.heredoc(i, &h.body);
        }
        let mut outcome = StepOutcome::Config;
        match inst.name.as_str() {
            "run" => {
                let workdir = state.config.working_dir();
                let expand = |w: &str| expand_word(w, vars, doc.escape).map_err(|e| e.to_string());
                let mounts = inst
                    .flags
                    .get("mount")
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        crate::mounts::parse(v, &workdir, &expand)
                            .map_err(|e| at(format!("RUN --mount={v}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let parts = self.mount_key(&mounts, doc, context, done)?;
                if !parts.is_empty() {
                    let mut joined = String::new();
                    for (source, part) in &parts {
                        joined.push_str(part);
                        joined.push('\0');
                        key = key.note(KeyInput::Mount {
                            source: source.clone(),
                            digest: short_digest(part.as_bytes()),
                        });
                    }
                    key = key.field(joined.as_bytes());
                }
                // What a secret let a step make is its organization's alone.
                if mounts
                    .iter()
                    .any(|m| m.kind == crate::mounts::MountType::Secret)
                {
                    let scope = req.organization.as_deref().map(crate::tenancy::namespace);
                    let scope = format!("secret-scope:{scope:?}");
                    let input = KeyInput::Setting {
                        name: "secret scope".into(),
                        digest: short_digest(scope.as_bytes()),
                    };
                    key = key.named(scope.as_bytes(), input);
                }
                let (key, inputs) = key.finish_with_inputs();
                state.inputs = inputs;
                let inputs = crate::run::RunInputs {
                    context,
                    done,
                    mounts,
                };
                outcome = self.run_step(req, doc, inst, run_args, state, &key, step, &inputs)?;
                state.key = key;
            }
            "copy" | "add" => {
                let mut plan = crate::copy::plan(self, doc, context, inst, vars, state, done)?;
                for input in std::mem::take(&mut plan.inputs) {
                    key = key.note(input);
                }
                let setting = KeyInput::Setting {
                    name: "sources, owner, mode and flags".into(),
                    digest: short_digest(plan.sources_digest.as_bytes()),
                };
                let (key_with_sources, inputs) = key
                    .named(plan.sources_digest.as_bytes(), setting)
                    .finish_with_inputs();
                state.inputs = inputs;
                outcome = self.copy_step(req, inst, plan, state, &key_with_sources)?;
                state.key = key_with_sources;
            }
            _ => {
                apply_config(inst, doc.escape, vars, &mut state.config, stage_state).map_err(at)?;
                let (key, inputs) = key.finish_with_inputs();
                state.inputs = inputs;
                if inst.name == "workdir" {
                    if let Some(made) = self.workdir_step(req, inst, state, &key)? {
                        state.key = key;
                        return Ok(made);
                    }
                }
                let created = req
                    .timestamp
                    .map(|t| created_time(Some(t)))
                    .unwrap_or_else(|| state.created.clone());
                state
                    .config
                    .push_history(History::new(&created, &history_text(inst), true));
                state.key = key;
            }
        }
        Ok(outcome)
    }
}
