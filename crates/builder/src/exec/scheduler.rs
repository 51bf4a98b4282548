//! The scheduler: the stages a target needs, each on its own thread once its dependencies are
//! built, at most `parallelism` at once; events delivered on the caller's thread; the first
//! failure or the caller's cancel stops the rest.

use super::StageInputs;
use crate::context::Context;
use crate::events::{BuildEvent, Msg};
use crate::memo::HashMemo;
use crate::plan::{platform_args, stage_graph, unused_build_args, PlanInput};
use crate::report::StepReport;
use crate::request::BuildRequest;
use crate::state::StageState;
use crate::{BuildError, Builder};
use cairn_dockerfile::scope::{global_scope, ScopeInput};
use cairn_sandbox::CancelToken;
use std::sync::{mpsc, Arc};
use std::time::Duration;

impl Builder<'_> {
    /// Run (or, dry, plan) every stage the target needs; the stages in
    /// order, the steps and the target's final state.
    pub(crate) fn run_stages(
        &self,
        req: &BuildRequest,
        memo: &Arc<HashMemo>,
        events: &mut dyn FnMut(&BuildEvent),
    ) -> Result<(Vec<usize>, Vec<StepReport>, StageState), BuildError> {
        let file = req.dockerfile_name();
        // Quoting errors wait until their stage is built, as in BuildKit.
        let doc = cairn_dockerfile::parse_deferring_quotes(&req.dockerfile)
            .map_err(|e| BuildError::parse(&file, &e))?;
        if let Some(org) = &req.organization {
            crate::tenancy::check_org(org)?;
        }
        for tag in &req.tags {
            crate::tenancy::check_tag(req.organization.as_deref(), tag)?;
        }
        let mut context = Context::open(
            &req.context,
            Some(req.dockerfile_path.as_path()).filter(|p| !p.as_os_str().is_empty()),
        )?
        .with_memo(memo.clone());
        context.organization = req.organization.clone();
        // The stage graph is the planner's: the executor runs its order.
        let input = PlanInput {
            req,
            platform: self.platform.clone(),
        };
        let crate::plan::StageGraph {
            target,
            order,
            deps,
        } = stage_graph(&doc, &input)?;
        let scope_input = ScopeInput {
            build_args: req.build_args.clone(),
            platform: platform_args(&self.target_platform()),
            ..ScopeInput::default()
        };
        let globals = global_scope(&doc, &scope_input).map_err(|e| BuildError::scope(&file, e))?;

        let unused = unused_build_args(&doc, &order, &req.build_args);
        if !unused.is_empty() {
            events(&BuildEvent::Warning {
                message: format!(
                    "one or more build args [{}] were not consumed",
                    unused.join(" ")
                ),
            });
        }
        let mut done: Vec<Option<StageState>> = vec![None; doc.stages.len()];
        let mut steps = Vec::new();
        // The build's own token: the caller's token or a failing stage
        // cancels it, and it stops every stage still running.
        let cancel = CancelToken::new();
        let user_cancel = self.caller_cancel(req);
        let (tx, rx) = mpsc::channel::<Msg>();
        let mut failure: Option<BuildError> = None;
        let mut records = Vec::new();
        std::thread::scope(|scope| {
            let mut pending = order.clone();
            let mut running = 0usize;
            loop {
                if user_cancel.is_cancelled() {
                    cancel.cancel();
                    failure.get_or_insert(BuildError::Cancelled);
                }
                while failure.is_none() && running < self.parallelism {
                    let Some(pos) = pending
                        .iter()
                        .position(|i| deps[*i].iter().all(|d| done[*d].is_some()))
                    else {
                        break;
                    };
                    let index = pending.remove(pos);
                    let before = done.clone();
                    let (tx, cancel) = (tx.clone(), cancel.clone());
                    let (doc, context, globals) = (&doc, &context, &globals);
                    scope.spawn(move || {
                        // A panic must still say the stage is over, or the
                        // loop below would wait for it forever.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let inputs = StageInputs {
                                req,
                                doc,
                                context,
                                done: &before,
                            };
                            self.build_stage(&inputs, index, globals, &tx, &cancel)
                        }))
                        .unwrap_or_else(|_| {
                            Err(BuildError::Internal(format!("stage {index} panicked")))
                        });
                        let _ = tx.send(Msg::StageDone(index, Box::new(result)));
                    });
                    running += 1;
                }
                if running == 0 {
                    break;
                }
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(Msg::Event(event)) => {
                        steps.extend(StepReport::from_event(&event));
                        events(&event);
                    }
                    Ok(Msg::Record(record)) => records.push(record),
                    Ok(Msg::StageDone(index, result)) => {
                        running -= 1;
                        match *result {
                            Ok(state) => done[index] = Some(state),
                            Err(e) => {
                                cancel.cancel();
                                // The first failure is the one to report; a
                                // sibling's "cancelled" is its consequence.
                                if failure.is_none()
                                    || matches!(failure, Some(BuildError::Cancelled))
                                        && !user_cancel.is_cancelled()
                                {
                                    failure = Some(e);
                                }
                            }
                        }
                    }
                    Err(_) => {}
                }
            }
        });
        self.record_steps(&records);
        // Cancelled by the caller: whatever a killed step said (a RUN may
        // die of the same Ctrl-C before the token is seen), that is why.
        if user_cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let final_state = done[target]
            .take()
            .ok_or_else(|| BuildError::input("target stage was not built"))?;
        Ok((order, steps, final_state))
    }

    /// The caller's token of `req`: its own, else the builder's.
    pub(crate) fn caller_cancel(&self, req: &BuildRequest) -> CancelToken {
        req.cancel
            .clone()
            .or_else(|| self.cancel.clone())
            .unwrap_or_default()
    }

    /// Keep the key and inputs of the steps whose key changed, for the
    /// next build's `--explain` (not a dry run's). Losing them loses only
    /// explanations, so a failure is a warning, not a failed build.
    fn record_steps(&self, records: &[cairn_store::cache::StepRecord]) {
        if self.dry_run {
            return;
        }
        if let Err(e) = self.store.put_step_records(records) {
            tracing::warn!("recording build steps for --explain: {e}");
        }
    }
}
