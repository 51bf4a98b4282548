//! The executing half of a build: the scheduler (stages in parallel, cancel, events), each
//! stage's steps, and the dispatch of one instruction.

mod dispatch;
mod scheduler;
mod stage;
mod step;
pub(crate) mod tasks;
#[cfg(test)]
mod tests;

pub(crate) use tasks::{FsTasks, LayerCommit, LayerCopy, SandboxTasks};

use crate::context::Context;
use crate::state::StageState;
use crate::BuildRequest;
use cairn_dockerfile::Dockerfile;

/// What every step of a stage reads: the build's request, Dockerfile and
/// context, and the stages built when the stage started.
#[derive(Clone, Copy)]
pub(crate) struct StageInputs<'a> {
    pub req: &'a BuildRequest,
    pub doc: &'a Dockerfile,
    pub context: &'a Context,
    pub done: &'a [Option<StageState>],
}
