//! The planning half of a build, which needs neither root nor a writable store: the stage
//! graph (which stages a target needs, in what order), the ARGs every build predefines, the
//! build args nothing consumes, the slots steps are compared by across builds, and the pure
//! planner (`planner`) that keys every step it can through a read-only [`CacheView`].

mod args;
mod cache_view;
mod graph;
mod planner;
mod slots;

pub(crate) use args::{platform_args, unused_build_args};
pub(crate) use cache_view::CacheView;
pub(crate) use graph::{needed_stages, stage_index};
pub(crate) use planner::{plan_build, stage_graph, PlanInput, StageGraph};
pub use planner::{BuildGraph, Pending, StagePlan, StepKey, StepPlan};
pub(crate) use slots::step_slots;

#[cfg(test)]
mod tests;
