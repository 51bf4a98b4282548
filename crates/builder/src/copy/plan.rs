//! A COPY/ADD resolved against the context and the image before anything is written: its
//! sources (context paths, heredocs, archives, URLs, another stage's paths), destination,
//! owner and mode, and the digest of all of it for the cache key.

use super::flags::{self, CopyFlags, StageTree};
use crate::config::Runtime;
use crate::context::{clean, Context};
use crate::keys::{short_digest, KeyInput};
use crate::state::{PendingFiles, StageState};
use crate::view::LayerView;
use crate::{BuildError, Builder};
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::typed::{Files, Source as TypedSource};
use cairn_dockerfile::{Command, Dockerfile, Typed};
use cairn_sandbox::chmod::Chmod;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
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
    pub(super) state: StageState,
    /// One task each (`--parents` makes one per pivot).
    pub(super) copies: Vec<FromCopy>,
}

/// One copy out of the source stage into the destination.
pub(super) struct FromCopy {
    /// Absolute paths in the stage: a dir copies its contents.
    pub(super) sources: Vec<String>,
    /// Paths (relative to the stage root) hidden from the copy by a mask
    /// layer: `--exclude`d ones, and with `--parents` all not selected.
    pub(super) whiteouts: Vec<String>,
}

/// A COPY resolved against the context and the image, before any writing.
pub(crate) struct CopyPlan {
    pub(super) sources: Vec<Source>,
    pub(super) from: Option<FromSource>,
    /// Absolute destination in the image, cleaned, without the trailing slash.
    pub(super) dest: String,
    pub(super) dest_is_dir: bool,
    pub(super) owner: Option<(u32, u32)>,
    pub(super) chmod: Option<Chmod>,
    /// Content digest of every source, for the cache key.
    pub sources_digest: String,
    /// What went into `sources_digest`, by name: the context files (or the
    /// source stage), for `--explain`.
    pub inputs: Vec<KeyInput>,
    /// The context files, when `inputs` lacks them (see
    /// `StageState::pending_files`).
    pub pending_files: Option<PendingFiles>,
    pub(super) context_root: PathBuf,
    /// The context's ignore rules, when it has any (dir sources are filtered).
    pub(super) context: Option<Context>,
    /// Whether dir sources must be filtered (.dockerignore or --exclude).
    pub(super) filter_context: bool,
    pub(super) flags: CopyFlags,
    /// `--link` with a dir source: the destination dir takes that dir's
    /// mode and time (BuildKit: the copy happens on an empty tree, and the
    /// layer's dir replaces the base's metadata).
    pub(super) link_dest: Option<DirMeta>,
}

impl CopyPlan {
    pub(super) fn ignore_includes(&self, rel: &str) -> bool {
        self.context.as_ref().is_none_or(|c| c.includes(rel))
    }

    pub(super) fn ignore_skips(&self, rel: &str) -> bool {
        self.context.as_ref().is_some_and(|c| c.can_skip_dir(rel))
    }

    /// The mode `--chmod` gives an entry whose mode is `mode` (None: no --chmod).
    pub(super) fn mode_of(&self, mode: u32, is_dir: bool) -> Option<u32> {
        self.chmod.as_ref().map(|c| c.apply(mode, is_dir))
    }

    /// Context path `rel` is copied: offered by .dockerignore and not
    /// `--exclude`d (tested relative to `base`, the copy's root).
    pub(super) fn keeps(&self, base: &str, rel: &str) -> bool {
        self.ignore_includes(rel) && !self.flags.excludes(&flags::relative(base, rel))
    }

    /// Context dir `rel` can be skipped without looking inside.
    pub(super) fn skips(&self, base: &str, rel: &str) -> bool {
        self.ignore_skips(rel) || self.flags.can_skip(&flags::relative(base, rel))
    }
}

/// A typed COPY/ADD's source words as written (a heredoc as `<<NAME`), for
/// the sources of another stage.
fn source_texts(files: &Files) -> Vec<String> {
    files
        .sources
        .iter()
        .map(|s| match s {
            TypedSource::Path(w) => w.raw().to_string(),
            TypedSource::Heredoc(name) => format!("<<{name}"),
        })
        .collect()
}

