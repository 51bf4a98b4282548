//! A stage's filesystem as its extracted layer dirs show it, read without
//! mounting: the topmost layer's entry wins, whiteout devices (0:0 char
//! devices) hide what is below, an opaque dir (`user.overlay.opaque=y`)
//! hides the lower layers' contents, and a non-dir hides everything below
//! its path. Symlinks resolve the way a chroot would.

use crate::state::StageState;
use crate::Builder;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The layer dirs of a stage, topmost first.
pub(crate) struct LayerView {
    layers: Vec<PathBuf>,
}

/// What a path is in the view.
pub(crate) struct Found {
    pub meta: std::fs::Metadata,
    /// The layer dir holding it.
    pub layer: PathBuf,
}

impl LayerView {
    pub fn new(builder: &Builder, state: &StageState) -> Self {
        LayerView {
            layers: builder.layer_dirs(state).into_iter().rev().collect(),
        }
    }

    /// The layer dirs, topmost first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// The entry at `rel` (slash-separated, relative to the root), if any.
    pub fn lookup(&self, rel: &str) -> Option<Found> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            let layer = self.layers.first()?.clone();
            let meta = std::fs::symlink_metadata(&layer).ok()?;
            return Some(Found { meta, layer });
        }
        for layer in &self.layers {
            let mut opaque_above = false;
            let mut path = layer.clone();
            for (i, part) in parts.iter().enumerate() {
                path.push(part);
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    break;
                };
                if is_whiteout(&meta) {
                    return None;
                }
                if i + 1 == parts.len() {
                    return Some(Found {
                        meta,
                        layer: layer.clone(),
                    });
                }
                if !meta.is_dir() {
                    return None; // a file or link here hides the path
                }
                if is_opaque(&path) {
                    opaque_above = true;
                }
            }
            if opaque_above {
                return None;
            }
        }
        None
    }

    /// Resolve `rel` as a chroot would: symlinks in the path (and in the
    /// last component when `follow_last`) are followed inside the view, `..`
    /// stops at the root. Returns the cleaned relative path.
    pub fn resolve(&self, rel: &str, follow_last: bool) -> String {
        let mut resolved: Vec<String> = Vec::new();
        let mut pending: Vec<String> = rel
            .split('/')
            .filter(|p| !p.is_empty())
            .rev()
            .map(String::from)
            .collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(part);
            let is_last = pending.is_empty();
            if is_last && !follow_last {
                break;
            }
            let Some(found) = self.lookup(&resolved.join("/")) else {
                continue;
            };
            if !found.meta.file_type().is_symlink() || hops >= 40 {
                continue;
            }
            hops += 1;
            let link = found.layer.join(resolved.join("/"));
            let Ok(target) = std::fs::read_link(&link) else {
                continue;
            };
            resolved.pop();
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                resolved.clear();
            }
            for p in target.split('/').filter(|p| !p.is_empty()).rev() {
                pending.push(p.to_string());
            }
        }
        resolved.join("/")
    }

    /// The file at `rel` read as text (after resolving links), or "".
    pub fn read_to_string(&self, rel: &str) -> String {
        let rel = self.resolve(rel, true);
        match self.lookup(&rel) {
            Some(found) if found.meta.is_file() => {
                std::fs::read_to_string(found.layer.join(rel)).unwrap_or_default()
            }
            _ => String::new(),
        }
    }
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// An overlay opaque dir (`user.overlay.opaque` or `trusted.overlay.opaque` = "y").
fn is_opaque(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    for name in [
        &b"user.overlay.opaque\0"[..],
        &b"trusted.overlay.opaque\0"[..],
    ] {
        let mut value = [0u8; 4];
        // SAFETY: both strings are NUL-terminated and the buffer is valid for its length.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                name.as_ptr().cast(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n == 1 && value[0] == b'y' {
            return true;
        }
    }
    false
}
