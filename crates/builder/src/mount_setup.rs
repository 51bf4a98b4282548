//! The `RUN --mount`s of one run made real: sources found and keyed, cache
//! directories kept in the store, secrets written to the run's scratch dir,
//! and the mount points the image lacked removed again afterwards (as
//! BuildKit does: a mount leaves nothing in the layer).

use crate::context::{clean, Context};
use crate::mounts::{type_name, MountType, RunMount, Sharing};
use crate::state::StageState;
use crate::view::LayerView;
use crate::BuildError;
use crate::Builder;
use cairn_dockerfile::Dockerfile;
use cairn_sandbox::{ExtraMount, MountSource, Ownership, Task};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};

/// A secret the build may mount (`RUN --mount=type=secret,id=ID`).
#[derive(Debug, Clone)]
pub enum Secret {
    /// The content of this file, read when a RUN uses it.
    File(PathBuf),
    /// The value of this environment variable of the building process.
    Env(String),
    /// This value.
    Value(Vec<u8>),
}

/// The mounts of one run, ready for its [`cairn_sandbox::RunSpec`].
pub(crate) struct MountSetup {
    pub mounts: Vec<ExtraMount>,
    /// `NAME=value` for secrets asked for with `env=`.
    pub env: Vec<String>,
    /// Mount points the image lacks (relative to the root, deepest first):
    /// the run creates them, [`Builder::remove_stubs`] removes what stays empty.
    pub stubs: Vec<String>,
    /// Locks of `locked` and `private` cache mounts, held for the run.
    _locks: Vec<Flock<File>>,
}

/// What the stages a mount reads from are called, for messages.
fn where_from(m: &RunMount) -> String {
    match &m.from {
        Some(f) => format!("stage or image {f:?}"),
        None => "the build context".into(),
    }
}

