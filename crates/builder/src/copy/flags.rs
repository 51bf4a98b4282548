//! The COPY/ADD flags that change what is selected and where it lands:
//! `--exclude`, `--parents` (with rsync's `/./` pivot), `--link`, and
//! wildcards in `COPY --from` sources, which need a listing of the source
//! stage's filesystem read through its layer dirs.
//!
//! `COPY --from` copies in a task that mounts the source stage's layers as
//! a read-only overlay. To leave paths out of that copy (`--exclude`, and
//! everything `--parents` did not select), a *mask* layer is stacked on top:
//! whiteouts for those paths, and the dirs holding them with the metadata
//! the stage gives them (overlay shows the topmost dir's mode, owner and
//! time, and the copy keeps them). One task then copies what is left.

use crate::context::clean;
use crate::view::LayerView;
use crate::BuildError;
use crate::Builder;
use cairn_dockerfile::ignore::DockerIgnore;
use cairn_dockerfile::typed::Files;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `--exclude`, `--parents` and `--link` of one COPY/ADD.
#[derive(Clone)]
pub(crate) struct CopyFlags {
    /// The `--exclude` patterns, dockerignore syntax, when any.
    exclude: Option<DockerIgnore>,
    /// The patterns as expanded, for the cache key.
    exclude_text: Vec<String>,
    pub parents: bool,
    pub link: bool,
}

impl CopyFlags {
    /// Read the typed flags of a COPY/ADD (`parents` is COPY's alone);
    /// `--exclude` values are expanded like sources.
    pub fn of(
        files: &Files,
        parents: bool,
        expand: &dyn Fn(&str) -> Result<String, BuildError>,
        at: &dyn Fn(String) -> BuildError,
    ) -> Result<Self, BuildError> {
        let exclude_text: Vec<String> = files
            .exclude
            .iter()
            .map(|p| expand(p))
            .collect::<Result<_, _>>()?;
        let exclude = if exclude_text.is_empty() {
            None
        } else {
            Some(
                DockerIgnore::from_patterns(&exclude_text)
                    .map_err(|e| at(format!("--exclude: {e}")))?,
            )
        };
        Ok(CopyFlags {
            exclude,
            exclude_text,
            parents,
            link: files.link,
        })
    }

    pub fn has_exclude(&self) -> bool {
        self.exclude.is_some()
    }

    /// `rel`, relative to the root of one copy (a directory source, or the
    /// `--parents` pivot), is left out.
    pub fn excludes(&self, rel: &str) -> bool {
        self.exclude.as_ref().is_some_and(|e| e.is_excluded(rel))
    }

    /// The directory `rel` is left out and nothing below can come back.
    pub fn can_skip(&self, rel: &str) -> bool {
        self.exclude.as_ref().is_some_and(|e| e.can_skip_dir(rel))
    }

    /// A source named by the instruction (or matched by its wildcard) is
    /// left out when a pattern matches its name or its path from the root
    /// of the context or stage (`--exclude=*.txt hom*` drops `home.txt`).
    pub fn excludes_source(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.excludes(name) || self.excludes(path)
    }

    /// What these flags add to the cache key.
    pub fn key_part(&self) -> String {
        format!(
            "exclude={:?}:parents={}:link={}",
            self.exclude_text, self.parents, self.link
        )
    }
}

/// A source word under `--parents`: (pivot, cleaned path). The pivot is what
/// comes before the first `/./` (rsync's `--relative` marker), else the root;
/// only the parents after it are kept.
pub(crate) fn split_pivot(word: &str) -> (String, String) {
    let mut body = word.trim_start_matches('/');
    while let Some(rest) = body.strip_prefix("./") {
        body = rest.trim_start_matches('/');
    }
    match body.find("/./") {
        Some(i) => (clean(&body[..i]), clean(body)),
        None => (String::new(), clean(body)),
    }
}

/// Where a source at `rel` goes below the destination under `--parents`:
/// its path after the pivot (`None` when it is not below the pivot).
pub(crate) fn place_under(pivot: &str, rel: &str) -> Option<String> {
    if pivot.is_empty() {
        return Some(rel.to_string());
    }
    if rel == pivot {
        return Some(String::new());
    }
    rel.strip_prefix(pivot)
        .and_then(|r| r.strip_prefix('/'))
        .map(String::from)
}

