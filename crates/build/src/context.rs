//! The build context: which files COPY may read (after .dockerignore), and
//! the content digest of a set of sources for the cache key.

use crate::memo::HashMemo;
use crate::BuildError;
use cairn_dockerfile::ignore::DockerIgnore;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A context directory with its ignore rules.
#[derive(Clone)]
pub struct Context {
    pub root: PathBuf,
    ignore: DockerIgnore,
    /// Memoised content hashes, keyed by the canonical path of each file.
    memo: Option<(PathBuf, Arc<HashMemo>)>,
}

impl Context {
    /// Open `root`, reading `<dockerfile>.dockerignore` or `.dockerignore`.
    pub fn open(root: &Path, dockerfile_path: Option<&Path>) -> Result<Self, BuildError> {
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile_path {
            candidates.push(PathBuf::from(format!("{}.dockerignore", df.display())));
        }
        candidates.push(root.join(".dockerignore"));
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
        rel.is_empty() || !self.ignore.is_excluded(rel)
    }

    /// Whether any ignore rule exists (else every file is offered).
    pub fn has_ignore_rules(&self) -> bool {
        !self.ignore.patterns().is_empty()
    }

    /// The directory `rel` is excluded and nothing below it can be re-included.
    pub fn can_skip_dir(&self, rel: &str) -> bool {
        !rel.is_empty() && self.ignore.can_skip_dir(rel)
    }

    /// Resolve one COPY source (a path or a wildcard pattern) to the context
    /// paths it names, relative to the root. Errors name the source.
    pub fn resolve_source(&self, source: &str) -> Result<Vec<String>, BuildError> {
        let cleaned = clean(source);
        if cleaned.starts_with("..") {
            return Err(BuildError::input(format!(
                "COPY source {source:?} is outside the build context"
            )));
        }
        let has_wildcard = cleaned.contains(['*', '?', '[']);
        if !has_wildcard {
            let path = self.root.join(&cleaned);
            if std::fs::symlink_metadata(&path).is_err() || !self.includes(&cleaned) {
                return Err(BuildError::input(format!(
                    "COPY source {source:?}: not found in the build context {}",
                    self.root.display()
                )));
            }
            return Ok(vec![cleaned]);
        }
        let matcher = DockerIgnore::from_patterns([cleaned.as_str()])
            .map_err(|e| BuildError::input(format!("COPY source {source:?}: {e}")))?;
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(&self.root)
            .min_depth(1)
            .sort_by_file_name()
        {
            let entry =
                entry.map_err(|e| BuildError::input(format!("reading the build context: {e}")))?;
            let rel = rel_of(&self.root, entry.path());
            let parent_matched = found
                .iter()
                .any(|f: &String| rel.starts_with(&format!("{f}/")));
            if !parent_matched && matcher.is_excluded(&rel) && self.includes(&rel) {
                found.push(rel);
            }
        }
        if found.is_empty() {
            return Err(BuildError::input(format!(
                "COPY source {source:?}: no file in the build context matches"
            )));
        }
        Ok(found)
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
        let mut h = Sha256::new();
        for (i, src) in sources.iter().enumerate() {
            for entry in walkdir::WalkDir::new(self.root.join(src)).sort_by_file_name() {
                let entry = entry
                    .map_err(|e| BuildError::input(format!("reading the build context: {e}")))?;
                let rel = rel_of(&self.root, entry.path());
                if !self.includes(&rel) || !keep(i, &rel) {
                    continue;
                }
                let meta = entry
                    .path()
                    .symlink_metadata()
                    .map_err(BuildError::io(entry.path()))?;
                h.update(rel.as_bytes());
                h.update([0]);
                h.update(meta.permissions().mode().to_le_bytes());
                if meta.is_file() {
                    h.update(meta.size().to_le_bytes());
                    let sum = match &self.memo {
                        Some((canonical, memo)) => {
                            memo.sha256(&canonical.join(&rel), &meta, || file_sha256(entry.path()))?
                        }
                        None => file_sha256(entry.path())?,
                    };
                    h.update(sum);
                } else if meta.file_type().is_symlink() {
                    let target =
                        std::fs::read_link(entry.path()).map_err(BuildError::io(entry.path()))?;
                    h.update(target.as_os_str().as_encoded_bytes());
                }
                h.update([0]);
            }
        }
        Ok(hex::encode(h.finalize()))
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
mod tests {
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
