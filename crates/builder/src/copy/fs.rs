//! Small file-system helpers of COPY: parent dirs made as the image has them, modes, owners,
//! times, and path joins of image paths.

use super::tar_writer::TreeWriter;
use crate::view::LayerView;
use crate::{BuildError, Builder};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Create `dir` and its parents in the writer's tree: dirs the image has
/// keep its mode, owner and time; new ones are 0755, owned by the --chown
/// user (as buildah does) or root. Without a `view` (`--link`: BuildKit
/// copies onto an empty tree) every dir is new and replaces the base's.
pub(crate) fn make_parents(
    builder: &Builder,
    view: Option<&LayerView>,
    writer: &mut TreeWriter,
    dir: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), BuildError> {
    let mut rel = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        rel = join(&rel, part);
        let path = writer.root.join(&rel);
        if path.is_dir() {
            continue;
        }
        writer.create_dir(&path)?;
        match view.and_then(|v| v.lookup(&rel)) {
            Some(f) if f.meta.is_dir() => {
                let m = f.meta;
                set_perm(&path, m.mode() & 0o7777)?;
                let uid = builder.mapping.container_uid(m.uid()).unwrap_or(0);
                let gid = builder.mapping.container_gid(m.gid()).unwrap_or(0);
                writer.set_owner(&rel, (uid, gid))?;
                set_times(&path, m.mtime(), m.mtime_nsec())?;
            }
            _ => {
                set_perm(&path, 0o755)?;
                writer.set_owner(&rel, owner.unwrap_or((0, 0)))?;
            }
        }
    }
    Ok(())
}

pub(super) fn set_perm(path: &Path, mode: u32) -> Result<(), BuildError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(BuildError::io(path))
}

pub(super) fn lchown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), BuildError> {
    match owner {
        Some((u, g)) => {
            std::os::unix::fs::lchown(path, Some(u), Some(g)).map_err(BuildError::io(path))
        }
        None => Ok(()),
    }
}

pub(super) fn set_times(path: &Path, secs: i64, nanos: i64) -> Result<(), BuildError> {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
    let f = std::fs::File::options().read(true).open(path);
    match f {
        Ok(f) => f.set_modified(t).map_err(BuildError::io(path)),
        Err(_) => Ok(()), // unreadable (chmod 000): keep the copy's time
    }
}

pub(super) fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

pub(super) fn parent(path: &str) -> String {
    path.rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}
