//! COPY and ADD of context files, written straight into a fresh upper dir.

use crate::context::{clean, Context};
use crate::stage::{history_text, BuildRequest, Builder, StageState, StepOutcome};
use crate::BuildError;
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::{Dockerfile, Instruction};
use cairn_sandbox::fscopy::{Copier, CopyOptions, Owners};
use cairn_sandbox::Task;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One thing to copy.
pub(crate) enum Source {
    /// A path in the context (file, dir or symlink), relative to its root.
    Context(String),
    /// A heredoc: a file named `name` with `body`.
    Inline { name: String, body: String },
}

/// Where `COPY --from` reads: another stage's (or image's) layers.
pub(crate) struct FromSource {
    state: StageState,
    paths: Vec<String>,
}

/// A COPY resolved against the context and the image, before any writing.
pub(crate) struct CopyPlan {
    sources: Vec<Source>,
    from: Option<FromSource>,
    /// Absolute destination in the image, cleaned, without the trailing slash.
    dest: String,
    dest_is_dir: bool,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
    /// Content digest of every source, for the cache key.
    pub sources_digest: String,
    context_root: PathBuf,
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
    for unsupported in ["parents", "exclude", "checksum", "keep-git-dir"] {
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
    let mut dest = expand(dest_word)?;
    let trailing_slash = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    if !dest.starts_with('/') {
        dest = format!(
            "{}/{dest}",
            state.config.string("WorkingDir").unwrap_or_default()
        );
    }
    let dest = clean(&dest);

    // What is copied, whether it is one file, and the digest of its content.
    let (sources, from, single_file, content_digest) =
        match inst.flags.get("from").and_then(|v| v.last()) {
            Some(from) => {
                let from = expand(from)?;
                let paths: Vec<String> = source_words
                    .iter()
                    .map(|w| expand(w))
                    .collect::<Result<_, _>>()?;
                if paths.iter().any(|p| p.contains(['*', '?', '['])) {
                    return Err(BuildError::Unsupported(format!(
                        "wildcards in COPY --from sources (line {})",
                        inst.line
                    )));
                }
                let state = builder.source_stage(doc, &from, done)?;
                // Whether a single source is a dir is known only inside the
                // copying task, which handles it; the key is the stage's key.
                let digest = format!("from:{}:{}", state.key, paths.join("\0"));
                let single = paths.len() == 1;
                (vec![], Some(FromSource { state, paths }), single, digest)
            }
            None => {
                let (sources, digest) = context_sources(context, inst, source_words, &expand, &at)?;
                let single = sources.len() == 1
                    && match &sources[0] {
                        Source::Context(rel) => !context.root.join(rel).is_dir(),
                        Source::Inline { .. } => true,
                    };
                if sources.len() > 1 && !trailing_slash && !lower_is_dir(builder, state, &dest) {
                    return Err(at(format!(
                        "with several sources, the destination {dest_word:?} must end with /"
                    )));
                }
                (sources, None, single, digest)
            }
        };
    let dest_is_dir = trailing_slash || !single_file || lower_is_dir(builder, state, &dest);
    let owner = chown_of(builder, state, inst, &expand, &at)?;
    let chmod = chmod_of(inst, &at)?;
    Ok(CopyPlan {
        sources,
        from,
        dest,
        dest_is_dir,
        owner,
        chmod,
        sources_digest: format!("{content_digest}:{owner:?}:{chmod:?}"),
        context_root: context.root.clone(),
    })
}

/// The context files and heredocs a COPY/ADD names, and their content digest.
fn context_sources(
    context: &Context,
    inst: &Instruction,
    source_words: &[String],
    expand: &dyn Fn(&str) -> Result<String, BuildError>,
    at: &dyn Fn(String) -> BuildError,
) -> Result<(Vec<Source>, String), BuildError> {
    let mut sources = Vec::new();
    let mut context_paths = Vec::new();
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
        if inst.name == "add" && (word.contains("://") || word.starts_with("git@")) {
            return Err(BuildError::Unsupported(format!(
                "ADD of a URL or git repository (line {})",
                inst.line
            )));
        }
        for rel in context.resolve_source(&word)? {
            if inst.name == "add" && is_archive(&context.root.join(&rel)) {
                return Err(BuildError::Unsupported(format!(
                    "ADD auto-extraction of archive {rel} (line {})",
                    inst.line
                )));
            }
            context_paths.push(rel.clone());
            sources.push(Source::Context(rel));
        }
    }
    let digest = context.digest_sources(&context_paths)?;
    Ok((sources, format!("{digest}:{inline_digest}")))
}