/// Plan a COPY or ADD. Errors without a position get the instruction's
/// from the caller.
pub(crate) fn plan(
    builder: &Builder,
    doc: &Dockerfile,
    context: &Context,
    typed: &Typed,
    vars: &BTreeMap<String, String>,
    state: &StageState,
    done: &[Option<StageState>],
) -> Result<CopyPlan, BuildError> {
    let (name, files, from, parents) = match &typed.command {
        Command::Copy(c) => ("COPY", &c.files, c.from.as_ref(), c.parents),
        Command::Add(a) => ("ADD", &a.files, None, false),
        _ => {
            return Err(BuildError::Internal(
                "a copy plan of another instruction".into(),
            ))
        }
    };
    let at = |m: String| BuildError::input(format!("{name} {m}"));
    let expand = |w: &str| expand_word(w, vars, doc.escape).map_err(|e| at(e.to_string()));
    if let Command::Add(add) = &typed.command {
        if add.keep_git_dir {
            return Err(BuildError::unsupported("ADD --keep-git-dir"));
        }
    }
    let dest_word = files.dest.raw();
    let flags = CopyFlags::of(files, parents, &expand, &at)?;
    let mut dest = expand(dest_word)?;
    let trailing_slash = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    if !dest.starts_with('/') {
        dest = format!("{}/{dest}", state.config.working_dir());
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
    let mut pending_files = None;
    let (sources, from, single_file, content_digest) = match from {
        Some(from) => {
            let from = expand(from)?;
            let state = builder.source_stage(doc, &from, done, context)?;
            builder.ensure_extracted(&state)?;
            let from_view = LayerView::new(builder, &state);
            let words: Vec<String> = source_texts(files)
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
            let (sources, digest, read, pending) = context_sources(
                context,
                typed,
                &expand,
                &at,
                &builder.store.layout().tmp(),
                &flags,
            )?;
            inputs = read;
            pending_files = pending;
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
    let owner = chown_of(&view, files, &expand, &at)?;
    let chmod = chmod_of(files, &expand, &at)?;
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
        pending_files,
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

/// The sources, their content digest, the inputs by name (for
/// `--explain`) and the files not listed in them yet.
type ContextSources = (Vec<Source>, String, Vec<KeyInput>, Option<PendingFiles>);

/// The context files and heredocs a COPY/ADD names, and their content
/// digest, and every file read (for `--explain`).
fn context_sources(
    context: &Context,
    typed: &Typed,
    expand: &dyn Fn(&str) -> Result<String, BuildError>,
    at: &dyn Fn(String) -> BuildError,
    tmp: &Path,
    flags: &CopyFlags,
) -> Result<ContextSources, BuildError> {
    let (files, add) = match &typed.command {
        Command::Copy(c) => (&c.files, None),
        Command::Add(a) => (&a.files, Some(a)),
        _ => {
            return Err(BuildError::Internal(
                "context sources of another instruction".into(),
            ))
        }
    };
    let is_add = add.is_some();
    // `ADD --unpack=false` copies a local archive as it is.
    let unpack = add.is_some_and(|a| a.unpack != Some(false));
    let mut inputs = Vec::new();
    let checksum = match add {
        Some(add) => crate::fetch::checksum_flag(add, expand, at)?,
        None => None,
    };
    let mut sources = Vec::new();
    let mut context_paths = Vec::new();
    // Per context path: the root `--exclude` patterns are relative to.
    let mut exclude_bases = Vec::new();
    let mut inline_digest = String::new();
    for source in &files.sources {
        let word = match source {
            TypedSource::Path(word) => word,
            TypedSource::Heredoc(h) => {
                let doc_body = files
                    .heredocs
                    .iter()
                    .find(|x| &x.delimiter == h)
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
        };
        let word = expand(word)?;
        if is_add && crate::fetch::is_http_url(&word) && !crate::fetch::is_git_url(&word) {
            // Without --checksum this downloads now: the key needs the digest.
            let source = crate::fetch::UrlSource::plan(typed.line, &word, checksum.clone(), tmp)?;
            inline_digest.push_str(&source.key_part());
            inputs.push(KeyInput::Setting {
                name: format!("ADD {word}"),
                digest: short_digest(source.key_part().as_bytes()),
            });
            sources.push(Source::Url(source));
            continue;
        }
        if is_add && (word.contains("://") || word.starts_with("git@")) {
            return Err(BuildError::unsupported(
                "ADD of a git repository or a URL that is not http(s)",
            ));
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
            if unpack && crate::archive::is_tar_archive(&context.root.join(&rel)) {
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
    let (digest, listed) =
        context.digest_sources_or_listing(&context_paths, &keep, &mut |rel, entry| {
            inputs.push(KeyInput::File {
                path: rel.to_string(),
                digest: short_digest(entry),
            })
        })?;
    // A recorded scan gave the digest: the files are listed only if
    // `--explain` needs them (the step runs, or its record changes).
    let pending = (!listed).then(|| {
        let (context, flags) = (context.clone(), flags.clone());
        PendingFiles(std::sync::Arc::new(move || {
            let keep = |i: usize, rel: &str| {
                let base = exclude_bases.get(i).map(String::as_str).unwrap_or("");
                !flags.excludes(&flags::relative(base, rel))
            };
            let mut files = Vec::new();
            context.digest_sources_listing(&context_paths, &keep, &mut |rel, entry| {
                files.push(KeyInput::File {
                    path: rel.to_string(),
                    digest: short_digest(entry),
                })
            })?;
            Ok(files)
        }))
    });
    let digest = format!("{digest}:{inline_digest}");
    Ok((sources, digest, inputs, pending))
}

/// `--chown`, resolved in the image's passwd and group files.
fn chown_of(
    view: &LayerView,
    files: &Files,
    expand: &dyn Fn(&str) -> Result<String, BuildError>,
    at: &dyn Fn(String) -> BuildError,
) -> Result<Option<(u32, u32)>, BuildError> {
    let Some(spec) = &files.chown else {
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
    files: &Files,
    expand: &dyn Fn(&str) -> Result<String, BuildError>,
    at: &dyn Fn(String) -> BuildError,
) -> Result<Option<Chmod>, BuildError> {
    let Some(m) = &files.chmod else {
        return Ok(None);
    };
    let m = expand(m)?;
    Chmod::parse(&m)
        .map(Some)
        .map_err(|e| at(format!("--chmod={m}: {e}")))
}
