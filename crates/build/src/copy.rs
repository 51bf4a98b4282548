//! COPY and ADD of context files, written straight into a fresh upper dir.

mod flags;

use crate::context::{clean, Context};
use crate::keys::{short_digest, KeyInput};
use crate::stage::{history_text, BuildRequest, Builder, StageState, StepOutcome};
use crate::view::LayerView;
use crate::BuildError;
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::{Dockerfile, Instruction};
use cairn_sandbox::chmod::Chmod;
use cairn_sandbox::fscopy::{Copier, CopyOptions, Owners};
use cairn_sandbox::Task;
use flags::{CopyFlags, StageTree};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One thing to copy.
pub(crate) enum Source {
    /// A path in the context (file or dir), relative to its root, after
    /// following a symlink named as the source (BuildKit's FollowSymlinks);
    /// `name` is the name the source was given. With `--parents`, `place`
    /// is (pivot, path below the destination).
    Context {
        rel: String,
        name: String,
        place: Option<(String, String)>,
    },
    /// A heredoc: a file named `name` with `body`.
    Inline { name: String, body: String },
    /// ADD of a local tar archive (plain or compressed): extracted into the
    /// destination dir.
    Archive { rel: String },
    /// ADD of an http(s) URL: one file, never extracted.
    Url(crate::fetch::UrlSource),
}

/// Where `COPY --from` reads: another stage's (or image's) layers.
pub(crate) struct FromSource {
    state: StageState,
    /// One task each (`--parents` makes one per pivot).
    copies: Vec<FromCopy>,
}

/// One copy out of the source stage into the destination.
struct FromCopy {
    /// Absolute paths in the stage: a dir copies its contents.
    sources: Vec<String>,
    /// Paths (relative to the stage root) hidden from the copy by a mask
    /// layer: `--exclude`d ones, and with `--parents` all not selected.
    whiteouts: Vec<String>,
}

/// A COPY resolved against the context and the image, before any writing.
pub(crate) struct CopyPlan {
    sources: Vec<Source>,
    from: Option<FromSource>,
    /// Absolute destination in the image, cleaned, without the trailing slash.
    dest: String,
    dest_is_dir: bool,
    owner: Option<(u32, u32)>,
    chmod: Option<Chmod>,
    /// Content digest of every source, for the cache key.
    pub sources_digest: String,
    /// What went into `sources_digest`, by name: the context files (or the
    /// source stage), for `--explain`.
    pub inputs: Vec<KeyInput>,
    context_root: PathBuf,
    /// The context's ignore rules, when it has any (dir sources are filtered).
    context: Option<Context>,
    /// Whether dir sources must be filtered (.dockerignore or --exclude).
    filter_context: bool,
    flags: CopyFlags,
    /// `--link` with a dir source: the destination dir takes that dir's
    /// mode and time (BuildKit: the copy happens on an empty tree, and the
    /// layer's dir replaces the base's metadata).
    link_dest: Option<DirMeta>,
}

impl CopyPlan {
    fn ignore_includes(&self, rel: &str) -> bool {
        self.context.as_ref().is_none_or(|c| c.includes(rel))
    }

    fn ignore_skips(&self, rel: &str) -> bool {
        self.context.as_ref().is_some_and(|c| c.can_skip_dir(rel))
    }

    /// The mode `--chmod` gives an entry whose mode is `mode` (None: no --chmod).
    fn mode_of(&self, mode: u32, is_dir: bool) -> Option<u32> {
        self.chmod.as_ref().map(|c| c.apply(mode, is_dir))
    }

    /// Context path `rel` is copied: offered by .dockerignore and not
    /// `--exclude`d (tested relative to `base`, the copy's root).
    fn keeps(&self, base: &str, rel: &str) -> bool {
        self.ignore_includes(rel) && !self.flags.excludes(&flags::relative(base, rel))
    }

    /// Context dir `rel` can be skipped without looking inside.
    fn skips(&self, base: &str, rel: &str) -> bool {
        self.ignore_skips(rel) || self.flags.can_skip(&flags::relative(base, rel))
    }
}

