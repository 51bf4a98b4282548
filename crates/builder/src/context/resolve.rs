//! The one path resolver for everything that reads a build context: COPY/ADD
//! sources and wildcards, `.dockerignore`, `RUN --mount=type=bind` sources,
//! the context digest, and snapshot context assembly.
//!
//! A path names a place *inside* the context root, as BuildKit treats it and
//! as `openat2(RESOLVE_IN_ROOT)` does for extraction (crates/layer): `..`
//! stops at the root (`../../etc/passwd` is `CONTEXT/etc/passwd`), and every
//! symlink on the way is read and its target resolved again inside the root,
//! an absolute target from the root. The result is a clean relative path
//! whose every component was seen to be a non-link (a real directory, or the
//! last component), so joining it onto the root reaches the same file
//! without following anything on the host. The symlinks crossed are
//! reported, since `.dockerignore` applies to them as well as to the result.
//!
//! The context is read in place: a tree changed *while* a build reads it can
//! still race this walk (see docs/security.md).

use std::path::Path;

/// More symlinks than this on one path is a loop (Linux's own limit is 40).
const MAX_LINKS: usize = 40;

/// A path resolved inside a context root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Slash-separated, relative to the root, no `.`/`..`/symlink components
    /// (empty for the root itself).
    pub rel: String,
    /// The context paths of the symlinks followed on the way, in order.
    pub links: Vec<String>,
}

/// Why a path cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{path:?}: more than {MAX_LINKS} symlinks (a loop?)")]
    TooManyLinks { path: String },
    #[error("{path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Lexical clean of a slash path inside a root: no leading `/` or `./`, no
/// `.` parts, and `..` removes the previous part or, at the root, nothing.
pub fn clamp(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Resolve `path` inside `root`. With `follow_last`, a symlink in the last
/// component is followed too (a COPY source, as BuildKit's FollowSymlinks);
/// without, it is the result itself. A missing component ends the walk
/// there: the rest is taken as written (clamped), for the caller's check.
pub fn resolve(root: &Path, path: &str, follow_last: bool) -> Result<Resolved, ResolveError> {
    let mut done: Vec<String> = Vec::new();
    let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    let mut links = Vec::new();
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(part);
        let rel = done.join("/");
        let is_last = pending.iter().all(|p| p.is_empty() || p == ".");
        let meta = match std::fs::symlink_metadata(root.join(&rel)) {
            Ok(m) => m,
            // Not there (or below a file): the caller's existence check says so.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(nix::libc::ENOTDIR) =>
            {
                continue
            }
            Err(source) => return Err(ResolveError::Io { path: rel, source }),
        };
        if !meta.file_type().is_symlink() || (is_last && !follow_last) {
            continue;
        }
        if links.len() >= MAX_LINKS {
            return Err(ResolveError::TooManyLinks {
                path: path.to_string(),
            });
        }
        let target = std::fs::read_link(root.join(&rel)).map_err(|source| ResolveError::Io {
            path: rel.clone(),
            source,
        })?;
        links.push(rel);
        done.pop();
        let target = target.to_string_lossy().into_owned();
        if target.starts_with('/') {
            done.clear();
        }
        pending.extend(target.split('/').rev().map(str::to_string));
    }
    Ok(Resolved {
        rel: done.join("/"),
        links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("real/sub")).unwrap();
        std::fs::write(r.join("etc/passwd"), "ctx").unwrap();
        std::fs::write(r.join("real/sub/f"), "f").unwrap();
        symlink("/", r.join("h")).unwrap();
        symlink("real", r.join("alias")).unwrap();
        symlink("../../../real/sub", r.join("up")).unwrap();
        symlink("/real/sub/f", r.join("abs")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        t
    }

    fn rel(root: &Path, path: &str, follow: bool) -> String {
        resolve(root, path, follow).unwrap().rel
    }

    #[test]
    fn dotdot_clamps_at_the_root() {
        assert_eq!(clamp("../../etc/passwd"), "etc/passwd");
        assert_eq!(clamp("/a/../../b/./c/"), "b/c");
        assert_eq!(clamp("."), "");
        let t = tree();
        assert_eq!(rel(t.path(), "../../etc/passwd", true), "etc/passwd");
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tree();
        let r = t.path();
        // `h -> /` is the context root, never the host's.
        let got = resolve(r, "h/etc/passwd", true).unwrap();
        assert_eq!(got.rel, "etc/passwd");
        assert_eq!(got.links, ["h"]);
        assert_eq!(rel(r, "h/root/secret.txt", true), "root/secret.txt");
        assert_eq!(rel(r, "alias/sub/f", true), "real/sub/f");
        assert_eq!(rel(r, "up/f", true), "real/sub/f");
        assert_eq!(rel(r, "abs", true), "real/sub/f");
        assert_eq!(rel(r, "h/h/h/abs", true), "real/sub/f");
    }

    #[test]
    fn the_last_link_is_kept_unless_followed() {
        let t = tree();
        let got = resolve(t.path(), "alias", false).unwrap();
        assert_eq!(got.rel, "alias");
        assert!(got.links.is_empty());
        assert_eq!(rel(t.path(), "h/alias", false), "alias");
    }

    #[test]
    fn loops_are_an_error() {
        let t = tree();
        let err = resolve(t.path(), "loop/x", true).unwrap_err();
        assert!(matches!(err, ResolveError::TooManyLinks { .. }), "{err}");
    }

    #[test]
    fn missing_parts_are_kept_as_written() {
        let t = tree();
        assert_eq!(rel(t.path(), "nope/../x/y", true), "x/y");
        assert_eq!(rel(t.path(), "alias/none", true), "real/none");
    }
}
