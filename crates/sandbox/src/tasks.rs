//! Filesystem tasks done as root of a user namespace (see [`crate::Task`]).
//!
//! Rootless, files the sandbox created for container IDs other than 0 belong
//! to the caller's subordinate IDs: the caller cannot read, change or delete
//! them from outside. Inside a user namespace with the same mapping it is
//! their root and can, and it sees their owners as container IDs, so the
//! layer code runs with the identity mapping there. As real root the mapping
//! is the identity and the same code runs.

use crate::protocol::Task;
use cairn_layer::{
    extract_layer, write_layer, write_layer_unhashed, Compression, DiffSource, ExtractOptions,
    IdMap, LayerError, LayerOptions, OverlayFlavour, WhiteoutMode,
};
use serde_json::json;
use std::path::Path;

/// Do `task`; the value goes back to the caller as JSON.
pub fn perform(task: Task) -> Result<serde_json::Value, String> {
    match task {
        Task::RemoveTree(path) => remove_tree(&path).map(|()| serde_json::Value::Null),
        Task::RemoveEmpty(paths) => remove_empty(&paths)
            .map(|()| serde_json::Value::Null)
            .map_err(|(path, e)| format!("removing {}: {e}", path.display())),
        Task::TreeDigest(dir) => tree_digest(&dir).map(|tree| json!({ "tree": tree })),
        Task::ExtractLayer {
            blob,
            dest,
            limits,
            tree_digest: want_tree,
        } => {
            // The caller opened the blob and handed it over as stdin.
            let file = std::fs::File::from(
                std::os::fd::AsFd::as_fd(&std::io::stdin())
                    .try_clone_to_owned()
                    .map_err(|e| format!("reading layer blob {}: {e}", blob.display()))?,
            );
            let opts = ExtractOptions {
                whiteout_mode: WhiteoutMode::Overlay(OverlayFlavour::UserXattr),
                id_map: IdMap::identity(),
                // No CAP_MKNOD for real devices inside a user namespace.
                unprivileged: true,
                limits,
            };
            let stats = match extract_layer(
                std::io::BufReader::with_capacity(1 << 20, file),
                &dest,
                &opts,
            ) {
                Ok(stats) => stats,
                // A refused blob is an answer, typed, not a task failure.
                Err(LayerError::Limit(exceeded)) => {
                    return Ok(json!({ "limit_exceeded": exceeded }))
                }
                Err(e) => return Err(format!("extracting {}: {e}", blob.display())),
            };
            let tree = if want_tree {
                Some(tree_digest(&dest)?)
            } else {
                None
            };
            Ok(json!({ "diff_id": stats.diff_id, "notes": stats.notes, "tree": tree }))
        }
        Task::CopyFromLayers {
            layers,
            mountpoint,
            sources,
            dest,
            dest_is_dir,
            owner,
            chmod,
        } => copy_from_layers(
            &layers,
            &mountpoint,
            &sources,
            &dest,
            dest_is_dir,
            owner,
            chmod,
        )
        .map(|()| serde_json::Value::Null),
        Task::WriteLayer {
            upper,
            compression,
            timestamp,
        } => {
            let compression: Compression = compression
                .parse()
                .map_err(|e| format!("compression {compression:?}: {e}"))?;
            let opts = LayerOptions {
                compression,
                timestamp,
                id_map: IdMap::identity(),
                ..LayerOptions::default()
            };
            let source = DiffSource::OverlayUpper {
                upper: &upper,
                flavour: OverlayFlavour::UserXattr,
            };
            let stdout = std::io::stdout().lock();
            // The caller's blob writer hashes the blob as it stores it.
            let info = match write_layer_unhashed(
                source,
                &opts,
                std::io::BufWriter::with_capacity(1 << 20, stdout),
            ) {
                Ok(info) => info,
                // A tree past the depth limit is refused before a byte is
                // written: an answer, typed, as for a refused blob.
                Err(LayerError::Limit(exceeded)) => {
                    return Ok(json!({ "limit_exceeded": exceeded }))
                }
                Err(e) => return Err(format!("writing layer from {}: {e}", upper.display())),
            };
            // Clamped mtimes make the layer's tar differ from the dir's own:
            // its tree digest is taken here, in the task that already walks
            // it, with the files fresh in the page cache.
            let tree = match timestamp {
                Some(_) => Some(tree_digest(&upper)?),
                None => None,
            };
            Ok(json!({
                "diff_id": info.diff_id,
                "size": info.size,
                "uncompressed_size": info.uncompressed_size,
                "media_type": info.media_type,
                "tree": tree,
            }))
        }
    }
}