pub(crate) fn plan(
    builder: &Builder,
    doc: &Dockerfile,
    context: &Context,
    inst: &Instruction,
    vars: &BTreeMap<String, String>,
    state: &StageState,
    done: &[Option<StageState>],
) -> Result<CopyPlan, BuildError> {
    let at = |m: String| {
        BuildError::input(format!(
            "line {}: {} {m}",
            inst.line,
            inst.name.to_uppercase()
        ))
    };
    let expand = |w: &str| expand_word(w, vars, doc.escape).map_err(|e| at(e.to_string()));
    for unsupported in ["keep-git-dir"] {
        if inst.flags.contains_key(unsupported) {
            return Err(BuildError::Unsupported(format!(
                "{} --{unsupported} (line {})",
                inst.name.to_uppercase(),
                inst.line
            )));
        }
    }
    if inst.args.len() < 2 {
        return Err(at("needs at least one source and a destination".into()));
    }
    let (dest_word, source_words) = inst
        .args
        .split_last()
        .ok_or_else(|| at("no destination".into()))?;
    let flags = CopyFlags::of(inst, &expand, &at)?;
    let mut dest = expand(dest_word)?;
    let trailing_slash = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    if !dest.starts_with('/') {
        dest = format!(
            "{}/{dest}",
            state.config.string("WorkingDir").unwrap_or_default()
        );
    }
    // The destination is resolved through the image's symlinks (a link to a
    // dir is written through; a link where a file goes is replaced).
    builder.ensure_extracted(state)?;
    let view = LayerView::new(builder, state);
    // With --link the copy cannot see the image (BuildKit copies onto an
    // empty tree): the destination is taken as written.
    let dest = clean(&dest);
    let followed = view.resolve(&dest, true);
    let (dest, dest_exists_as_dir) = match view.lookup(&followed) {
        _ if flags.link => (dest.clone(), dest.is_empty()),
        Some(f) if f.meta.is_dir() => (followed, true),
        _ => (view.resolve(&dest, false), dest.is_empty()),
    };

    // What is copied, whether it is one file, and the digest of its content.
    let link_dest;
    let mut inputs = Vec::new();
    let (sources, from, single_file, content_digest) =
        match inst.flags.get("from").and_then(|v| v.last()) {
            Some(from) => {
                let from = expand(from)?;
                let state = builder.source_stage(doc, &from, done, context)?;
                builder.ensure_extracted(&state)?;
                let from_view = LayerView::new(builder, &state);
                let words: Vec<String> = source_words
                    .iter()
                    .map(|w| expand(w))
                    .collect::<Result<_, _>>()?;
                let (copies, single, dir_meta) = from_copies(&from_view, &flags, &words, &at)?;
                link_dest = dir_meta.filter(|_| flags.link);
                // The source stage's key and the resolved paths: the stage's
                // content is a function of its key.
                let listed: Vec<String> = copies.iter().map(|c| c.sources.join("\0")).collect();
                let digest = format!("from:{}:{}", state.key, listed.join("\0\0"));
                inputs.push(KeyInput::Stage {
                    name: from,
                    key: state.key.clone(),
                });
                (vec![], Some(FromSource { state, copies }), single, digest)
            }
            None => {
                let (sources, digest, read) = context_sources(
                    context,
                    inst,
                    source_words,
                    &expand,
                    &at,
                    &builder.store.layout().tmp(),
                    &flags,
                )?;
                inputs = read;
                link_dest = link_dest_of_context(context, &sources).filter(|_| flags.link);
                let single = sources.len() == 1
                    && match &sources[0] {
                        Source::Context { rel, .. } => !context.root.join(rel).is_dir(),
                        Source::Inline { .. } => true,
                        Source::Archive { .. } => false,
                        Source::Url(_) => true,
                    };
                if sources.len() > 1 && !trailing_slash && !dest_exists_as_dir && !flags.parents {
                    return Err(at(format!(
                        "with several sources, the destination {dest_word:?} must end with /"
                    )));
                }
                (sources, None, single, digest)
            }
        };
    // --parents always copies below the destination, as a dir.
    let dest_is_dir = trailing_slash || !single_file || dest_exists_as_dir || flags.parents;
    let owner = chown_of(&view, inst, &expand, &at)?;
    let chmod = chmod_of(inst, &expand, &at)?;
    Ok(CopyPlan {
        sources,
        from,
        dest,
        dest_is_dir,
        owner,
        sources_digest: format!(
            "{content_digest}:{owner:?}:{}:{}",
            chmod_key(&chmod),
            flags.key_part()
        ),
        chmod,
        inputs,
        context_root: context.root.clone(),
        context: context.has_ignore_rules().then(|| context.clone()),
        filter_context: context.has_ignore_rules() || flags.has_exclude(),
        flags,
        link_dest,
    })
}