pub(crate) fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// A stage's filesystem as its layer dirs show it, with directory listings
/// (what [`LayerView`] shows, entry by entry).
pub(crate) struct StageTree<'a> {
    view: &'a LayerView,
}

impl<'a> StageTree<'a> {
    pub fn new(view: &'a LayerView) -> Self {
        StageTree { view }
    }

    /// The entries of dir `rel` in the view, sorted by name: the names any
    /// layer has there, each kept if the view shows it (so whiteouts,
    /// opaque dirs and files hiding dirs hold). Rootless, a dir of another
    /// container user that others may not read cannot be listed: that is an
    /// error, never a silently short listing.
    pub fn list(&self, rel: &str) -> Result<Vec<(String, std::fs::Metadata)>, BuildError> {
        let mut names = BTreeSet::new();
        for layer in self.view.layers() {
            let dir = layer.join(rel);
            // Never through a symlink: the view resolves links itself.
            if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let unreadable = |e: std::io::Error| {
                BuildError::input(format!(
                    "COPY --from: cannot list /{rel} of the source stage as this user ({e}); \
                     wildcards, --exclude and --parents need to read it (rootless, a \
                     directory of another container user must be readable by others)"
                ))
            };
            for entry in std::fs::read_dir(&dir).map_err(unreadable)? {
                let entry = entry.map_err(unreadable)?;
                names.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names
            .into_iter()
            .filter_map(|name| {
                let found = self.view.lookup(&join(rel, &name))?;
                Some((name, found.meta))
            })
            .collect())
    }

    /// The paths matching `pattern` (cleaned, relative to the root), with
    /// the context's wildcard rules (filepath.Match per component, `**`);
    /// a matched dir is not searched further. Sorted.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>, BuildError> {
        let bad = |e: cairn_dockerfile::ignore::IgnoreError| {
            BuildError::input(format!("COPY --from source {pattern:?}: {e}"))
        };
        let parts: Vec<&str> = pattern.split('/').collect();
        let literal = parts.iter().take_while(|p| !has_wildcard(p)).count();
        let globstar = parts.iter().any(|p| p.contains("**"));
        // One matcher per depth: a dir at depth d is worth entering only if
        // it matches the pattern's first d components.
        let prefixes: Vec<DockerIgnore> = (1..=parts.len())
            .map(|d| DockerIgnore::from_patterns([parts[..d].join("/")]))
            .collect::<Result<_, _>>()
            .map_err(bad)?;
        let base = parts[..literal.min(parts.len())].join("/");
        let mut found = Vec::new();
        if self.view.lookup(&base).is_some_and(|f| f.meta.is_dir()) {
            let depth = if base.is_empty() { 0 } else { literal };
            self.glob_in(&base, depth, &prefixes, globstar, &mut found)?;
        }
        Ok(found)
    }

    fn glob_in(
        &self,
        dir: &str,
        depth: usize,
        prefixes: &[DockerIgnore],
        globstar: bool,
        found: &mut Vec<String>,
    ) -> Result<(), BuildError> {
        let Some(whole) = prefixes.last() else {
            return Ok(());
        };
        for (name, meta) in self.list(dir)? {
            let child = join(dir, &name);
            if whole.is_excluded(&child) {
                found.push(child);
                continue;
            }
            let enter = meta.is_dir()
                && (globstar
                    || prefixes
                        .get(depth)
                        .is_some_and(|m| depth + 1 < prefixes.len() && m.is_excluded(&child)));
            if enter {
                self.glob_in(&child, depth + 1, prefixes, globstar, found)?;
            }
        }
        Ok(())
    }

    /// Collect into `out` what `--exclude` leaves out below dir `dir`, paths
    /// tested relative to `base` (the copy's root). An excluded dir that an
    /// exception may reach into is searched instead of dropped whole.
    pub fn excluded_below(
        &self,
        dir: &str,
        base: &str,
        flags: &CopyFlags,
        out: &mut Vec<String>,
    ) -> Result<(), BuildError> {
        for (name, meta) in self.list(dir)? {
            let child = join(dir, &name);
            let rel = relative(base, &child);
            if flags.excludes(&rel) && (!meta.is_dir() || flags.can_skip(&rel)) {
                out.push(child);
            } else if meta.is_dir() {
                self.excluded_below(&child, base, flags, out)?;
            }
        }
        Ok(())
    }

