//! The build context: which files COPY may read (after .dockerignore), and
//! the content digest of a set of sources for the cache key. Every path is
//! resolved inside the root by [`resolve`] (`..` clamps, symlinks resolve in
//! the root), and `.dockerignore` applies to the path reached and to every
//! symlink crossed on the way.

mod fingerprint;
pub mod resolve;
mod scan;
pub(crate) use scan::Stat;

use crate::memo::HashMemo;
use crate::BuildError;
use cairn_dockerfile::ignore::DockerIgnore;
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Hears each entry of a sources digest: its path and the bytes that
/// stand for it.
type Listing<'a> = &'a mut dyn FnMut(&str, &[u8]);

/// A context directory with its ignore rules.
#[derive(Clone)]
pub struct Context {
    pub root: PathBuf,
    ignore: DockerIgnore,
    /// Memoised content hashes, keyed by the canonical path of each file.
    memo: Option<(PathBuf, Arc<HashMemo>)>,
    /// The organization the build is for (`BuildRequest::organization`).
    pub(crate) organization: Option<String>,
}

impl Context {
    /// Open `root`, reading `<dockerfile>.dockerignore` or `.dockerignore`.
    pub fn open(root: &Path, dockerfile_path: Option<&Path>) -> Result<Self, BuildError> {
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile_path {
            candidates.push(PathBuf::from(format!("{}.dockerignore", df.display())));
        }
        // The context's own .dockerignore is itself a context path.
        if let Ok(r) = resolve::resolve(root, ".dockerignore", true) {
            candidates.push(root.join(r.rel));
        }
        let mut ignore = DockerIgnore::parse("")
            .map_err(|e| BuildError::input(format!(".dockerignore: {e}")))?;
        for c in candidates {
            if let Ok(text) = std::fs::read_to_string(&c) {
                ignore = DockerIgnore::parse(&text)
                    .map_err(|e| BuildError::input(format!("{}: {e}", c.display())))?;
                break;
            }
        }
        // Absolute: the root reaches the sandbox helper (bind mounts), which
        // runs in another working directory; `cairn build .` must work.
        let root = std::path::absolute(root).map_err(BuildError::io(root))?;
        Ok(Context {
            root,
            ignore,
            memo: None,
            organization: None,
        })
    }

    /// Serve content hashes through `memo` (see `memo.rs`).
    pub(crate) fn with_memo(mut self, memo: Arc<HashMemo>) -> Self {
        if let Ok(canonical) = std::fs::canonicalize(&self.root) {
            self.memo = Some((canonical, memo));
        }
        self
    }

    /// Is `rel` (slash-separated, relative to the root) offered to the build?
    pub fn includes(&self, rel: &str) -> bool {
        // No rules: no per-entry path cleaning (the scan asks for every entry).
        rel.is_empty() || !self.has_ignore_rules() || !self.ignore.is_excluded(rel)
    }

    /// Whether any ignore rule exists (else every file is offered).
    pub fn has_ignore_rules(&self) -> bool {
        !self.ignore.patterns().is_empty()
    }

    /// The directory `rel` is excluded and nothing below it can be re-included.
    pub fn can_skip_dir(&self, rel: &str) -> bool {
        !rel.is_empty() && self.ignore.can_skip_dir(rel)
    }