impl Builder<'_> {
    /// What the mounts add to the step's cache key: the content of every
    /// bind source (context files by content, another stage by its key),
    /// each with the source it names.
    /// Cache, tmpfs and secret mounts add nothing: their content never
    /// decides what the step makes (as in BuildKit).
    pub(crate) fn mount_key(
        &self,
        mounts: &[RunMount],
        doc: &Dockerfile,
        context: &Context,
        done: &[Option<StageState>],
    ) -> Result<Vec<(String, String)>, BuildError> {
        let mut parts = Vec::new();
        for m in mounts.iter().filter(|m| m.kind == MountType::Bind) {
            let part = match &m.from {
                Some(from) => {
                    let state = self.source_stage(doc, from, done, context)?;
                    let source = format!("{from}:{}", clean(&m.source));
                    (source, format!("from:{}:{}", state.key, clean(&m.source)))
                }
                None => {
                    let rel = self.context_source(context, m)?;
                    let digest = context.digest_sources(std::slice::from_ref(&rel))?;
                    (format!("context:{rel}"), format!("context:{rel}:{digest}"))
                }
            };
            parts.push(part);
        }
        Ok(parts)
    }

    /// The context path a bind mount's source reaches (resolved inside the
    /// context root, so the mount never leaves it), checked to be offered.
    fn context_source(&self, context: &Context, m: &RunMount) -> Result<String, BuildError> {
        context.resolve_offered(&m.source, "RUN --mount: source")
    }

    /// Prepare every mount of a run whose scratch dir is `dir`.
    pub(crate) fn setup_mounts(
        &self,
        mounts: &[RunMount],
        doc: &Dockerfile,
        context: &Context,
        done: &[Option<StageState>],
        state: &StageState,
        dir: &Path,
    ) -> Result<MountSetup, BuildError> {
        let mut setup = MountSetup {
            mounts: Vec::new(),
            env: Vec::new(),
            stubs: Vec::new(),
            _locks: Vec::new(),
        };
        for (i, m) in mounts.iter().enumerate() {
            let scratch = dir.join("mounts").join(i.to_string());
            let source = match m.kind {
                MountType::Bind => Some(self.bind_source(m, doc, context, done, &scratch)?),
                MountType::Cache => Some(self.cache_source(m, context, &scratch, &mut setup)?),
                MountType::Tmpfs => Some(MountSource::Tmpfs {
                    size: m.size.clone(),
                }),
                MountType::Secret => self.secret_source(m, &scratch, &mut setup)?,
            };
            if let (Some(source), Some(target)) = (source, &m.target) {
                setup.mounts.push(ExtraMount {
                    target: target.clone(),
                    source,
                    read_only: m.read_only,
                });
            }
        }
        setup.stubs = missing_mount_points(
            &LayerView::new(self, state),
            setup.mounts.iter().map(|m| m.target.as_str()),
        );
        Ok(setup)
    }

    /// A bind mount: the source tree under a private upper dir, so that
    /// writes (`rw`) never reach the context or another stage's layers.
    fn bind_source(
        &self,
        m: &RunMount,
        doc: &Dockerfile,
        context: &Context,
        done: &[Option<StageState>],
        scratch: &Path,
    ) -> Result<MountSource, BuildError> {
        let (lowers, subpath) = match &m.from {
            Some(from) => {
                let state = self.source_stage(doc, from, done, context)?;
                self.ensure_extracted(&state)?;
                let view = LayerView::new(self, &state);
                let rel = view.resolve(&m.source, true);
                if view.lookup(&rel).is_none() {
                    return Err(BuildError::not_found(
                        None,
                        format!(
                            "RUN --mount: source {:?} not found in {}",
                            m.source,
                            where_from(m)
                        ),
                    ));
                }
                (self.layer_dirs(&state), rel)
            }
            None => {
                let rel = self.context_source(context, m)?;
                let root = context.root.join(&rel);
                if context.has_ignore_rules() && root.is_dir() {
                    // Ignored files must not show: mount a tree of links to
                    // the offered ones instead of the context itself.
                    let farm = scratch.join("offered");
                    link_offered(context, &rel, &farm)?;
                    (vec![farm], String::new())
                } else {
                    (vec![context.root.clone()], rel)
                }
            }
        };
        let lowers = self.writable_lowers(m, lowers, scratch)?;
        let (upper, work, at) = (
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("at"),
        );
        for d in [&upper, &work, &at] {
            std::fs::create_dir_all(d).map_err(BuildError::io(d))?;
        }
        Ok(MountSource::Overlay {
            lowers,
            upper,
            work,
            at,
            subpath,
        })
    }

    /// A read-write bind under real root's shifted mapping: overlay cannot
    /// copy up a file of host root (unmapped in the sandbox), so the lower
    /// dirs are copied first and given to container root, as BuildKit's
    /// context snapshot shows them (0:0). Otherwise `lowers` as they are.
    /// (Only a rw bind of the context copies; it costs the source's size.)
    fn writable_lowers(
        &self,
        m: &RunMount,
        lowers: Vec<PathBuf>,
        scratch: &Path,
    ) -> Result<Vec<PathBuf>, BuildError> {
        // A stage's layer dirs already belong to the mapping.
        let from_context = m.from.is_none();
        if m.read_only || !from_context || self.mapping.is_identity() {
            return Ok(lowers);
        }
        if !nix::unistd::geteuid().is_root() {
            return Ok(lowers);
        }
        let copy = scratch.join("rw-lower");
        std::fs::create_dir_all(&copy).map_err(BuildError::io(&copy))?;
        let owner = (
            self.mapping.host_uid(0).unwrap_or(0),
            self.mapping.host_gid(0).unwrap_or(0),
        );
        let mut copier = cairn_sandbox::fscopy::Copier::new(cairn_sandbox::fscopy::CopyOptions {
            owners: cairn_sandbox::fscopy::Owners::Set(owner.0, owner.1),
            chmod: None,
            skip_whiteouts: true,
        });
        // Lowest first: upper layers overwrite what is below them.
        for lower in &lowers {
            copier
                .copy_contents(lower, &copy)
                .map_err(|e| BuildError::Io {
                    path: lower.clone(),
                    source: e,
                })?;
        }
        std::os::unix::fs::lchown(&copy, Some(owner.0), Some(owner.1))
            .map_err(BuildError::io(&copy))?;
        Ok(vec![copy])
    }

    /// A cache mount: a directory of the store's `cache-mounts/`, named by
    /// the cache id, created with its mode and owner on first use.
    fn cache_source(
        &self,
        m: &RunMount,
        context: &Context,
        scratch: &Path,
        setup: &mut MountSetup,
    ) -> Result<MountSource, BuildError> {
        if m.from.is_some() {
            return Err(BuildError::unsupported(
                "RUN --mount=type=cache with from= (a cache seeded from a stage)",
            ));
        }
        let root = cache_mounts_dir(self.store);
        std::fs::create_dir_all(&root).map_err(BuildError::io(&root))?;
        // Cache mounts are per organization: its namespace is in the name.
        let scoped = match &context.organization {
            Some(org) => format!("{}\0{}", crate::tenancy::namespace(org), m.id),
            None => m.id.clone(),
        };
        let name = hex::encode(&Sha256::digest(scoped.as_bytes())[..16]);
        let mut path = root.join(&name);
        if m.sharing != Sharing::Shared {
            let lock_path = root.join(format!("{name}.lock"));
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(BuildError::io(&lock_path))?;
            let how = match m.sharing {
                Sharing::Locked => FlockArg::LockExclusive,
                _ => FlockArg::LockExclusiveNonblock,
            };
            match Flock::lock(file, how) {
                Ok(lock) => setup._locks.push(lock),
                // `private` and in use: a directory of this run's own.
                Err(_) if m.sharing == Sharing::Private => {
                    std::fs::create_dir_all(scratch).map_err(BuildError::io(scratch))?;
                    path = scratch.join("private");
                }
                Err((_, e)) => {
                    return Err(BuildError::Io {
                        path: lock_path,
                        source: e.into(),
                    })
                }
            }
        }
        let created = match std::fs::create_dir(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(BuildError::Io { path, source: e }),
        };
        Ok(MountSource::Host {
            path,
            owner: created.then(|| Ownership {
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                mode: m.mode.unwrap_or(0o755),
            }),
        })
    }

    /// A secret: its value in a file of the scratch dir (mode 0400 unless
    /// asked), and/or an environment variable. `None` when the secret was
    /// not given and is not required (BuildKit then mounts nothing).
    fn secret_source(
        &self,
        m: &RunMount,
        scratch: &Path,
        setup: &mut MountSetup,
    ) -> Result<Option<MountSource>, BuildError> {
        let value = match self.secrets.get(&m.id) {
            Some(Secret::Value(v)) => Some(v.clone()),
            Some(Secret::File(path)) => Some(std::fs::read(path).map_err(|e| {
                BuildError::input(format!(
                    "secret {:?}: reading {}: {e}",
                    m.id,
                    path.display()
                ))
            })?),
            Some(Secret::Env(var)) => std::env::var_os(var).map(|v| v.into_encoded_bytes()),
            None => None,
        };
        let Some(value) = value else {
            if m.required {
                return Err(BuildError::input(format!(
                    "RUN --mount=type={}: secret {:?} is required but was not given (--secret id={},src=FILE)",
                    type_name(m.kind),
                    m.id,
                    m.id
                )));
            }
            return Ok(None);
        };
        if let Some(var) = &m.env {
            setup
                .env
                .push(format!("{var}={}", String::from_utf8_lossy(&value)));
        }
        if m.target.is_none() {
            return Ok(None);
        }
        std::fs::create_dir_all(scratch).map_err(BuildError::io(scratch))?;
        let path = scratch.join("secret");
        write_private(&path, &value)?;
        Ok(Some(MountSource::Host {
            path,
            owner: Some(Ownership {
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                mode: m.mode.unwrap_or(0o400),
            }),
        }))
    }

    /// Remove the mount points a run needed and left empty from its upper
    /// dir. Rootless, a stub under a directory of another container user
    /// is only removable inside the user namespace: then a task does it.
    pub(crate) fn remove_stubs(&self, upper: &Path, stubs: &[String]) -> Result<(), BuildError> {
        if stubs.is_empty() {
            return Ok(());
        }
        let paths: Vec<PathBuf> = stubs.iter().map(|s| upper.join(s)).collect();
        match cairn_sandbox::remove_empty(&paths) {
            Ok(()) => Ok(()),
            Err((_, e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                self.tasks.remove_empty(paths)
            }
            Err((path, source)) => Err(BuildError::Io { path, source }),
        }
    }
}

