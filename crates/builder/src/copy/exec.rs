//! A planned COPY/ADD written into a fresh upper dir and committed as the step's layer (or its
//! cached layer reused): context files, heredocs, URLs and archives by the caller (or a task),
//! `COPY --from` in a task over the source stage's layers.

use super::flags;
use super::fs::{join, make_parents, parent, set_perm, set_times};
use super::plan::{CopyPlan, FromSource, Source};
use super::tar_writer::TreeWriter;
use super::tree_copy::TreeCopy;
use crate::config_apply::history_text;
use crate::context::Context;
use crate::image_write::StepCommit;
use crate::state::StageState;
use crate::view::LayerView;
use crate::{BuildError, BuildRequest, Builder, StepOutcome};
use cairn_dockerfile::{Dockerfile, Instruction};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

impl Builder<'_> {
    /// Run one COPY/ADD (or reuse its cached layer). Says whether it ran or came from the cache.
    pub(crate) fn copy_step(
        &self,
        req: &BuildRequest,
        inst: &Instruction,
        plan: CopyPlan,
        state: &mut StageState,
        key: &str,
    ) -> Result<StepOutcome, BuildError> {
        let created_by = history_text(inst);
        if let Some((layer, created)) = self.cached_layer(req, key)? {
            self.reuse_layer(state, layer, &created_by, created);
            return Ok(StepOutcome::Cached);
        }
        if self.dry_run {
            return Ok(StepOutcome::WouldRun);
        }
        if let Some((uid, gid)) = plan.owner {
            if self.mapping.host_uid(uid).is_none() || self.mapping.host_gid(gid).is_none() {
                return Err(BuildError::input(format!(
                    "--chown={uid}:{gid}: outside this user's ID mapping (add a subordinate range)"
                )));
            }
        }
        self.ensure_extracted(state)?;
        let dir = self.scratch_dir("copy")?;
        let written = {
            let _span = cairn_layer::timing::span("copy.write_tree");
            self.write_copy_step(state, &plan, &dir)
        };
        let result = written.and_then(|known| {
            let commit = StepCommit {
                key,
                created_by: &created_by,
            };
            self.commit_upper(req, &dir.join("upper"), &commit, known.as_ref())
        });
        let removed = cairn_layer::timing::span("copy.remove_scratch");
        remove_scratch(self, &dir);
        drop(removed);
        self.add_layer(state, result?, &created_by);
        Ok(StepOutcome::Ran)
    }

    fn write_copy_step(
        &self,
        state: &StageState,
        plan: &CopyPlan,
        dir: &Path,
    ) -> Result<Option<cairn_layer::KnownEntries>, BuildError> {
        let view = LayerView::new(self, state);
        let upper = dir.join("upper");
        let target_dir = if plan.dest_is_dir {
            plan.dest.clone()
        } else {
            parent(&plan.dest)
        };
        let mut writer = TreeWriter::new(self, dir, plan.owner.unwrap_or((0, 0)))?;
        if plan.flags.link {
            make_parents(self, None, &mut writer, &target_dir, plan.owner)?;
        } else {
            make_parents(self, Some(&view), &mut writer, &target_dir, plan.owner)?;
        }
        if plan.from.is_none() {
            write_copy(&plan.sources, plan, &mut writer)?;
        }
        if let Some((mode, secs, nanos)) = plan.link_dest.filter(|_| !plan.dest.is_empty()) {
            let path = writer.root.join(&plan.dest);
            set_perm(&path, mode)?;
            set_times(&path, secs, nanos)?;
        }
        // What the copies wrote, for the commit: only when they wrote all
        // of the tree below their destination dirs.
        let known = match plan.from {
            None => writer.take_known(),
            Some(_) => None,
        };
        let finished = cairn_layer::timing::span("copy.tree_owners");
        writer.finish(self, dir)?;
        drop(finished);
        if let Some(from) = &plan.from {
            self.copy_from(plan, from, dir)?;
        }
        for source in &plan.sources {
            if let Source::Archive { rel } = source {
                let archive = plan.context_root.join(rel);
                let dest = upper.join(&plan.dest);
                std::fs::create_dir_all(&dest).map_err(BuildError::io(&dest))?;
                crate::archive::extract(self, &archive, &dest, plan.owner, dir)?;
            }
        }
        Ok(known)
    }
}