/// `--chown`, resolved in the image's passwd and group files.
fn chown_of(
    builder: &Builder,
    state: &StageState,
    inst: &Instruction,
    expand: &dyn Fn(&str) -> Result<String, BuildError>,
    at: &dyn Fn(String) -> BuildError,
) -> Result<Option<(u32, u32)>, BuildError> {
    let Some(spec) = inst.flags.get("chown").and_then(|v| v.last()) else {
        return Ok(None);
    };
    let spec = expand(spec)?;
    let passwd = read_from_layers(builder, state, "etc/passwd");
    let group = read_from_layers(builder, state, "etc/group");
    let user = cairn_sandbox::users::resolve_user(&spec, &passwd, &group)
        .map_err(|e| at(format!("--chown={spec}: {e}")))?;
    Ok(Some((user.uid, user.gid)))
}

/// `--chmod`, an octal mode.
fn chmod_of(
    inst: &Instruction,
    at: &dyn Fn(String) -> BuildError,
) -> Result<Option<u32>, BuildError> {
    let Some(m) = inst.flags.get("chmod").and_then(|v| v.last()) else {
        return Ok(None);
    };
    u32::from_str_radix(m, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .map(Some)
        .ok_or_else(|| at(format!("--chmod={m}: expected an octal mode")))
}

fn is_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 262];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    let head = &head[..n];
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z'])
        || (n >= 262 && &head[257..262] == b"ustar")
}

/// The topmost layer's entry at `rel`, ignoring whiteout devices.
fn lower_meta(builder: &Builder, state: &StageState, rel: &str) -> Option<std::fs::Metadata> {
    use std::os::unix::fs::FileTypeExt;
    for layer in state.layers.iter().rev() {
        let path = builder.store.layer_dir(&layer.diff_id).join(rel);
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return None; // whited out
            }
            return Some(m);
        }
    }
    None
}

fn lower_is_dir(builder: &Builder, state: &StageState, rel: &str) -> bool {
    rel.is_empty() || lower_meta(builder, state, rel).is_some_and(|m| m.is_dir())
}

fn read_from_layers(builder: &Builder, state: &StageState, rel: &str) -> String {
    for layer in state.layers.iter().rev() {
        if let Ok(text) = std::fs::read_to_string(builder.store.layer_dir(&layer.diff_id).join(rel))
        {
            return text;
        }
    }
    String::new()
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
        let owner = match plan.owner {
            None => None,
            Some((uid, gid)) => match (self.mapping.host_uid(uid), self.mapping.host_gid(gid)) {
                (Some(u), Some(g)) => Some((u, g)),
                _ => {
                    return Err(BuildError::input(format!(
                    "--chown={uid}:{gid}: outside this user's ID mapping (add a subordinate range)"
                )))
                }
            },
        };
        // Context copies run in the caller, which cannot chown to subordinate
        // IDs; `--from` copies run in a user-namespace task, which can.
        let rootless = !nix::unistd::geteuid().is_root();
        if plan.from.is_none() && rootless && owner.is_some() && plan.owner != Some((0, 0)) {
            return Err(BuildError::Unsupported(format!(
                "COPY --chown to another user when rootless (line {})",
                inst.line
            )));
        }
        self.ensure_extracted(state)?;
        let dir = self.scratch_dir("copy")?;
        let upper = dir.join("upper");
        let result = match &plan.from {
            None => write_copy(self, state, &plan, owner, &upper),
            Some(from) => self.copy_from(state, &plan, from, &dir),
        }
        .and_then(|()| self.commit_upper(req, &upper));
        let _ = self.launcher.run_task(&self.mapping, Task::RemoveTree(dir));
        self.add_layer(state, result?, &created_by, key, req.timestamp)?;
        Ok(StepOutcome::Ran)
    }
}