/// The store's directory of cache mounts.
fn cache_mounts_dir(store: &cairn_store::Store) -> PathBuf {
    store.layout().root().join("cache-mounts")
}

/// Delete every cache mount of the store (`cairn prune --cache-mounts`);
/// returns how many there were. Files a RUN wrote there as another
/// container user belong to subordinate IDs: a task in the user namespace
/// removes each tree. The caller holds the store's exclusive lock, so no
/// build is using one.
pub fn remove_cache_mounts(
    store: &cairn_store::Store,
    launcher: &cairn_sandbox::Launcher,
) -> Result<usize, BuildError> {
    let dir = cache_mounts_dir(store);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(BuildError::Io {
                path: dir,
                source: e,
            })
        }
    };
    let mapping = cairn_sandbox::idmap::IdMapping::for_current_user();
    let mut removed = 0;
    for entry in entries {
        let path = entry.map_err(BuildError::io(&dir))?.path();
        if path.is_dir() {
            launcher.run_task(&mapping, Task::RemoveTree(path))?;
            removed += 1;
        } else {
            std::fs::remove_file(&path).map_err(BuildError::io(&path))?;
        }
    }
    Ok(removed)
}

/// Each target and each of its parents that the image lacks, relative to
/// the root, deepest first: what the run will create only to mount on.
fn missing_mount_points<'a>(
    view: &LayerView,
    targets: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    for target in targets {
        let mut rel = view.resolve(target, true);
        while !rel.is_empty() && view.lookup(&rel).is_none() {
            if !missing.contains(&rel) {
                missing.push(rel.clone());
            }
            rel = match rel.rsplit_once('/') {
                Some((parent, _)) => parent.to_string(),
                None => String::new(),
            };
        }
    }
    missing.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    missing
}