/// A dir's mode, mtime seconds and nanoseconds.
type DirMeta = (u32, i64, i64);

/// Mode and time of a dir, as `link_dest` keeps them.
fn dir_meta(meta: &std::fs::Metadata) -> DirMeta {
    (meta.mode() & 0o7777, meta.mtime(), meta.mtime_nsec())
}

/// The last dir source of a context COPY (its mode goes to the destination
/// dir under `--link`).
fn link_dest_of_context(context: &Context, sources: &[Source]) -> Option<DirMeta> {
    sources.iter().rev().find_map(|s| match s {
        Source::Context {
            rel, place: None, ..
        } => std::fs::metadata(context.root.join(rel))
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| dir_meta(&m)),
        _ => None,
    })
}

/// What `COPY --from` copies: the copies to make, whether it is a single
/// file, and the metadata of the last dir source. Wildcards match in the
/// stage's filesystem with the context's rules; a pattern matching nothing
/// is an error. A symlink named as a source is followed (BuildKit's
/// FollowSymlinks), except under `--parents`, which keeps paths as named.
fn from_copies(
    view: &LayerView,
    flags: &CopyFlags,
    words: &[String],
    at: &dyn Fn(String) -> BuildError,
) -> Result<(Vec<FromCopy>, bool, Option<DirMeta>), BuildError> {
    let tree = StageTree::new(view);
    // (pivot, path) of every selected source, relative to the stage root.
    let mut found: Vec<(String, String)> = Vec::new();
    for word in words {
        let (pivot, pattern) = if flags.parents {
            flags::split_pivot(word)
        } else {
            (String::new(), clean(word))
        };
        let matches = if flags::has_wildcard(&pattern) {
            let m = tree.glob(&pattern)?;
            if m.is_empty() {
                return Err(at(format!(
                    "--from source {word:?}: no file in the source stage matches"
                )));
            }
            m
        } else {
            vec![pattern]
        };
        for m in matches {
            if !flags.excludes_source(&m) {
                found.push((pivot.clone(), m));
            }
        }
    }
    if flags.parents {
        return Ok((parents_copies(&tree, view, flags, &found, at)?, false, None));
    }
    let paths: Vec<String> = found.iter().map(|(_, p)| view.resolve(p, true)).collect();
    let mut whiteouts = Vec::new();
    let mut last_dir = None;
    for path in &paths {
        if let Some(found) = view.lookup(path).filter(|f| f.meta.is_dir()) {
            last_dir = Some(dir_meta(&found.meta));
            if flags.has_exclude() {
                tree.excluded_below(path, path, flags, &mut whiteouts)?;
            }
        }
    }
    let single = paths.len() == 1 && last_dir.is_none();
    let copy = FromCopy {
        sources: paths.iter().map(|p| format!("/{p}")).collect(),
        whiteouts,
    };
    Ok((vec![copy], single, last_dir))
}

/// `--parents` from a stage: one copy per pivot, of the pivot dir with
/// everything not selected (and everything excluded) masked out, so the
/// selected paths land below the destination with their parents.
fn parents_copies(
    tree: &StageTree,
    view: &LayerView,
    flags: &CopyFlags,
    found: &[(String, String)],
    at: &dyn Fn(String) -> BuildError,
) -> Result<Vec<FromCopy>, BuildError> {
    let mut by_pivot: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (pivot, path) in found {
        if view.lookup(path).is_none() {
            return Err(at(format!(
                "--from source /{path}: not found in the source stage"
            )));
        }
        if flags::place_under(pivot, path).is_none() {
            return Err(at(format!(
                "--parents source /{path} is not below /{pivot}"
            )));
        }
        by_pivot.entry(pivot).or_default().insert(path.clone());
    }
    let mut copies = Vec::new();
    for (pivot, selected) in by_pivot {
        let mut whiteouts = Vec::new();
        if !selected.contains(pivot) {
            tree.hide_unselected(pivot, &selected, &mut whiteouts)?;
        }
        for path in &selected {
            if flags.excludes(&flags::relative(pivot, path)) {
                whiteouts.push(path.clone());
            } else if view.lookup(path).is_some_and(|f| f.meta.is_dir()) {
                tree.excluded_below(path, pivot, flags, &mut whiteouts)?;
            }
        }
        copies.push(FromCopy {
            sources: vec![format!("/{pivot}")],
            whiteouts,
        });
    }
    Ok(copies)
}

