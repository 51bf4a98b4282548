//! The build context of a Dockerfile snapshot, as the seed CLI defines it:
//! the files and dirs given with `--context`, or, when none are given, the
//! sources the Dockerfile's COPY/ADD instructions read. They are copied into
//! a private dir that becomes the build context, at their paths relative to
//! the Dockerfile's directory (a path outside it goes in at its base name).

use crate::repo::SnapshotError;
use std::path::{Component, Path, PathBuf};

type Result<T> = std::result::Result<T, SnapshotError>;

fn invalid(msg: String) -> SnapshotError {
    SnapshotError::Invalid(msg)
}

/// The COPY/ADD sources of a Dockerfile (no `--from`, no URLs), as written,
/// cut at the first wildcard so a glob brings in its whole parent dir.
pub fn copy_sources(dockerfile_text: &str, file: &str) -> Result<Vec<String>> {
    // As the build reads it: a quoting error waits for the stage built.
    let doc = cairn_dockerfile::parse_deferring_quotes(dockerfile_text)
        .map_err(|e| invalid(format!("{file}:{e}")))?;
    let mut out = Vec::new();
    for stage in &doc.stages {
        for ins in &stage.instructions {
            let name = ins.name.to_ascii_lowercase();
            if (name != "copy" && name != "add")
                || ins.flags.contains_key("from")
                || !ins.heredocs.is_empty()
            {
                continue;
            }
            let n = ins.args.len();
            for src in ins.args.iter().take(n.saturating_sub(1)) {
                if src.contains("://") || src.starts_with("git@") {
                    continue;
                }
                let cut = src
                    .find(['*', '?', '['])
                    .map_or(src.as_str(), |i| &src[..i]);
                let cut = match cut.rfind('/') {
                    Some(i) if cut.len() != src.len() => &cut[..i],
                    None if cut.len() != src.len() => ".",
                    _ => cut,
                };
                out.push(cut.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Copy the context of `dockerfile` into `dest`; returns the paths taken.
pub fn assemble(
    dockerfile: &Path,
    text: &str,
    contexts: &[PathBuf],
    dest: &Path,
) -> Result<Vec<PathBuf>> {
    let root = dockerfile
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let root = root
        .canonicalize()
        .map_err(|e| invalid(format!("{}: {e}", root.display())))?;
    let mut taken = Vec::new();
    if contexts.is_empty() {
        // The Dockerfile's own sources are tenant input: each resolves inside
        // the Dockerfile's dir exactly as the build will resolve it.
        for src in copy_sources(text, &dockerfile.display().to_string())? {
            taken.push(take_derived(&root, &src, dest)?);
        }
    }
    for src in contexts {
        let abs = src
            .canonicalize()
            .map_err(|e| invalid(format!("build context {}: {e}", src.display())))?;
        let rel = match abs.strip_prefix(&root) {
            Ok(r) if r.as_os_str().is_empty() => PathBuf::from("."),
            Ok(r) => r.to_path_buf(),
            Err(_) => PathBuf::from(abs.file_name().unwrap_or(abs.as_os_str())),
        };
        if rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(invalid(format!(
                "build context {} escapes its root",
                src.display()
            )));
        }
        copy_tree(&abs, &dest.join(&rel))?;
        taken.push(abs);
    }
    // A .dockerignore next to the Dockerfile still applies.
    let ignore = root.join(".dockerignore");
    if ignore.is_file() && !dest.join(".dockerignore").exists() {
        std::fs::copy(&ignore, dest.join(".dockerignore"))
            .map_err(|e| invalid(format!("{}: {e}", ignore.display())))?;
    }
    Ok(taken)
}

/// Copy derived source `src` (as the Dockerfile writes it) from `root` into
/// `dest`: the path it reaches inside `root` (the context resolver's rule:
/// `..` clamps, symlinks resolve in the root), and the symlinks crossed on
/// the way, as links, so the build resolves the same path the same way.
fn take_derived(root: &Path, src: &str, dest: &Path) -> Result<PathBuf> {
    use cairn_builder::context::resolve;
    let found = resolve::resolve(root, src, true)
        .map_err(|e| invalid(format!("build context {src:?}: {e}")))?;
    let reached = root.join(&found.rel);
    if std::fs::symlink_metadata(&reached).is_err() {
        return Err(invalid(format!(
            "build context {src:?}: not found in {}",
            root.display()
        )));
    }
    for link in &found.links {
        let to = dest.join(link);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| invalid(format!("copying build context {link}: {e}")))?;
        }
        let target = std::fs::read_link(root.join(link))
            .map_err(|e| invalid(format!("reading build context link {link}: {e}")))?;
        if std::fs::symlink_metadata(&to).is_err() {
            std::os::unix::fs::symlink(target, &to)
                .map_err(|e| invalid(format!("copying build context {link}: {e}")))?;
        }
    }
    copy_tree(&reached, &dest.join(&found.rel))?;
    Ok(reached)
}

/// `cp -a` of a file or a tree (modes and symlinks kept; owners are the
/// caller's, as for any build context).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| invalid(format!("copying build context {}: {e}", p.display()))
    };
    let walk = walkdir::WalkDir::new(from)
        .follow_links(false)
        .follow_root_links(false);
    for entry in walk {
        let entry =
            entry.map_err(|e| invalid(format!("reading build context {}: {e}", from.display())))?;
        let rel = entry.path().strip_prefix(from).unwrap_or(Path::new(""));
        let target = if rel.as_os_str().is_empty() {
            to.to_path_buf()
        } else {
            to.join(rel)
        };
        let ft = entry.file_type();
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        if ft.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
            let mode = entry
                .metadata()
                .map_err(|e| invalid(e.to_string()))?
                .permissions();
            std::fs::set_permissions(&target, mode).map_err(io(&target))?;
        } else if ft.is_symlink() {
            let link = std::fs::read_link(entry.path()).map_err(io(entry.path()))?;
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(link, &target).map_err(io(&target))?;
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &target).map_err(io(entry.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_of_copy_and_add() {
        let text = "FROM busybox\nCOPY a.txt dir/ /dst/\nADD --chown=1 https://x/y /z\nCOPY --from=build /out /out\nCOPY src/*.py lib/\nCOPY *.sh /bin/\nRUN true\n";
        assert_eq!(
            copy_sources(text, "Dockerfile").unwrap(),
            [".", "a.txt", "dir/", "src"]
        );
    }

    #[test]
    fn assembles_given_and_derived_contexts() {
        let t = tempfile::tempdir().unwrap();
        let proj = t.path().join("proj");
        std::fs::create_dir_all(proj.join("app/sub")).unwrap();
        std::fs::write(proj.join("app/sub/f.txt"), "f").unwrap();
        std::fs::write(proj.join("other.txt"), "o").unwrap();
        std::fs::write(proj.join("Dockerfile"), "FROM x\nCOPY app /app\n").unwrap();
        let text = std::fs::read_to_string(proj.join("Dockerfile")).unwrap();
        let derived = t.path().join("derived");
        assemble(&proj.join("Dockerfile"), &text, &[], &derived).unwrap();
        assert!(derived.join("app/sub/f.txt").is_file());
        assert!(!derived.join("other.txt").exists());
        let given = t.path().join("given");
        assemble(
            &proj.join("Dockerfile"),
            &text,
            &[proj.join("other.txt")],
            &given,
        )
        .unwrap();
        assert!(given.join("other.txt").is_file());
        assert!(!given.join("app").exists());
        let err = assemble(
            &proj.join("Dockerfile"),
            &text,
            &[proj.join("missing")],
            &t.path().join("x"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn derived_sources_resolve_inside_the_dockerfile_dir() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host-only");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("secret.txt"), "HOST").unwrap();
        let proj = t.path().join("proj");
        std::fs::create_dir_all(&proj).unwrap();
        std::os::unix::fs::symlink("/", proj.join("h")).unwrap();
        let host_rel = host.to_str().unwrap().trim_start_matches('/').to_string();
        let text = format!("FROM x\nCOPY h/{host_rel}/secret.txt /p\n");
        std::fs::write(proj.join("Dockerfile"), &text).unwrap();
        // Not in the Dockerfile's dir: refused, the host file is not taken.
        let err = assemble(&proj.join("Dockerfile"), &text, &[], &t.path().join("a"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
        assert!(!t.path().join("a/secret.txt").exists());
        // In it: that copy is taken, with the link, as the build will read it.
        let inside = proj.join(&host_rel);
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("secret.txt"), "CONTEXT").unwrap();
        let dest = t.path().join("b");
        assemble(&proj.join("Dockerfile"), &text, &[], &dest).unwrap();
        let got = std::fs::read_to_string(dest.join(&host_rel).join("secret.txt")).unwrap();
        assert_eq!(got, "CONTEXT");
        assert_eq!(std::fs::read_link(dest.join("h")).unwrap(), Path::new("/"));
        let base = walkdir::WalkDir::new(&dest).follow_links(false);
        for e in base {
            let e = e.unwrap();
            if e.file_type().is_file() {
                assert_ne!(std::fs::read_to_string(e.path()).unwrap(), "HOST");
            }
        }
    }
}