impl Builder<'_> {
    /// The state `COPY --from=NAME` reads: an earlier stage, else an image.
    pub(crate) fn source_stage(
        &self,
        doc: &Dockerfile,
        name: &str,
        done: &[Option<StageState>],
    ) -> Result<StageState, BuildError> {
        if let Some(Some(state)) = crate::stage::stage_index(doc, name).and_then(|i| done.get(i)) {
            return Ok(state.clone());
        }
        let manifest = self.store.resolve(name)?;
        self.load_image(name, &manifest)
    }

    /// `COPY --from`: a task reads the source stage's layers as one tree
    /// (read-only overlay) and copies into the upper dir, keeping owners.
    fn copy_from(
        &self,
        state: &StageState,
        plan: &CopyPlan,
        from: &FromSource,
        dir: &Path,
    ) -> Result<(), BuildError> {
        self.ensure_extracted(&from.state)?;
        let upper = dir.join("upper");
        let target_dir = if plan.dest_is_dir {
            plan.dest.clone()
        } else {
            parent(&plan.dest)
        };
        // New parent dirs are made by the caller: rootless it cannot give them
        // to another owner, so they stay root's (a known gap, see docs/build.md).
        let host_owner = plan
            .owner
            .and_then(|(u, g)| Some((self.mapping.host_uid(u)?, self.mapping.host_gid(g)?)))
            .filter(|_| nix::unistd::geteuid().is_root());
        make_parents(self, state, &upper, &target_dir, host_owner)?;
        let task = Task::CopyFromLayers {
            layers: from
                .state
                .layers
                .iter()
                .map(|l| self.store.layer_dir(&l.diff_id))
                .collect(),
            mountpoint: dir.join("merged"),
            sources: from.paths.clone(),
            dest: upper.join(&plan.dest),
            dest_is_dir: plan.dest_is_dir,
            // Inside the task's user namespace, IDs are container IDs.
            owner: plan.owner,
            chmod: plan.chmod,
        };
        self.launcher.run_task(&self.mapping, task)?;
        Ok(())
    }
}

/// Do the copy into `upper`.
fn write_copy(
    builder: &Builder,
    state: &StageState,
    plan: &CopyPlan,
    owner: Option<(u32, u32)>,
    upper: &Path,
) -> Result<(), BuildError> {
    let target_dir = if plan.dest_is_dir {
        plan.dest.clone()
    } else {
        parent(&plan.dest)
    };
    make_parents(builder, state, upper, &target_dir, owner)?;
    let owners = match owner {
        Some((u, g)) => Owners::Set(u, g),
        None => Owners::Creator,
    };
    let mut copier = Copier::new(CopyOptions {
        owners,
        chmod: plan.chmod,
        skip_whiteouts: false,
    });
    for source in &plan.sources {
        match source {
            Source::Inline { name, body } => {
                let to = if plan.dest_is_dir {
                    join(&plan.dest, name)
                } else {
                    plan.dest.clone()
                };
                let path = upper.join(&to);
                std::fs::write(&path, body).map_err(BuildError::io(&path))?;
                finish_entry(&path, owner, plan.chmod.or(Some(0o644)))?;
            }
            Source::Context(rel) => {
                let from = plan.context_root.join(rel);
                if from.is_dir() {
                    let to = upper.join(&plan.dest);
                    copier
                        .copy_contents(&from, &to)
                        .map_err(BuildError::io(&to))?;
                } else {
                    let name = Path::new(rel)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let to = if plan.dest_is_dir {
                        join(&plan.dest, &name)
                    } else {
                        plan.dest.clone()
                    };
                    let to = upper.join(to);
                    copier.copy(&from, &to).map_err(BuildError::io(&to))?;
                }
            }
        }
    }
    Ok(())
}

/// Create `dir` and its parents in `upper`: dirs the image has keep its
/// metadata; new ones are 0755, owned by the --chown user (as buildah does).
fn make_parents(
    builder: &Builder,
    state: &StageState,
    upper: &Path,
    dir: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), BuildError> {
    let mut rel = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        rel = join(&rel, part);
        let path = upper.join(&rel);
        if path.is_dir() {
            continue;
        }
        std::fs::create_dir(&path).map_err(BuildError::io(&path))?;
        match lower_meta(builder, state, &rel) {
            Some(m) if m.is_dir() => {
                set_perm(&path, m.mode() & 0o7777)?;
                lchown(&path, Some((m.uid(), m.gid())))?;
                set_times(&path, m.mtime(), m.mtime_nsec())?;
            }
            _ => {
                set_perm(&path, 0o755)?;
                lchown(&path, owner)?;
            }
        }
    }
    Ok(())
}

fn finish_entry(
    path: &Path,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
) -> Result<(), BuildError> {
    lchown(path, owner)?;
    if let Some(mode) = mode {
        set_perm(path, mode)?;
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
