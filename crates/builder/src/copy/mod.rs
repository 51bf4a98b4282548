//! COPY and ADD of context files, written straight into a fresh upper dir.
//!
//! `plan` resolves a COPY/ADD against the context and the image (sources, destination, owner,
//! mode, the key's digest); `exec` writes it into a fresh upper dir (or copies out of another
//! stage in a task); `tree_copy` copies context trees on every core (rootless it records
//! files in `deferred`, read straight into the tar); `tar_writer` gives entries their
//! owners; `fs` holds the small file-system helpers; `flags` the selection flags (`--exclude`, `--parents`, `--link`).

mod deferred;
mod exec;
mod flags;
mod fs;
mod known;
mod plan;
mod tar_writer;
mod tree_copy;

pub(crate) use fs::make_parents;
pub(crate) use known::KnownLayerWriter;
pub(crate) use plan::plan;
pub(crate) use tar_writer::TreeWriter;