    /// Collect into `out` every entry below `dir` that is neither one of
    /// `selected` nor inside one nor on the way to one (`--parents`: only
    /// the selected paths and their parents are copied).
    pub fn hide_unselected(
        &self,
        dir: &str,
        selected: &BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), BuildError> {
        for (name, _) in self.list(dir)? {
            let child = join(dir, &name);
            if selected.contains(&child) {
                continue;
            }
            let prefix = format!("{child}/");
            if selected.iter().any(|s| s.starts_with(&prefix)) {
                self.hide_unselected(&child, selected, out)?;
            } else {
                out.push(child);
            }
        }
        Ok(())
    }
}

/// Write the mask layer hiding `whiteouts` (paths relative to the stage
/// root) as `dir/mask<index>` and return it. Built as a tar extracted by a
/// task, so its dirs get the stage's owners even rootless.
pub(crate) fn write_mask(
    builder: &Builder,
    view: &LayerView,
    whiteouts: &[String],
    dir: &Path,
    index: usize,
) -> Result<PathBuf, BuildError> {
    let hidden = outermost(whiteouts);
    let mut dirs = BTreeSet::new();
    for path in &hidden {
        let mut parent = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent = join(&parent, part);
            dirs.insert(parent.clone());
        }
    }
    let tar_path = dir.join(format!("mask{index}.tar"));
    let file = std::fs::File::create(&tar_path).map_err(BuildError::io(&tar_path))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let io = |e| BuildError::io(&tar_path)(e);
    // Parents sort before their children, so each dir precedes its entries.
    for rel in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        match view.lookup(rel) {
            Some(found) => {
                let m = found.meta;
                header.set_mode(m.mode() & 0o7777);
                header.set_uid(builder.mapping.container_uid(m.uid()).unwrap_or(0).into());
                header.set_gid(builder.mapping.container_gid(m.gid()).unwrap_or(0).into());
                header.set_mtime(m.mtime().max(0) as u64);
            }
            None => header.set_mode(0o755),
        }
        tar.append_data(&mut header, format!("{rel}/"), std::io::empty())
            .map_err(io)?;
    }
    for rel in &hidden {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_mode(0o644);
        tar.append_data(
            &mut header,
            join(parent, &format!(".wh.{name}")),
            std::io::empty(),
        )
        .map_err(io)?;
    }
    tar.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(BuildError::io(&tar_path))?;
    let mask = dir.join(format!("mask{index}"));
    std::fs::create_dir_all(&mask).map_err(BuildError::io(&mask))?;
    // Our own tar of whiteouts: no caps needed.
    let limits = cairn_layer::ExtractLimits::unlimited();
    let what = tar_path.display().to_string();
    builder.tasks.extract_tar(&tar_path, &mask, limits, &what)?;
    Ok(mask)
}

/// The paths sorted, without those inside another one (a hidden dir hides
/// them already, and a dir cannot be both hidden and a parent in the mask).
fn outermost(paths: &[String]) -> Vec<String> {
    let sorted: BTreeSet<&String> = paths.iter().filter(|p| !p.is_empty()).collect();
    let mut kept: Vec<String> = Vec::new();
    for path in sorted {
        let inside = kept
            .iter()
            .any(|k| path.starts_with(k.as_str()) && path.as_bytes().get(k.len()) == Some(&b'/'));
        if !inside {
            kept.push(path.clone());
        }
    }
    kept
}

/// `path` relative to `base` (both relative to the same root).
pub(crate) fn relative(base: &str, path: &str) -> String {
    place_under(base, path).unwrap_or_else(|| path.to_string())
}

pub(crate) fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}/{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pivots() {
        assert_eq!(split_pivot("./x/./y/f"), ("x".into(), "x/y/f".into()));
        assert_eq!(
            split_pivot("/a/b/./c/*.txt"),
            ("a/b".into(), "a/b/c/*.txt".into())
        );
        assert_eq!(split_pivot("./x/y"), (String::new(), "x/y".into()));
        assert_eq!(split_pivot("x/y/."), (String::new(), "x/y".into()));
        assert_eq!(place_under("x", "x/y/f").as_deref(), Some("y/f"));
        assert_eq!(place_under("x", "xy/f"), None);
        assert_eq!(place_under("", "a/b").as_deref(), Some("a/b"));
    }

    #[test]
    fn outermost_drops_nested_paths() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            outermost(&p(&["a/b", "a", "ab", "c/d", "c/d/e"])),
            p(&["a", "ab", "c/d"])
        );
    }
}