impl Builder<'_> {
    /// The state `COPY --from=NAME` reads: an earlier stage, else an image.
    pub(crate) fn source_stage(
        &self,
        doc: &Dockerfile,
        name: &str,
        done: &[Option<StageState>],
        context: &Context,
    ) -> Result<StageState, BuildError> {
        if let Some(Some(state)) = crate::plan::stage_index(doc, name).and_then(|i| done.get(i)) {
            return Ok(state.clone());
        }
        let org = context.organization.as_deref();
        crate::tenancy::check_readable(org, name, "--from")?;
        let manifest = self.store.resolve(name)?;
        crate::tenancy::check_pinned(self.store, org, name, &manifest, "--from")?;
        self.load_image(name, &manifest)
    }

    /// `COPY --from`: a task reads the source stage's layers as one tree
    /// (read-only overlay) and copies into the upper dir, keeping owners.
    /// Paths left out of a copy are hidden by a mask layer on top.
    fn copy_from(&self, plan: &CopyPlan, from: &FromSource, dir: &Path) -> Result<(), BuildError> {
        self.ensure_extracted(&from.state)?;
        let upper = dir.join("upper");
        let view = LayerView::new(self, &from.state);
        for (index, copy) in from.copies.iter().enumerate() {
            if copy.sources.is_empty() {
                continue; // every source was excluded
            }
            let mut layers = self.layer_dirs(&from.state);
            if !copy.whiteouts.is_empty() {
                layers.push(flags::write_mask(self, &view, &copy.whiteouts, dir, index)?);
            }
            let copy = crate::exec::LayerCopy {
                layers,
                mountpoint: dir.join("merged"),
                sources: copy.sources.clone(),
                dest: upper.join(&plan.dest),
                dest_is_dir: plan.dest_is_dir,
                // Inside the task's user namespace, IDs are container IDs.
                owner: plan.owner,
                chmod: plan.chmod.clone(),
            };
            self.tasks.copy_from_layers(copy)?;
        }
        Ok(())
    }
}

/// Remove a COPY's scratch dir. Rootless, once the commit adopted the
/// upper dir, what is left (the staging dirs) is the caller's own: removed
/// here, without starting a helper in a user namespace (`newuidmap` and
/// `newgidmap` each time); what the caller cannot remove (a failed step's
/// upper dir, owned by subordinate IDs) is left to the task.
fn remove_scratch(builder: &Builder, dir: &Path) {
    if !nix::unistd::geteuid().is_root() && std::fs::remove_dir_all(dir).is_ok() {
        return;
    }
    let _ = builder.tasks.remove_tree(dir);
}

/// Do a context COPY into the writer's tree.
fn write_copy(
    sources: &[Source],
    plan: &CopyPlan,
    writer: &mut TreeWriter,
) -> Result<(), BuildError> {
    let root = writer.root.clone();
    // Dirs `--parents` made: their modes and times are set last, as
    // writing into them changes the time and a read-only mode would stop it.
    let mut made_dirs = Vec::new();
    let owner = writer.copy_owner(plan.owner)?;
    for source in sources {
        match source {
            Source::Archive { .. } => writer.forget_known(), // extracted afterwards
            Source::Url(url) => {
                writer.forget_known();
                let to = if plan.dest_is_dir {
                    join(&plan.dest, &url.name)
                } else {
                    plan.dest.clone()
                };
                writer.forget(&root.join(&to));
                url.write_to(&root.join(&to), plan.mode_of(0o600, false))?;
                if let Some(owner) = plan.owner {
                    writer.set_owner(&to, owner)?;
                }
            }
            Source::Inline { name, body } => {
                writer.forget_known();
                let to = if plan.dest_is_dir {
                    join(&plan.dest, name)
                } else {
                    plan.dest.clone()
                };
                let path = root.join(&to);
                writer.forget(&path);
                std::fs::write(&path, body).map_err(BuildError::io(&path))?;
                set_perm(&path, plan.mode_of(0o644, false).unwrap_or(0o644))?;
                if let Some(owner) = plan.owner {
                    writer.set_owner(&to, owner)?;
                }
            }
            Source::Context {
                rel,
                place: Some((pivot, place)),
                ..
            } => {
                writer.forget_known();
                let from = plan.context_root.join(rel);
                let to = join(&plan.dest, place);
                if from.is_dir() {
                    make_context_dirs(plan, writer, pivot, place, &mut made_dirs)?;
                    copy_dir_filtered(owner, plan, writer, rel, pivot, &from, &root.join(to))?;
                } else {
                    make_context_dirs(plan, writer, pivot, &parent(place), &mut made_dirs)?;
                    let to = root.join(to);
                    copy_one(owner, plan, writer, &from, rel, &to)?;
                    writer.mark_owned(&to);
                }
            }
            Source::Context { rel, name, .. } => {
                let from = plan.context_root.join(rel);
                if from.is_dir() {
                    let to = root.join(&plan.dest);
                    copy_dir_filtered(owner, plan, writer, rel, rel, &from, &to)?;
                } else {
                    writer.forget_known();
                    let to = if plan.dest_is_dir {
                        join(&plan.dest, name)
                    } else {
                        plan.dest.clone()
                    };
                    let to = root.join(to);
                    copy_one(owner, plan, writer, &from, rel, &to)?;
                    writer.mark_owned(&to);
                }
            }
        }
    }
    for (path, meta) in made_dirs.iter().rev() {
        set_perm(path, meta.mode() & 0o7777)?;
        set_times(path, meta.mtime(), meta.mtime_nsec())?;
    }
    Ok(())
}

