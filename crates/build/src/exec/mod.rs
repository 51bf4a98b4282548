//! The executing half of a build: the scheduler (stages in parallel, cancel, events), each
//! stage's steps, and the dispatch of one instruction.

mod dispatch;
mod scheduler;
mod stage;
mod step;