/// A tree at `farm` holding the context's offered entries under `rel`:
/// directories made, files hard-linked (copied across filesystems), links
/// recreated. The overlay above it keeps the run's writes off the originals.
fn link_offered(context: &Context, rel: &str, farm: &Path) -> Result<(), BuildError> {
    let top = context.root.join(rel);
    // Directory modes are set last: a read-only one must still take entries.
    let mut dir_modes = Vec::new();
    let mut walk = walkdir::WalkDir::new(&top).sort_by_file_name().into_iter();
    while let Some(entry) = walk.next() {
        let entry =
            entry.map_err(|e| BuildError::input(format!("reading the build context: {e}")))?;
        let in_context = crate::context::rel_of(&context.root, entry.path());
        if !context.includes(&in_context) {
            if entry.file_type().is_dir() && context.can_skip_dir(&in_context) {
                walk.skip_current_dir();
            }
            continue;
        }
        let dest = farm.join(entry.path().strip_prefix(&top).unwrap_or(Path::new("")));
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).map_err(BuildError::io(&dest))?;
            let meta = entry.metadata().map_err(|e| BuildError::Io {
                path: entry.path().to_path_buf(),
                source: e.into(),
            })?;
            dir_modes.push((dest, meta.permissions()));
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(BuildError::io(entry.path()))?;
            std::os::unix::fs::symlink(target, &dest).map_err(BuildError::io(&dest))?;
        } else if std::fs::hard_link(entry.path(), &dest).is_err() {
            std::fs::copy(entry.path(), &dest).map_err(BuildError::io(&dest))?;
        }
    }
    for (dir, perm) in dir_modes.into_iter().rev() {
        std::fs::set_permissions(&dir, perm).map_err(BuildError::io(&dir))?;
    }
    Ok(())
}

/// Write `value` to a new file only its owner can read.
fn write_private(path: &Path, value: &[u8]) -> Result<(), BuildError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(BuildError::io(path))?;
    f.write_all(value).map_err(BuildError::io(path))
}
