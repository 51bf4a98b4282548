//! A helper started before its sandbox exists ([`super::Launcher::start_early`]).
//!
//! A `run --rm` spends ~1 ms opening the store and creating the sandbox,
//! then ~0.4 ms (root) or ~1.8 ms (rootless: two setuid map tools) starting
//! its helper. The helper needs nothing of the sandbox to fork, unshare and
//! be mapped, only the ID mapping, so it can do all that while the caller
//! creates; the request follows once the caller has it. A subordinate
//! range's map tools the helper runs for itself (`selfmap.rs`); maps
//! written directly (real root) are written at the end, when the helper
//! has long unshared: the caller never waits for the fork's child to run. Its protocol is the
//! usual one with the request moved after the maps (`helper.rs`,
//! `serve_early`).

use super::Helper;
use crate::idmap::IdMapping;
use crate::protocol::Request;
use crate::SandboxError;
use std::path::Path;

/// A helper in its namespaces, mapped (or being mapped) for `mapping`,
/// waiting for its request. Dropped unused, it is killed and reaped (its
/// map tools' waiters, its children, exit once it is gone): nothing of it
/// outlives the caller's error path.
pub struct EarlyHelper {
    pub(super) helper: Option<Helper>,
    pub(super) mapping: IdMapping,
    /// The helper writes its own maps (`selfmap.rs`); else this process
    /// writes them once the helper has unshared.
    pub(super) self_mapped: bool,
}

impl EarlyHelper {
    /// The ID mapping it was started for.
    pub fn id_mapping(&self) -> &IdMapping {
        &self.mapping
    }

    /// The helper's pid (for tests: it must be gone once this is dropped).
    pub fn pid(&self) -> Option<u32> {
        self.helper.as_ref().map(|h| h.child.id())
    }

    /// Finish the maps, send `request`, join `cgroups`, let PID 1 start.
    pub(super) fn finish(
        mut self,
        request: &Request,
        cgroups: &[&Path],
    ) -> Result<Helper, SandboxError> {
        let Some(mut helper) = self.helper.take() else {
            return Err(SandboxError::TaskFailed("the early helper is gone".into()));
        };
        let mapped = helper
            .await_unshared()
            .and_then(|()| match self.self_mapped {
                true => Ok(()),
                false => super::write_id_maps(helper.child.id(), &self.mapping),
            });
        let handed = mapped
            .and_then(|()| helper.send_request(request))
            .and_then(|()| helper.release(cgroups));
        helper.finish_on_error(handed).map(|()| helper)
    }
}

impl Drop for EarlyHelper {
    fn drop(&mut self) {
        if let Some(mut helper) = self.helper.take() {
            let _ = helper.child.kill();
            let _ = helper.child.wait();
        }
    }
}