    /// The context path that `path` (as a Dockerfile writes it) reaches:
    /// resolved inside the root, following symlinks (the last one too, as
    /// BuildKit's COPY does). It must exist and be offered by .dockerignore,
    /// as must every symlink crossed. `what` names the path in errors.
    pub fn resolve_offered(&self, path: &str, what: &str) -> Result<String, BuildError> {
        let found = resolve::resolve(&self.root, path, true)
            .map_err(|e| BuildError::input(format!("{what} {path:?}: {e}")))?;
        let exists = std::fs::symlink_metadata(self.root.join(&found.rel)).is_ok();
        let offered = self.includes(&found.rel) && found.links.iter().all(|l| self.includes(l));
        if !exists || !offered {
            return Err(BuildError::not_found(
                None,
                format!(
                    "{what} {path:?} not found in the build context {}{}",
                    self.root.display(),
                    if exists {
                        " (excluded by .dockerignore)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(found.rel)
    }

    /// Resolve one COPY source (a path or a wildcard pattern) to the context
    /// paths it names, relative to the root and clamped in it (`..` stops
    /// at the root), as written: [`Context::resolve_offered`] then gives
    /// the path each reaches. Errors name the source.
    pub fn resolve_source(&self, source: &str) -> Result<Vec<String>, BuildError> {
        let cleaned = resolve::clamp(source);
        let parts: Vec<&str> = cleaned.split('/').filter(|p| !p.is_empty()).collect();
        let fixed = parts
            .iter()
            .take_while(|p| !p.contains(['*', '?', '[']))
            .count();
        if fixed == parts.len() {
            self.resolve_offered(&cleaned, "COPY source")?;
            return Ok(vec![cleaned]);
        }
        // A wildcard: walk only the dir its fixed part reaches, as deep as
        // the pattern goes.
        let prefix = parts[..fixed].join("/");
        let rest = parts[fixed..].join("/");
        let base = self.resolve_offered(&prefix, "COPY source")?;
        let matcher = DockerIgnore::from_patterns([rest.as_str()])
            .map_err(|e| BuildError::input(format!("COPY source {source:?}: {e}")))?;
        let depth = match rest.contains("**") {
            true => usize::MAX,
            false => parts.len() - fixed,
        };
        let top = self.root.join(&base);
        let mut found: Vec<String> = Vec::new();
        for entry in walkdir::WalkDir::new(&top)
            .min_depth(1)
            .max_depth(depth)
            .sort_by_file_name()
        {
            let entry =
                entry.map_err(|e| BuildError::input(format!("reading the build context: {e}")))?;
            let under = rel_of(&top, entry.path());
            let parent_matched = found.iter().any(|f| under.starts_with(&format!("{}/", f)));
            if !parent_matched && matcher.is_excluded(&under) && self.includes(&join(&base, &under))
            {
                found.push(under);
            }
        }
        if found.is_empty() {
            return Err(BuildError::input(format!(
                "COPY source {source:?}: no file in the build context matches"
            )));
        }
        Ok(found.into_iter().map(|u| join(&prefix, &u)).collect())
    }

    /// Digest of sources by (relative path, type, mode, size, content sha256,
    /// link target), in sorted order; never mtimes. Ignored files are skipped.
    pub fn digest_sources(&self, sources: &[String]) -> Result<String, BuildError> {
        self.digest_sources_where(sources, &|_, _| true)
    }

    /// [`Context::digest_sources`], leaving out the paths below source `i`
    /// for which `keep(i, rel)` is false (`COPY --exclude`).
    pub fn digest_sources_where(
        &self,
        sources: &[String],
        keep: &dyn Fn(usize, &str) -> bool,
    ) -> Result<String, BuildError> {
        self.digest(sources, keep, None, true)
            .map(|(digest, _)| digest)
    }

    /// [`Context::digest_sources_where`], telling `each` every entry's
    /// path and the bytes that stand for it in the digest (for `--explain`).
    pub fn digest_sources_listing(
        &self,
        sources: &[String],
        keep: &dyn Fn(usize, &str) -> bool,
        each: &mut dyn FnMut(&str, &[u8]),
    ) -> Result<String, BuildError> {
        self.digest(sources, keep, Some(each), false)
            .map(|(digest, _)| digest)
    }

    /// [`Context::digest_sources_listing`] when the scan is not the one
    /// recorded, else the recorded digest without a listing: the bool says
    /// whether `each` heard the entries (a caller lists them later with
    /// `digest_sources_listing` when it needs them).
    pub fn digest_sources_or_listing(
        &self,
        sources: &[String],
        keep: &dyn Fn(usize, &str) -> bool,
        each: &mut dyn FnMut(&str, &[u8]),
    ) -> Result<(String, bool), BuildError> {
        self.digest(sources, keep, Some(each), true)
    }

    /// The sources digest. One `statx` per entry at its directory's
    /// descriptor ([`scan`]), then the scan's [`fingerprint`]: when the
    /// memo recorded it and `recorded_ok`, its digest (nothing else is
    /// read; `each`, when given, hears nothing and the bool is false). Else the memo
    /// look-ups and the reads of changed files run on every core, and the
    /// results are hashed in walk order (the digest a single thread
    /// gives); a settled scan's digest is recorded.
    fn digest(
        &self,
        sources: &[String],
        keep: &dyn Fn(usize, &str) -> bool,
        mut each: Option<Listing>,
        recorded_ok: bool,
    ) -> Result<(String, bool), BuildError> {
        let began_ns = crate::memo::now_ns();
        let scanned = cairn_layer::timing::span("context.scan");
        let found: Vec<Vec<scan::Found>> = sources
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let keep = |rel: &str| self.includes(rel) && keep(i, rel);
                scan::scan(&self.root, src, &keep, &|rel| self.can_skip_dir(rel))
            })
            .collect::<Result<_, _>>()?;
        drop(scanned);
        let print = self.memo.as_ref().map(|(canonical, memo)| {
            let _span = cairn_layer::timing::span("context.fingerprint");
            (
                fingerprint::of(canonical, sources, &found, began_ns),
                canonical,
                memo,
            )
        });
        if let Some((print, _, memo)) = &print {
            if let Some(digest) = memo.scan_digest(&print.sum).filter(|_| recorded_ok) {
                return Ok((digest, false));
            }
            // The memo loads now (or on its thread since the build began),
            // before the look-ups on the pool.
            let _wait = cairn_layer::timing::span("context.memo_wait");
            memo.ready();
        }
        let _described = cairn_layer::timing::span("context.describe_and_hash");
        let mut h = Sha256::new();
        for entries in &found {
            let described: Vec<Result<Vec<u8>, BuildError>> =
                entries.par_iter().map(|f| self.describe(f)).collect();
            for (f, e) in entries.iter().zip(described) {
                let e = e?;
                h.update(f.rel.as_bytes());
                h.update([0]);
                h.update(&e);
                if let Some(each) = each.as_mut() {
                    each(&f.rel, &e);
                }
            }
        }
        let digest = hex::encode(h.finalize());
        if let Some((print, canonical, memo)) = print {
            if print.settled {
                memo.record_scan(print.sum, &digest, canonical);
            }
        }
        Ok((digest, true))
    }

    /// The bytes that stand for one entry in a sources digest: mode, and
    /// size + content sha256 (a file) or the target (a symlink), then NUL.
    fn describe(&self, found: &scan::Found) -> Result<Vec<u8>, BuildError> {
        let (rel, meta) = (&found.rel, &found.meta);
        let mut e = Vec::with_capacity(48);
        e.extend(meta.mode.to_le_bytes());
        if meta.is_file() {
            e.extend(meta.size.to_le_bytes());
            let path = || self.root.join(rel);
            let sum = match &self.memo {
                Some((canonical, memo)) => {
                    memo.sha256(&canonical.join(rel), meta, || file_sha256(&path()))?
                }
                None => file_sha256(&path())?,
            };
            e.extend(sum);
        } else if meta.is_symlink() {
            let path = self.root.join(rel);
            let target = std::fs::read_link(&path).map_err(BuildError::io(&path))?;
            e.extend(target.as_os_str().as_encoded_bytes());
        }
        e.push(0);
        Ok(e)
    }
}

fn file_sha256(path: &Path) -> Result<[u8; 32], BuildError> {
    let mut f = std::fs::File::open(path).map_err(BuildError::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(BuildError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// `a/b` of two slash paths, either possibly empty.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

pub fn rel_of(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Lexical clean of a slash path: no leading `/` or `./`, no `.` parts, `..` resolved.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !path.starts_with('/') {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod clean_tests {
    use super::clean;

    #[test]
    fn clean_paths() {
        assert_eq!(clean("./a//b/./c/"), "a/b/c");
        assert_eq!(clean("/a/../b"), "b");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(clean("/../x"), "x");
        assert_eq!(clean("."), "");
    }
}