/// The context files and heredocs a COPY/ADD names, and their content
/// digest, and every file read (for `--explain`).
fn context_sources(
    context: &Context,
    inst: &Instruction,
    source_words: &[String],
    expand: &dyn Fn(&str) -> Result<String, BuildError>,
    at: &dyn Fn(String) -> BuildError,
    tmp: &Path,
    flags: &CopyFlags,
) -> Result<(Vec<Source>, String, Vec<KeyInput>), BuildError> {
    let mut inputs = Vec::new();
    let checksum = crate::fetch::checksum_flag(inst, source_words, expand, at)?;
    let mut sources = Vec::new();
    let mut context_paths = Vec::new();
    // Per context path: the root `--exclude` patterns are relative to.
    let mut exclude_bases = Vec::new();
    let mut inline_digest = String::new();
    for word in source_words {
        if let Some(h) = word
            .strip_prefix("<<")
            .map(|d| d.trim_start_matches('-').trim_matches(['"', '\'']))
        {
            let doc_body = inst
                .heredocs
                .iter()
                .find(|x| x.delimiter == h)
                .ok_or_else(|| at(format!("no heredoc {h}")))?;
            let body = if doc_body.expand {
                expand(&doc_body.body)?
            } else {
                doc_body.body.clone()
            };
            inline_digest.push_str(&format!("{h}\0{body}\0"));
            sources.push(Source::Inline {
                name: h.to_string(),
                body,
            });
            continue;
        }
        let word = expand(word)?;
        if inst.name == "add"
            && crate::fetch::is_http_url(&word)
            && !crate::fetch::is_git_url(&word)
        {
            // Without --checksum this downloads now: the key needs the digest.
            let source = crate::fetch::UrlSource::plan(inst.line, &word, checksum.clone(), tmp)?;
            inline_digest.push_str(&source.key_part());
            inputs.push(KeyInput::Setting {
                name: format!("ADD {word}"),
                digest: short_digest(source.key_part().as_bytes()),
            });
            sources.push(Source::Url(source));
            continue;
        }
        if inst.name == "add" && (word.contains("://") || word.starts_with("git@")) {
            return Err(BuildError::Unsupported(format!(
                "ADD of a git repository or a URL that is not http(s) (line {})",
                inst.line
            )));
        }
        let pivot = if flags.parents {
            flags::split_pivot(&word).0
        } else {
            String::new()
        };
        for named in context.resolve_source(&word)? {
            if flags.excludes_source(&named) {
                continue;
            }
            let place = match flags.parents {
                true => Some(flags::place_under(&pivot, &named).ok_or_else(|| {
                    at(format!("--parents source {named:?} is not below {pivot:?}"))
                })?),
                false => None,
            };
            let rel = context.resolve_offered(&named, "COPY source")?;
            let name = Path::new(&named)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            inline_digest.push_str(&format!("{named}\0{rel}\0{place:?}\0"));
            context_paths.push(rel.clone());
            exclude_bases.push(if flags.parents {
                pivot.clone()
            } else {
                rel.clone()
            });
            if inst.name == "add" && crate::archive::is_tar_archive(&context.root.join(&rel)) {
                sources.push(Source::Archive { rel });
            } else {
                let place = place.map(|p| (pivot.clone(), p));
                sources.push(Source::Context { rel, name, place });
            }
        }
    }
    // Excluded files are not part of the key: changing one reruns nothing.
    let keep = |i: usize, rel: &str| {
        let base = exclude_bases.get(i).map(String::as_str).unwrap_or("");
        !flags.excludes(&flags::relative(base, rel))
    };
    let digest = context.digest_sources_listing(&context_paths, &keep, &mut |rel, entry| {
        inputs.push(KeyInput::File {
            path: rel.to_string(),
            digest: short_digest(entry),
        })
    })?;
    Ok((sources, format!("{digest}:{inline_digest}"), inputs))
}