/// Copy one context file (or dir, or symlink) to `to`. One copy per
/// source: hard links are kept within a source, as BuildKit copies each
/// source on its own.
fn copy_one(
    owner: Option<(u32, u32)>,
    plan: &CopyPlan,
    writer: &TreeWriter,
    from: &Path,
    rel: &str,
    to: &Path,
) -> Result<(), BuildError> {
    let copy = TreeCopy::new(owner, plan.chmod.as_ref(), None).deferring(writer.deferred());
    copy.copy(from, rel, to).map_err(BuildError::io(to))
}

/// `--parents`: make the dirs of `place` (below the destination) that are
/// not there yet, each standing for the context dir at the same path below
/// `pivot`, whose mode and time it gets (recorded in `made`); the owner is
/// the --chown user or root, as for everything COPY writes.
fn make_context_dirs(
    plan: &CopyPlan,
    writer: &mut TreeWriter,
    pivot: &str,
    place: &str,
    made: &mut Vec<(PathBuf, std::fs::Metadata)>,
) -> Result<(), BuildError> {
    let mut partial = String::new();
    for part in place.split('/').filter(|p| !p.is_empty()) {
        partial = join(&partial, part);
        let to_rel = join(&plan.dest, &partial);
        let path = writer.root.join(&to_rel);
        if path.is_dir() {
            continue;
        }
        let written = flags::join(pivot, &partial);
        let reached = crate::context::resolve::resolve(&plan.context_root, &written, true)
            .map_err(|e| BuildError::input(format!("COPY --parents {written:?}: {e}")))?;
        let src = plan.context_root.join(reached.rel);
        let meta = std::fs::metadata(&src).map_err(BuildError::io(&src))?;
        writer.create_dir(&path)?;
        if let Some(owner) = plan.owner {
            writer.set_owner(&to_rel, owner)?;
        }
        made.push((path, meta));
    }
    Ok(())
}

/// Copy the contents of context dir `from` (`rel` in the context) into
/// `to`, on every core ([`TreeCopy`]), leaving out what .dockerignore and
/// `--exclude` (relative to `base`) exclude. An excluded dir that holds a
/// re-included file is made to hold it (as BuildKit does).
fn copy_dir_filtered(
    owner: Option<(u32, u32)>,
    plan: &CopyPlan,
    writer: &mut TreeWriter,
    rel: &str,
    base: &str,
    from: &Path,
    to: &Path,
) -> Result<(), BuildError> {
    let filter = plan.filter_context.then_some((plan, base));
    let mut copy = TreeCopy::new(owner, plan.chmod.as_ref(), filter).deferring(writer.deferred());
    if writer.knows() {
        copy = copy.knowing(to);
    }
    let written = copy
        .copy_contents(from, rel, to)
        .map_err(BuildError::io(to))?;
    if let Some(log) = copy.into_known() {
        writer.add_known(to, log);
    }
    for name in written {
        writer.mark_owned(&to.join(name));
    }
    Ok(())
}
