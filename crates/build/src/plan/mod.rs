//! The planning half of a build that needs neither a store nor root: which stages a target
//! needs and in what order, the ARGs every build predefines, the build args nothing consumes,
//! and the slots steps are compared by across builds.

mod args;
mod graph;
mod slots;

pub(crate) use args::{platform_args, unused_build_args};
pub(crate) use graph::{needed_stages, stage_index};
pub(crate) use slots::step_slots;

#[cfg(test)]
mod tests;
