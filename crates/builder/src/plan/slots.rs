//! Step slots: where a step stands (context, Dockerfile, stage, ordinal), so a build is
//! compared with the last build of the same place (`--explain`, `--dry-run`).

use crate::keys::short_digest;
use crate::request::BuildRequest;

/// The prefix of the slots of a stage's steps: the same Dockerfile and
/// context give the same slots, so a build is compared with the last one.
pub(crate) fn step_slots(req: &BuildRequest, stage: usize) -> String {
    let context = std::fs::canonicalize(&req.context).unwrap_or_else(|_| req.context.clone());
    let dockerfile =
        std::path::absolute(&req.dockerfile_path).unwrap_or_else(|_| req.dockerfile_path.clone());
    let place = format!("{}\0{}", context.display(), dockerfile.display());
    format!("{}:{stage}", short_digest(place.as_bytes()))
}
