//! WORKDIR makes its directory when the image lacks it, as a layer of its
//! own, owned by the USER of the moment with every parent it creates
//! (BuildKit's `llb.Mkdir(wd, 0755, WithParents, WithUser(user))`).

use crate::config::Runtime;
use crate::config_apply::history_text;
use crate::copy::{make_parents, TreeWriter};
use crate::image_write::StepCommit;
use crate::state::StageState;
use crate::view::LayerView;
use crate::BuildError;
use crate::{BuildRequest, Builder, StepOutcome};
use cairn_dockerfile::Instruction;

impl Builder<'_> {
    /// After WORKDIR set the config: make the dir if missing. `None` when it
    /// exists (a config-only step); else whether it ran or came from the cache.
    pub(crate) fn workdir_step(
        &self,
        req: &BuildRequest,
        inst: &Instruction,
        state: &mut StageState,
        key: &str,
    ) -> Result<Option<StepOutcome>, BuildError> {
        let dir = crate::context::clean(&state.config.working_dir());
        if dir.is_empty() {
            return Ok(None);
        }
        let created_by = history_text(inst);
        if let Some((layer, created)) = self.cached_layer(req, key)? {
            self.reuse_layer(state, layer, &created_by, created);
            return Ok(Some(StepOutcome::Cached));
        }
        self.ensure_extracted(state)?;
        let view = LayerView::new(self, state);
        let resolved = view.resolve(&dir, true);
        if view.lookup(&resolved).is_some() {
            return Ok(None);
        }
        if self.dry_run {
            return Ok(Some(StepOutcome::WouldRun));
        }
        let user = state.config.user();
        let passwd = view.read_to_string("etc/passwd");
        let group = view.read_to_string("etc/group");
        let at = crate::Position::line(req.dockerfile_name(), inst.line);
        let owner = cairn_sandbox::users::resolve_user(&user, &passwd, &group).map_err(|e| {
            BuildError::input_at(at.clone(), format!("WORKDIR {dir}: USER {user}: {e}"))
        })?;
        let owner = (owner.uid, owner.gid);
        if self.mapping.host_uid(owner.0).is_none() || self.mapping.host_gid(owner.1).is_none() {
            return Err(BuildError::input_at(at, format!(
                "WORKDIR {dir}: USER {user} is outside this user's ID mapping (add a subordinate range)"
            )));
        }
        let scratch = self.scratch_dir("workdir")?;
        let result = TreeWriter::new(self, &scratch, owner)
            .and_then(|mut writer| {
                make_parents(self, Some(&view), &mut writer, &resolved, Some(owner))?;
                writer.finish(self, &scratch)
            })
            .and_then(|()| {
                let commit = StepCommit {
                    key,
                    created_by: &created_by,
                };
                self.commit_upper(req, &scratch.join("upper"), &commit, None)
            });
        let _ = self.tasks.remove_tree(&scratch);
        self.add_layer(state, result?, &created_by);
        Ok(Some(StepOutcome::Ran))
    }
}
