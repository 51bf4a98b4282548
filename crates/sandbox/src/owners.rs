//! Host owners of the dirs a sandbox writes, under real root's shifted
//! mapping.
//!
//! Rootless, container root is the caller, so dirs the caller makes are
//! container root's. As real root with a subordinate range, container root
//! is an unprivileged host ID: the dirs a sandbox must write (overlay upper
//! and work dirs, cache mounts) are handed to it, and the store's extracted
//! layer dirs, whose owners are host IDs of the mapping they were extracted
//! under, are only reused under that same mapping.

use crate::idmap::IdMapping;
use cairn_store::Store;
use std::path::Path;

/// Make `path` container root's when the caller is real root, the mapping
/// is not the identity (otherwise it already is) and `path` is still host
/// root's, i.e. made by the caller and given no container owner yet (host
/// root is nobody in the sandbox, so nothing owned by it is meant for it).
pub fn give_to_container_root(mapping: &IdMapping, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if mapping.is_identity() || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let (Some(uid), Some(gid)) = (mapping.host_uid(0), mapping.host_gid(0)) else {
        return Ok(());
    };
    if std::fs::symlink_metadata(path)?.uid() != 0 {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Name of the marker, at the store's root, that says which mapping the
/// extracted layer dirs were made under.
const MARKER: &str = "layers.idmap";

/// Make sure the store's extracted layer dirs were made under `mapping`.
/// A store without a marker was made by an older Cairn: under the identity
/// when real root, under the caller's range otherwise. Layer dirs of another
/// mapping are removed (they are re-extracted from their blobs on demand),
/// so that files owned by host root are never shown to a shifted sandbox
/// (where they would be nobody's) and shifted owners never leak into an
/// identity one.
pub fn adopt_layer_dirs(store: &Store, mapping: &IdMapping) -> std::io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(()); // rootless mappings never changed
    }
    let_container_root_through(store, mapping)?;
    let marker = store.layout().root().join(MARKER);
    let key = mapping.key();
    let recorded = match std::fs::read_to_string(&marker) {
        Ok(text) => text.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "identity".to_string(),
        Err(e) => return Err(e),
    };
    if recorded == key {
        if !marker.exists() {
            std::fs::write(&marker, format!("{key}\n"))?;
        }
        return Ok(());
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&marker)?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    let now = std::fs::read_to_string(&marker)?;
    if now.trim() == key {
        return Ok(()); // another process switched it while we waited
    }
    let layers = store.layout().layers();
    if let Ok(entries) = std::fs::read_dir(&layers) {
        for entry in entries.flatten() {
            tracing::info!(
                "removing layer dir {} made under another ID mapping",
                entry.path().display()
            );
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    std::fs::write(&marker, format!("{key}\n"))
}

/// The store dirs a shifted sandbox must walk through to reach its layer,
/// upper, work and cache-mount dirs.
const SHARED_DIRS: [&str; 4] = ["layers", "tmp", "sandboxes", "cache-mounts"];

/// Under real root's shifted mapping, let container root search (not list,
/// not write) the store's private dirs: group = container root's host gid,
/// mode 0710. The store keeps them 0700 otherwise; no other local user is in
/// that group (it is a subordinate ID), so they stay unreachable to them,
/// while overlay's lowerdir lookups and the helper's tasks, which run with
/// container root's credentials, can reach the dirs handed to it.
fn let_container_root_through(store: &Store, mapping: &IdMapping) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(gid) = mapping.host_gid(0).filter(|_| !mapping.is_identity()) else {
        return Ok(());
    };
    let root = store.layout().root();
    let dirs = std::iter::once(root.to_path_buf()).chain(SHARED_DIRS.iter().map(|d| root.join(d)));
    for dir in dirs {
        let meta = match std::fs::metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.uid() != 0 {
            continue; // not the caller's: whoever made it decides
        }
        if meta.gid() != gid {
            std::os::unix::fs::chown(&dir, None, Some(gid))?;
        }
        if meta.permissions().mode() & 0o777 != 0o710 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710))?;
        }
    }
    Ok(())
}