/// The digest of the deterministic, uncompressed tar of a layer dir in
/// overlay form, read as the namespace sees it (owners as container IDs).
fn tree_digest(dir: &Path) -> Result<cairn_layer::Digest, String> {
    let opts = LayerOptions {
        compression: Compression::None,
        timestamp: None,
        id_map: IdMap::identity(),
        ..LayerOptions::default()
    };
    let source = DiffSource::OverlayUpper {
        upper: dir,
        flavour: OverlayFlavour::UserXattr,
    };
    write_layer(source, &opts, std::io::sink())
        .map(|info| info.diff_id)
        .map_err(|e| format!("re-reading layer dir {}: {e}", dir.display()))
}

/// See [`Task::CopyFromLayers`].
#[allow(clippy::too_many_arguments)]
fn copy_from_layers(
    layers: &[std::path::PathBuf],
    mountpoint: &Path,
    sources: &[String],
    dest: &Path,
    dest_is_dir: bool,
    owner: Option<(u32, u32)>,
    chmod: Option<crate::chmod::Chmod>,
) -> Result<(), String> {
    use crate::fscopy::{resolve_in_root, Copier, CopyOptions, Owners};
    use nix::mount::{mount, MsFlags};
    // A single layer is read as is (skipping its whiteout devices, which
    // have nothing below them to hide); several are stacked read-only.
    let layers = crate::rootfs::unique_layers(layers);
    let (root, skip_whiteouts) = match layers.as_slice() {
        [] => return Err("the source stage is empty (FROM scratch with no layers)".into()),
        [one] => (one.clone(), true),
        many => {
            let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
            mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
                .map_err(|e| format!("making mounts private: {e}"))?;
            let (lower, shared_parent) = crate::rootfs::lowerdir_list(many);
            if let Some(dir) = &shared_parent {
                std::env::set_current_dir(dir)
                    .map_err(|e| format!("entering {}: {e}", dir.display()))?;
            }
            let opts = format!("lowerdir={lower},userxattr");
            mount(
                Some("overlay"),
                mountpoint,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(opts.as_str()),
            )
            .map_err(|e| format!("mounting the source stage at {}: {e}", mountpoint.display()))?;
            (mountpoint.to_path_buf(), false)
        }
    };
    let owners = match owner {
        Some((u, g)) => Owners::Set(u, g),
        None => Owners::Keep,
    };
    let mut copier = Copier::new(CopyOptions {
        owners,
        chmod,
        skip_whiteouts,
    });
    for source in sources {
        let from = resolve_in_root(&root, source).map_err(|e| format!("{source}: {e}"))?;
        let meta = std::fs::symlink_metadata(&from)
            .map_err(|_| format!("{source}: not found in the source stage"))?;
        if meta.is_dir() {
            if !dest.is_dir() {
                std::fs::create_dir_all(dest)
                    .map_err(|e| format!("creating {}: {e}", dest.display()))?;
                if let Some((u, g)) = owner {
                    std::os::unix::fs::lchown(dest, Some(u), Some(g))
                        .map_err(|e| format!("chown {}: {e}", dest.display()))?;
                }
            }
            copier
                .copy_contents(&from, dest)
                .map_err(|e| e.to_string())?;
        } else {
            let to = match (dest_is_dir, from.file_name()) {
                (true, Some(name)) => dest.join(name),
                _ => dest.to_path_buf(),
            };
            copier.copy(&from, &to).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Remove `path` and everything below it: a loop holding at most 64
/// descriptors ([`cairn_layer::remove_all_at`]), so a tree deeper than
/// the caller's descriptor limit (std's `remove_dir_all` holds one per
/// level) or than PATH_MAX goes too.
fn remove_tree(path: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("removing {}: {e}", path.display());
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(err(std::io::ErrorKind::InvalidInput.into()));
    };
    let flags = nix::libc::O_PATH | nix::libc::O_DIRECTORY;
    let dir = match cairn_layer::sys::open_long_path(parent, flags) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    cairn_layer::remove_all_at(dir.as_fd(), name.as_bytes()).map_err(err)
}

/// Remove each of `paths`, in order, that is an empty directory or an empty
/// regular file; anything else (gone, non-empty, another type) is left. The
/// first failure names its path.
pub fn remove_empty(
    paths: &[std::path::PathBuf],
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        let removed = if meta.is_dir() {
            match std::fs::remove_dir(path) {
                // Not empty: the run put something there; it stays.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOTEMPTY) => Ok(()),
                other => other,
            }
        } else if meta.is_file() && meta.len() == 0 {
            std::fs::remove_file(path)
        } else {
            Ok(())
        };
        removed.map_err(|e| (path.clone(), e))?;
    }
    Ok(())
}