/// `--chown`, resolved in the image's passwd and group files.
fn chown_of(
    view: &LayerView,
    inst: &Instruction,
    expand: &dyn Fn(&str) -> Result<String, BuildError>,
    at: &dyn Fn(String) -> BuildError,
) -> Result<Option<(u32, u32)>, BuildError> {
    let Some(spec) = inst.flags.get("chown").and_then(|v| v.last()) else {
        return Ok(None);
    };
    let spec = expand(spec)?;
    // BuildKit: a numeric user without a group gets gid = uid (only a
    // user name takes its passwd group).
    if let Ok(uid) = spec.parse::<u32>() {
        return Ok(Some((uid, uid)));
    }
    let passwd = view.read_to_string("etc/passwd");
    let group = view.read_to_string("etc/group");
    let user = cairn_sandbox::users::resolve_user(&spec, &passwd, &group)
        .map_err(|e| at(format!("--chown={spec}: {e}")))?;
    Ok(Some((user.uid, user.gid)))
}

/// `--chmod` in the cache key (an octal mode as keys always had it).
fn chmod_key(chmod: &Option<Chmod>) -> String {
    match chmod {
        Some(Chmod::Octal(m)) => format!("Some({m})"),
        other => format!("{other:?}"),
    }
}

/// `--chmod`, octal or symbolic, after variable expansion (BuildKit v0.16+).
fn chmod_of(
    inst: &Instruction,
    expand: &dyn Fn(&str) -> Result<String, BuildError>,
    at: &dyn Fn(String) -> BuildError,
) -> Result<Option<Chmod>, BuildError> {
    let Some(m) = inst.flags.get("chmod").and_then(|v| v.last()) else {
        return Ok(None);
    };
    let m = expand(m)?;
    Chmod::parse(&m)
        .map(Some)
        .map_err(|e| at(format!("--chmod={m}: {e}")))
}

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
        let result = self
            .write_copy_step(state, &plan, &dir)
            .and_then(|()| self.commit_upper(req, &dir.join("upper")));
        let _ = self.launcher.run_task(&self.mapping, Task::RemoveTree(dir));
        self.add_layer(state, result?, &created_by, key, req.timestamp)?;
        Ok(StepOutcome::Ran)
    }

    fn write_copy_step(
        &self,
        state: &StageState,
        plan: &CopyPlan,
        dir: &Path,
    ) -> Result<(), BuildError> {
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
        writer.finish(self, dir)?;
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
        Ok(())
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
        if let Some(Some(state)) = crate::stage::stage_index(doc, name).and_then(|i| done.get(i)) {
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
            let task = Task::CopyFromLayers {
                layers,
                mountpoint: dir.join("merged"),
                sources: copy.sources.clone(),
                dest: upper.join(&plan.dest),
                dest_is_dir: plan.dest_is_dir,
                // Inside the task's user namespace, IDs are container IDs.
                owner: plan.owner,
                chmod: plan.chmod.clone(),
            };
            self.launcher.run_task(&self.mapping, task)?;
        }
        Ok(())
    }
}

/// Where a step writes new entries and how they get their owners. As root,
/// straight into the upper dir with `lchown`. Rootless, the caller cannot
/// give files to subordinate IDs: entries go to a staging tree, owned by the
/// caller, and [`TreeWriter::finish`] writes that tree as a tar with the
/// owners it should have and extracts it into the upper dir in a task (in the
/// user namespace, where those IDs are its own).
pub(crate) struct TreeWriter {
    /// The tree entries are written to (the upper dir, or the staging dir).
    pub root: PathBuf,
    direct: bool,
    /// Staged: owners (container IDs) of particular entries.
    owners: HashMap<String, (u32, u32)>,
    /// Staged: the owner of every other entry.
    default_owner: (u32, u32),
}

impl TreeWriter {
    pub fn new(
        builder: &Builder,
        dir: &Path,
        default_owner: (u32, u32),
    ) -> Result<Self, BuildError> {
        let direct = builder.mapping.is_identity() && nix::unistd::geteuid().is_root();
        let root = if direct {
            dir.join("upper")
        } else {
            dir.join("stage")
        };
        std::fs::create_dir_all(&root).map_err(BuildError::io(&root))?;
        Ok(TreeWriter {
            root,
            direct,
            owners: HashMap::new(),
            default_owner,
        })
    }

    /// Give the entry at `rel` (relative to the root) the container owner `owner`.
    pub fn set_owner(&mut self, rel: &str, owner: (u32, u32)) -> Result<(), BuildError> {
        if self.direct {
            lchown(&self.root.join(rel), Some(owner))
        } else {
            self.owners.insert(rel.to_string(), owner);
            Ok(())
        }
    }

