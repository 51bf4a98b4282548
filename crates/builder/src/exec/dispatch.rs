//! One instruction of a stage: its cache key, then RUN, COPY/ADD, WORKDIR or a config edit.

use super::StageInputs;
use crate::config::{History, Runtime};
use crate::config_apply::{apply_config, history_text, StageProgress};
use crate::events::StepCtx;
use crate::keys::{short_digest, KeyInput};
use crate::report::StepOutcome;
use crate::state::{created_time, StageState};
use crate::{BuildError, Builder};
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::scope::Scope;
use cairn_dockerfile::{Command, Instruction};

impl Builder<'_> {
    /// Run one instruction of a stage (or of its base's ONBUILD triggers).
    pub(crate) fn dispatch(
        &self,
        inputs: &StageInputs,
        inst: &Instruction,
        scope: &Scope,
        state: &mut StageState,
        stage_state: &mut StageProgress,
        step: &StepCtx,
    ) -> Result<StepOutcome, BuildError> {
        let StageInputs {
            req,
            doc,
            context,
            done,
        } = *inputs;
        let (vars, run_args) = (&scope.vars, &scope.run_args);
        let file = req.dockerfile_name();
        let typed = inst.typed().map_err(|e| BuildError::parse(&file, &e))?;
        let line = crate::Position::line(&file, inst.line);
        let at = |m: String| BuildError::input_at(line.clone(), m);
        let mut key = crate::keys::instruction_key(&state.key, inst, vars, run_args);
        let mut outcome = StepOutcome::Config;
        match &typed.command {
            Command::Run(run) => {
                let workdir = state.config.working_dir();
                let expand = |w: &str| expand_word(w, vars, doc.escape).map_err(|e| e.to_string());
                let mounts = run
                    .mounts
                    .iter()
                    .map(|spec| {
                        crate::mounts::parse(spec, &workdir, &expand).map_err(|e| {
                            let at = crate::Position {
                                column: Some(spec.column),
                                ..crate::Position::line(&file, spec.line)
                            };
                            BuildError::input_at(at, format!("RUN --mount={}: {e}", spec.text))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let parts = self
                    .mount_key(&mounts, doc, context, done)
                    .map_err(|e| e.or_at(line.clone()))?;
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
                    doc,
                    inst,
                    run_args,
                    run,
                    context,
                    done,
                    mounts,
                };
                outcome = self
                    .run_step(req, state, &key, step, &inputs)
                    .map_err(|e| e.or_at(line.clone()))?;
                state.key = key;
            }
            Command::Copy(_) | Command::Add(_) => {
                let mut plan = crate::copy::plan(self, doc, context, &typed, vars, state, done)
                    .map_err(|e| e.or_at(line.clone()))?;
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
                state.pending_files = plan.pending_files.take();
                outcome = self
                    .copy_step(req, inst, plan, state, &key_with_sources)
                    .map_err(|e| e.or_at(line.clone()))?;
                state.key = key_with_sources;
            }
            command => {
                apply_config(command, doc.escape, vars, &mut state.config, stage_state)
                    .map_err(at)?;
                let (key, inputs) = key.finish_with_inputs();
                state.inputs = inputs;
                if matches!(command, Command::Workdir(_)) {
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
