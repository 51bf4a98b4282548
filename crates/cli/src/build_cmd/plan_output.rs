//! `cairn build --dry-run`: the plan on stdout, one line per step, and
//! nothing changed in the store.

use super::progress::{ProgressMode, Renderer};
use crate::exit::CliError;
use crate::registry_cmds::ResultFormat;
use cairn::build::{BuildRequest, Builder, Plan, StepKey, StepOutcome, StepReport};

/// Plan `req` and print it (text or JSON); progress events go to stderr
/// as a build's would.
pub fn dry_run(
    builder: &Builder,
    req: &BuildRequest,
    mode: ProgressMode,
    format: ResultFormat,
) -> Result<(), CliError> {
    let mut renderer = Renderer::new(mode).with_explain(true);
    let plan = builder
        .plan(req, &mut |event| renderer.event(event))
        .map_err(super::build_failure)?;
    renderer.finish();
    match format {
        ResultFormat::Text => {
            for step in &plan.steps {
                println!("{}", step_line(step));
            }
        }
        ResultFormat::Json => println!("{}", plan_json(&plan)),
    }
    Ok(())
}

/// `miss   stage 0 line 4: COPY a.txt /a: context file a.txt changed`
fn step_line(step: &StepReport) -> String {
    let status = status(step.outcome);
    let text = step.text.lines().next().unwrap_or_default();
    let head = format!(
        "{status:<6} stage {} line {}: {text}",
        step.stage, step.line
    );
    match &step.reason {
        Some(reason) => format!("{head}  <- {reason}"),
        None => head,
    }
}

/// hit (from the cache), miss (would run), config (changes only the config).
fn status(outcome: StepOutcome) -> &'static str {
    match outcome {
        StepOutcome::Cached => "hit",
        StepOutcome::WouldRun | StepOutcome::Ran => "miss",
        StepOutcome::Config => "config",
    }
}

fn plan_json(plan: &Plan) -> serde_json::Value {
    let steps: Vec<_> = plan
        .steps
        .iter()
        .map(|s| {
            // The planner's key of the step, or why only execution can tell it.
            let planned = plan
                .graph
                .stages
                .iter()
                .filter(|g| g.index == s.stage)
                .flat_map(|g| &g.steps)
                .find(|p| p.line == s.line);
            let (key, pending) = match planned.map(|p| &p.key) {
                Some(StepKey::Known { key, .. }) => (Some(key), None),
                Some(StepKey::Pending(why)) => (None, Some(why)),
                None => (None, None),
            };
            serde_json::json!({
                "key": key,
                "key_pending": pending,
                "stage": s.stage,
                "line": s.line,
                "text": s.text,
                "status": status(s.outcome),
                "reason": s.reason,
                "why": s.reason.as_ref().map(|r| r.to_string()),
            })
        })
        .collect();
    serde_json::json!({ "stages": plan.stages, "steps": steps })
}
