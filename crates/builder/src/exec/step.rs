//! One step with its events (started, cached, layer committed, done) and the reason it ran.

use crate::events::{BuildEvent, StepCtx};
use crate::explain::{step_reason, Reason};
use crate::plan::CacheView;
use crate::report::StepOutcome;
use crate::request::BuildRequest;
use crate::state::StageState;
use crate::{BuildError, Builder};
use std::time::Instant;

impl Builder<'_> {
    /// One step with its events: started, cached, layer committed, done.
    pub(crate) fn step(
        &self,
        req: &BuildRequest,
        ctx: &StepCtx,
        text: &str,
        state: &mut StageState,
        work: impl FnOnce(&mut StageState) -> Result<StepOutcome, BuildError>,
    ) -> Result<StepOutcome, BuildError> {
        ctx.check_cancelled()?;
        let started = Instant::now();
        let (stage, line, text) = (ctx.stage, ctx.line, text.to_string());
        ctx.emit(BuildEvent::StepStarted {
            stage,
            line,
            text: text.clone(),
        });
        let layers_before = state.layers.len();
        let outcome = match &state.missing_base {
            // A dry run cannot key anything after a base it does not have.
            Some(_) => StepOutcome::WouldRun,
            None => work(state)?,
        };
        // FROM found that base missing just now: it would be pulled.
        let outcome = match &state.missing_base {
            Some(_) => StepOutcome::WouldRun,
            None => outcome,
        };
        let reason = self.explain(req, ctx, state, outcome)?;
        match outcome {
            StepOutcome::Cached => ctx.emit(BuildEvent::StepCached {
                stage,
                line,
                text: text.clone(),
            }),
            StepOutcome::Ran => {
                if let Some(layer) = state.layers.get(layers_before..).and_then(|l| l.last()) {
                    ctx.emit(BuildEvent::LayerCommitted {
                        stage,
                        line,
                        digest: layer.digest,
                        diff_id: layer.diff_id,
                        size: layer.size,
                    });
                }
            }
            StepOutcome::Config | StepOutcome::WouldRun => {}
        }
        ctx.emit(BuildEvent::StepDone {
            stage,
            line,
            text,
            outcome,
            duration: started.elapsed(),
            reason,
        });
        Ok(outcome)
    }

    /// Why a step ran or would run (for a config-only step: why its key
    /// changed), from the last build of the same step; records this build
    /// of it when its key is new.
    fn explain(
        &self,
        req: &BuildRequest,
        ctx: &StepCtx,
        state: &mut StageState,
        outcome: StepOutcome,
    ) -> Result<Option<Reason>, BuildError> {
        // This step's COPY files not listed yet (a recorded scan), if any.
        let mut pending = state.pending_files.take();
        if let Some(image) = &state.missing_base {
            return Ok(Some(Reason::BaseNotInStore {
                image: image.clone(),
            }));
        }
        // A cached step has no reason: its old inputs (one per context
        // file a COPY reads) are not parsed, which was most of the CPU of
        // a cached rebuild of a big context.
        let old = match outcome {
            StepOutcome::Cached => self
                .store
                .step_record(&ctx.slot)?
                .map(|r| (r.key, Vec::new())),
            _ => CacheView::step_record(self, &ctx.slot)?,
        };
        let changed = old.as_ref().is_none_or(|(key, _)| *key != state.key);
        if changed || !matches!(outcome, StepOutcome::Cached) {
            state.pending_files = pending.take();
            state.list_pending_files()?;
        }
        let parent = state.change.as_ref();
        let reason = step_reason(
            old.as_ref(),
            &state.key,
            &state.inputs,
            outcome,
            req.no_cache,
            parent,
        );
        if changed {
            ctx.record(cairn_store::cache::StepRecord {
                slot: ctx.slot.clone(),
                key: state.key.clone(),
                inputs: serde_json::to_string(&state.inputs).unwrap_or_default(),
            });
        }
        match &reason {
            Some(Reason::ParentChanged { .. }) | None => {}
            Some(own) => state.change = Some((ctx.line, own.clone())),
        }
        Ok(reason)
    }
}
