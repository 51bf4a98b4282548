//! Copying files the way COPY does: type, mode, mtime, symlinks as links,
//! hard links as links, owners kept or set. Used by builds for context files
//! (in the caller) and for `COPY --from` (in a task, as root of a user
//! namespace, where owners of subordinate IDs can be read and set).

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Whose files the copies are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Whoever creates them (the caller: container root in a sandbox).
    Creator,
    /// The source's owners (`COPY --from`).
    Keep,
    /// This uid:gid (`--chown`).
    Set(u32, u32),
}

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub owners: Owners,
    /// Mode for copied files and dirs (`--chmod`); their own mode otherwise.
    pub chmod: Option<crate::chmod::Chmod>,
    /// Skip 0:0 character devices (overlay whiteouts in a raw layer dir).
    pub skip_whiteouts: bool,
}

fn ctx<'a>(what: &str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    let what = what.to_string();
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Copies entries, remembering hard links among the sources.
pub struct Copier {
    opts: CopyOptions,
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier {
    pub fn new(opts: CopyOptions) -> Self {
        Copier {
            opts,
            links: HashMap::new(),
        }
    }

    /// Copy the contents of dir `from` into dir `to` (which must exist).
    pub fn copy_contents(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(from)
            .map_err(ctx("reading", from))?
            .collect::<Result<_, _>>()
            .map_err(ctx("reading", from))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let src = entry.path();
            let dst = to.join(entry.file_name());
            self.copy(&src, &dst)?;
        }
        Ok(())
    }

    /// Copy `from` (file, symlink, or dir with everything below it) to `to`.
    pub fn copy(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(from).map_err(ctx("reading", from))?;
        let ft = meta.file_type();
        if self.opts.skip_whiteouts && ft.is_char_device() && meta.rdev() == 0 {
            return Ok(());
        }
        match std::fs::symlink_metadata(to) {
            Ok(existing) if existing.is_dir() && ft.is_dir() => {}
            Ok(existing) if existing.is_dir() => {
                std::fs::remove_dir_all(to).map_err(ctx("replacing", to))?
            }
            Ok(_) => std::fs::remove_file(to).map_err(ctx("replacing", to))?,
            Err(_) => {}
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(from).map_err(ctx("reading", from))?;
            std::os::unix::fs::symlink(&target, to).map_err(ctx("creating", to))?;
            self.set_owner(to, &meta)?;
            return set_times(to, &meta);
        }
        if ft.is_dir() {
            if !to.is_dir() {
                std::fs::create_dir(to).map_err(ctx("creating", to))?;
            }
            self.copy_contents(from, to)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    return std::fs::hard_link(first, to).map_err(ctx("linking", to));
                }
                self.links
                    .insert((meta.dev(), meta.ino()), to.to_path_buf());
            }
            std::fs::copy(from, to).map_err(ctx("copying to", to))?;
        } else {
            return Ok(()); // sockets, fifos and devices are not copied
        }
        self.set_owner(to, &meta)?;
        let mode = match &self.opts.chmod {
            Some(chmod) => chmod.apply(meta.mode(), ft.is_dir()),
            None => meta.mode() & 0o7777,
        };
        // After chown: chown clears setuid/setgid bits.
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
            .map_err(ctx("chmod", to))?;
        set_times(to, &meta)
    }

    fn set_owner(&self, path: &Path, source: &std::fs::Metadata) -> io::Result<()> {
        let (uid, gid) = match self.opts.owners {
            Owners::Creator => return Ok(()),
            Owners::Keep => (source.uid(), source.gid()),
            Owners::Set(u, g) => (u, g),
        };
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(ctx("chown", path))
    }
}

fn set_times(path: &Path, source: &std::fs::Metadata) -> io::Result<()> {
    let mtime = TimeSpec::new(source.mtime(), source.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &mtime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
    .map_err(ctx("setting times of", path))
}

/// Resolve `rel` inside `root` as a chroot would: symlinks (absolute or
/// relative) are followed within `root`, and `..` never climbs above it. A
/// symlink in the last component is left as it is.
pub fn resolve_in_root(root: &Path, rel: &str) -> io::Result<PathBuf> {
    resolve_within(root, rel, false)
}

/// [`resolve_in_root`], following a symlink in the last component too (the
/// path a mount or an open inside the chroot would reach).
pub fn resolve_all_in_root(root: &Path, rel: &str) -> io::Result<PathBuf> {
    resolve_within(root, rel, true)
}

fn resolve_within(root: &Path, rel: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<String> = rel.split('/').rev().map(String::from).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !pending.is_empty()) => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!(
                        "too many symlinks resolving {rel}"
                    )));
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    if let Component::Normal(n) = c {
                        pending.push(n.to_string_lossy().into_owned());
                    } else if c == Component::ParentDir {
                        pending.push("..".into());
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_stays_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc", root.join("usr/escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/lib/x").unwrap(),
            root.join("usr/lib/x")
        );
        assert_eq!(
            resolve_in_root(root, "usr/escape/passwd").unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(root, "../../x").unwrap(), root.join("x"));
        std::os::unix::fs::symlink("/../../tmp/host-file", root.join("usr/last")).unwrap();
        assert_eq!(
            resolve_all_in_root(root, "/usr/last").unwrap(),
            root.join("tmp/host-file")
        );
        assert_eq!(
            resolve_in_root(root, "/usr/last").unwrap(),
            root.join("usr/last")
        );
    }

    #[test]
    fn copies_keep_modes_times_links() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), "x").unwrap();
        std::fs::set_permissions(src.join("d/f"), std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::hard_link(src.join("d/f"), src.join("d/g")).unwrap();
        std::os::unix::fs::symlink("f", src.join("d/l")).unwrap();
        let dst = tmp.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        let opts = CopyOptions {
            owners: Owners::Creator,
            chmod: None,
            skip_whiteouts: false,
        };
        Copier::new(opts).copy_contents(&src, &dst).unwrap();
        let f = std::fs::metadata(dst.join("d/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o751);
        assert_eq!(
            f.ino(),
            std::fs::metadata(dst.join("d/g")).unwrap().ino(),
            "hard link lost"
        );
        assert_eq!(std::fs::read_link(dst.join("d/l")).unwrap(), Path::new("f"));
        assert_eq!(
            f.mtime(),
            std::fs::metadata(src.join("d/f")).unwrap().mtime()
        );
    }
}