    /// How a copier gives owners to what it writes: `owner` now (as root),
    /// or later through `default_owner` (staged).
    fn copier_owners(&self, owner: Option<(u32, u32)>) -> Owners {
        match owner {
            Some((u, g)) if self.direct => Owners::Set(u, g),
            _ => Owners::Creator,
        }
    }

    fn rel_of(&self, path: &Path) -> String {
        crate::context::rel_of(&self.root, path)
    }

    /// Staged: write the staging tree into `dir/upper` with its owners.
    pub fn finish(self, builder: &Builder, dir: &Path) -> Result<(), BuildError> {
        if self.direct {
            return Ok(());
        }
        let tar_path = dir.join("stage.tar");
        write_tree_tar(&self.root, &self.owners, self.default_owner, &tar_path)?;
        builder.launcher.run_task(
            &builder.mapping,
            Task::ExtractLayer {
                blob: tar_path,
                dest: dir.join("upper"),
                // Our own tar of the staged context files (sized by the
                // context, not by a stranger): no caps.
                limits: cairn_layer::ExtractLimits::unlimited(),
                tree_digest: false,
            },
        )?;
        Ok(())
    }
}

/// A tar of `root`'s contents: modes and times as they are, owners from
/// `owners` or `default_owner`, hard links as links.
fn write_tree_tar(
    root: &Path,
    owners: &HashMap<String, (u32, u32)>,
    default_owner: (u32, u32),
    out: &Path,
) -> Result<(), BuildError> {
    let file = std::fs::File::create(out).map_err(BuildError::io(out))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| BuildError::input(format!("staging tree: {e}")))?;
        let path = entry.path();
        let rel = crate::context::rel_of(root, path);
        let meta = path.symlink_metadata().map_err(BuildError::io(path))?;
        let (uid, gid) = owners.get(&rel).copied().unwrap_or(default_owner);
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_size(0);
        let io = BuildError::io(path);
        let ft = meta.file_type();
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, &rel, std::io::empty())
                .map_err(io)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(BuildError::io(path))?;
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, &rel, &target).map_err(io)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(tar::EntryType::Link);
                    tar.append_link(&mut header, &rel, first).map_err(io)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), rel.clone());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let f = std::fs::File::open(path).map_err(BuildError::io(path))?;
            tar.append_data(&mut header, &rel, f).map_err(io)?;
        }
    }
    tar.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(BuildError::io(out))
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
    for source in sources {
        // One copier per source: hard links are kept within a source, as
        // BuildKit copies each source on its own.
        let mut copier = Copier::new(CopyOptions {
            owners: writer.copier_owners(plan.owner),
            chmod: plan.chmod.clone(),
            skip_whiteouts: false,
        });
        match source {
            Source::Archive { .. } => {} // extracted afterwards
            Source::Url(url) => {
                let to = if plan.dest_is_dir {
                    join(&plan.dest, &url.name)
                } else {
                    plan.dest.clone()
                };
                url.write_to(&root.join(&to), plan.mode_of(0o600, false))?;
                if let Some(owner) = plan.owner {
                    writer.set_owner(&to, owner)?;
                }
            }
            Source::Inline { name, body } => {
                let to = if plan.dest_is_dir {
                    join(&plan.dest, name)
                } else {
                    plan.dest.clone()
                };
                let path = root.join(&to);
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
                let from = plan.context_root.join(rel);
                let to = join(&plan.dest, place);
                if from.is_dir() {
                    make_context_dirs(plan, writer, pivot, place, &mut made_dirs)?;
                    copy_dir_filtered(
                        &mut copier,
                        plan,
                        writer,
                        rel,
                        pivot,
                        &from,
                        &root.join(to),
                    )?;
                } else {
                    make_context_dirs(plan, writer, pivot, &parent(place), &mut made_dirs)?;
                    let to = root.join(to);
                    copier.copy(&from, &to).map_err(BuildError::io(&to))?;
                }
            }
            Source::Context { rel, name, .. } => {
                let from = plan.context_root.join(rel);
                if from.is_dir() {
                    let to = root.join(&plan.dest);
                    copy_dir_filtered(&mut copier, plan, writer, rel, rel, &from, &to)?;
                } else {
                    let to = if plan.dest_is_dir {
                        join(&plan.dest, name)
                    } else {
                        plan.dest.clone()
                    };
                    let to = root.join(to);
                    copier.copy(&from, &to).map_err(BuildError::io(&to))?;
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
        std::fs::create_dir(&path).map_err(BuildError::io(&path))?;
        if let Some(owner) = plan.owner {
            writer.set_owner(&to_rel, owner)?;
        }
        made.push((path, meta));
    }
    Ok(())
}

/// Copy the contents of context dir `from` (`rel` in the context) into `to`,
/// leaving out what .dockerignore and `--exclude` (relative to `base`)
/// exclude. An excluded dir that holds a re-included file is made to hold
/// it (as BuildKit does).
#[allow(clippy::too_many_arguments)]
fn copy_dir_filtered(
    copier: &mut Copier,
    plan: &CopyPlan,
    writer: &mut TreeWriter,
    rel: &str,
    base: &str,
    from: &Path,
    to: &Path,
) -> Result<(), BuildError> {
    if !plan.filter_context {
        return copier.copy_contents(from, to).map_err(BuildError::io(to));
    }
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(BuildError::io(from))?
        .collect::<Result<_, _>>()
        .map_err(BuildError::io(from))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child_rel = join(rel, &name);
        let src = entry.path();
        let dst = to.join(&name);
        let meta = src.symlink_metadata().map_err(BuildError::io(&src))?;
        if meta.is_dir() {
            if plan.skips(base, &child_rel) {
                continue;
            }
            let existed = dst.is_dir();
            if !existed {
                std::fs::create_dir(&dst).map_err(BuildError::io(&dst))?;
            }
            copy_dir_filtered(copier, plan, writer, &child_rel, base, &src, &dst)?;
            let keep = existed
                || plan.keeps(base, &child_rel)
                || std::fs::read_dir(&dst).is_ok_and(|mut d| d.next().is_some());
            if !keep {
                std::fs::remove_dir(&dst).map_err(BuildError::io(&dst))?;
                continue;
            }
            if let Some(owner) = plan.owner {
                let dst_rel = writer.rel_of(&dst);
                writer.set_owner(&dst_rel, owner)?;
            }
            let mode = meta.mode() & 0o7777;
            set_perm(&dst, plan.mode_of(mode, true).unwrap_or(mode))?;
            set_times(&dst, meta.mtime(), meta.mtime_nsec())?;
        } else if plan.keeps(base, &child_rel) {
            copier.copy(&src, &dst).map_err(BuildError::io(&dst))?;
        }
    }
    Ok(())
}

/// Create `dir` and its parents in the writer's tree: dirs the image has
/// keep its mode, owner and time; new ones are 0755, owned by the --chown
/// user (as buildah does) or root. Without a `view` (`--link`: BuildKit
/// copies onto an empty tree) every dir is new and replaces the base's.
pub(crate) fn make_parents(
    builder: &Builder,
    view: Option<&LayerView>,
    writer: &mut TreeWriter,
    dir: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), BuildError> {
    let mut rel = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        rel = join(&rel, part);
        let path = writer.root.join(&rel);
        if path.is_dir() {
            continue;
        }
        std::fs::create_dir(&path).map_err(BuildError::io(&path))?;
        match view.and_then(|v| v.lookup(&rel)) {
            Some(f) if f.meta.is_dir() => {
                let m = f.meta;
                set_perm(&path, m.mode() & 0o7777)?;
                let uid = builder.mapping.container_uid(m.uid()).unwrap_or(0);
                let gid = builder.mapping.container_gid(m.gid()).unwrap_or(0);
                writer.set_owner(&rel, (uid, gid))?;
                set_times(&path, m.mtime(), m.mtime_nsec())?;
            }
            _ => {
                set_perm(&path, 0o755)?;
                writer.set_owner(&rel, owner.unwrap_or((0, 0)))?;
            }
        }
    }
    Ok(())
}

fn set_perm(path: &Path, mode: u32) -> Result<(), BuildError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(BuildError::io(path))
}

fn lchown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), BuildError> {
    match owner {
        Some((u, g)) => {
            std::os::unix::fs::lchown(path, Some(u), Some(g)).map_err(BuildError::io(path))
        }
        None => Ok(()),
    }
}

fn set_times(path: &Path, secs: i64, nanos: i64) -> Result<(), BuildError> {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
    let f = std::fs::File::options().read(true).open(path);
    match f {
        Ok(f) => f.set_modified(t).map_err(BuildError::io(path)),
        Err(_) => Ok(()), // unreadable (chmod 000): keep the copy's time
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

fn parent(path: &str) -> String {
    path.rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}
