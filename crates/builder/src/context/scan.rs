//! The entries below one context path, with their metadata, in the order
//! a sorted pre-order walk meets them (the order the sources digest
//! hashes them in). One `statx` per entry, relative to its directory's
//! descriptor (no path lookup from the root), on every core for big
//! directories; no directory descriptor is held across the walk.

use crate::BuildError;
use rayon::prelude::*;
use std::ffi::OsString;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

/// Directories with at least this many names are stat'ed in parallel.
const PARALLEL_FROM: usize = 32;

/// One entry: its path relative to the context root, and its lstat.
pub(crate) struct Found {
    pub rel: String,
    pub meta: Metadata,
}

/// The children of one directory still to visit, in name order.
struct Pending {
    dir: PathBuf,
    rel: String,
    children: std::vec::IntoIter<(OsString, Metadata)>,
}

/// Every entry at or below `root/src` for which `keep(rel)` holds:
/// `src` itself first, then each directory's children sorted by name,
/// each directory's contents right after it. Symlinks are not followed,
/// except `src` itself when it is one to a directory.
pub(crate) fn scan(
    root: &Path,
    src: &str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<Found>, BuildError> {
    let top = root.join(src);
    let rel = super::rel_of(root, &top);
    let meta = std::fs::symlink_metadata(&top).map_err(read_err(&top))?;
    let mut out = Vec::new();
    let descend = meta.is_dir() || (meta.file_type().is_symlink() && top.is_dir());
    if keep(&rel) {
        out.push(Found {
            rel: rel.clone(),
            meta,
        });
    }
    if !descend {
        return Ok(out);
    }
    let mut stack = vec![read_children(top, rel)?];
    while let Some(pending) = stack.last_mut() {
        let Some((name, meta)) = pending.children.next() else {
            stack.pop();
            continue;
        };
        let rel = join(&pending.rel, &name.to_string_lossy());
        let is_dir = meta.is_dir();
        let dir = pending.dir.join(&name);
        if keep(&rel) {
            out.push(Found {
                rel: rel.clone(),
                meta,
            });
        }
        if is_dir {
            stack.push(read_children(dir, rel)?);
        }
    }
    Ok(out)
}

/// The names of `dir`, sorted, each with its lstat (`statx` at the
/// directory's descriptor). The directory is closed on return.
fn read_children(dir: PathBuf, rel: String) -> Result<Pending, BuildError> {
    let mut entries: Vec<(OsString, std::fs::DirEntry)> = std::fs::read_dir(&dir)
        .map_err(read_err(&dir))?
        .map(|e| e.map(|e| (e.file_name(), e)))
        .collect::<Result<_, _>>()
        .map_err(read_err(&dir))?;
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let stat = |(name, entry): &(OsString, std::fs::DirEntry)| {
        entry
            .metadata()
            .map_err(read_err(&dir.join(name)))
            .map(|m| (name.clone(), m))
    };
    let children: Vec<(OsString, Metadata)> = if entries.len() >= PARALLEL_FROM {
        entries.par_iter().map(stat).collect::<Result<_, _>>()?
    } else {
        entries.iter().map(stat).collect::<Result<_, _>>()?
    };
    Ok(Pending {
        dir,
        rel,
        children: children.into_iter(),
    })
}

fn read_err(path: &Path) -> impl Fn(std::io::Error) -> BuildError + '_ {
    move |e| {
        BuildError::input(format!(
            "reading the build context: {}: {e}",
            path.display()
        ))
    }
}

/// `a/b`, or `b` when `a` is empty.
fn join(a: &str, b: &str) -> String {
    match a.is_empty() {
        true => b.to_string(),
        false => format!("{a}/{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order and set of a walkdir walk (what the digest used before).
    fn walkdir_order(root: &Path, src: &str) -> Vec<String> {
        walkdir::WalkDir::new(root.join(src))
            .sort_by_file_name()
            .into_iter()
            .map(|e| super::super::rel_of(root, e.unwrap().path()))
            .collect()
    }

    #[test]
    fn scan_meets_entries_in_walkdirs_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["t/b", "t/a/z", "t/a/y", "t/B", "t/a.d"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for i in 0..40 {
            std::fs::write(root.join(format!("t/a/f{i:02}")), b"x").unwrap();
        }
        for f in ["t/b/1", "t/a/z/2", "t/a-", "t/a.d/3", "t/zz"] {
            std::fs::write(root.join(f), b"y").unwrap();
        }
        std::os::unix::fs::symlink("a", root.join("t/link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("t/a/dangling")).unwrap();
        for src in ["t", "", "t/a", "t/zz", "t/link"] {
            let found: Vec<String> = scan(root, src, &|_| true)
                .unwrap()
                .into_iter()
                .map(|f| f.rel)
                .collect();
            assert_eq!(found, walkdir_order(root, src), "source {src:?}");
        }
        let kept = scan(root, "t", &|rel| !rel.starts_with("t/a/")).unwrap();
        assert!(kept.iter().all(|f| !f.rel.starts_with("t/a/")));
        assert!(kept.iter().any(|f| f.rel == "t/b/1"), "other dirs are kept");
        let link = kept.iter().find(|f| f.rel == "t/link").unwrap();
        assert!(link.meta.file_type().is_symlink(), "lstat, not stat");
    }

    #[test]
    fn a_missing_source_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = scan(dir.path(), "nope", &|_| true).err().unwrap();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
