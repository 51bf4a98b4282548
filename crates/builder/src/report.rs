//! What a build tells its caller: each step's outcome and reason, the plan of a dry run, the result.

use crate::explain::Reason;
use cairn_layer::Digest;

/// How a step was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// It ran (RUN executed, COPY copied) and made a new layer.
    Ran,
    /// Its layer came from the build cache; nothing ran.
    Cached,
    /// It only changed the image config (ENV, CMD, FROM, ...): nothing to run.
    Config,
    /// A dry run: it missed the cache and would run.
    WouldRun,
}

/// One step, for the caller's progress output.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub stage: usize,
    pub line: usize,
    pub text: String,
    pub outcome: StepOutcome,
    /// Why it ran (or, for a config-only step, why its key changed).
    pub reason: Option<Reason>,
}

impl StepReport {
    /// The report of a [`BuildEvent::StepDone`] (None for other events).
    pub fn from_event(event: &crate::BuildEvent) -> Option<StepReport> {
        match event {
            crate::BuildEvent::StepDone {
                stage,
                line,
                text,
                outcome,
                reason,
                ..
            } => Some(StepReport {
                stage: *stage,
                line: *line,
                text: text.clone(),
                outcome: *outcome,
                reason: reason.clone(),
            }),
            _ => None,
        }
    }
}

/// What a build would do (`cairn build --dry-run`): every step of the
/// stages the target needs, in the order they were planned, with hit or
/// miss and, for a miss, why.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stages built, in dependency order.
    pub stages: Vec<usize>,
    pub steps: Vec<StepReport>,
    /// The planner's graph of the same request: every stage and step with
    /// its cache key where planning alone can tell it, pending where only
    /// execution can (COPY/ADD sources, `RUN --mount` sources, ...).
    pub graph: crate::BuildGraph,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub manifest: Digest,
    pub steps: Vec<StepReport>,
    /// Context files whose content was read to digest COPY/ADD sources
    /// (the others were served by the memoised hashes).
    pub context_files_read: u64,
}
