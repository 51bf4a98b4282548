//! Capture from an overlayfs upper dir: whiteout devices become `.wh.NAME`,
//! opaque dirs get a `.wh..wh..opq` marker, overlay's own xattrs are dropped.

use super::walk::{walk_tree, FileType, Node};
use super::{Entry, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::error::LayerError;
use crate::{LayerOptions, OverlayFlavour};
use std::path::Path;

impl OverlayFlavour {
    /// The xattr namespace overlayfs uses for its metadata in this flavour.
    pub(crate) fn xattr_prefix(self) -> &'static [u8] {
        match self {
            OverlayFlavour::UserXattr => b"user.overlay.",
            OverlayFlavour::Trusted => b"trusted.overlay.",
        }
    }

    pub(crate) fn opaque_xattr(self) -> Vec<u8> {
        [self.xattr_prefix(), b"opaque"].concat()
    }
}

/// A 0:0 character device is how overlayfs records a deletion.
pub(crate) fn is_whiteout(node: &Node) -> bool {
    node.file_type == FileType::Char && node.rdev == 0
}

/// Whether the dir carries the opaque xattr of `flavour` (`y`; `x` marks an
/// xwhiteout dir of a data-only lower and is not opaque).
pub(crate) fn is_opaque(node: &Node, flavour: OverlayFlavour) -> bool {
    node.file_type == FileType::Dir && node.xattr(&flavour.opaque_xattr()) == Some(b"y")
}

pub(crate) fn with_name_prefix(rel: &[u8], prefix: &[u8]) -> Vec<u8> {
    let (dir, base) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    [dir, prefix, base].concat()
}

pub(crate) fn opaque_marker_path(dir_rel: &[u8]) -> Vec<u8> {
    [dir_rel, b"/", OPAQUE_MARKER].concat()
}

pub(crate) fn capture(
    upper: &Path,
    flavour: OverlayFlavour,
    opts: &LayerOptions,
) -> Result<Vec<Entry>, LayerError> {
    let mut out = Vec::new();
    walk_tree(upper, &mut |node| push_node(node, flavour, opts, &mut out))?;
    Ok(out)
}

/// The entries of one walked node of an upper dir (none, one, or a dir
/// and its opaque marker).
pub(crate) fn push_node(
    node: Node,
    flavour: OverlayFlavour,
    opts: &LayerOptions,
    out: &mut Vec<Entry>,
) -> Result<(), LayerError> {
    let prefix = flavour.xattr_prefix();
    for feature in ["redirect", "metacopy"] {
        let name = [prefix, feature.as_bytes()].concat();
        if node.xattr(&name).is_some() {
            return Err(LayerError::UnsupportedOverlayFeature {
                path: node.abs.clone(),
                feature: if feature == "redirect" {
                    "redirect_dir"
                } else {
                    "metacopy"
                },
            });
        }
    }
    match node.file_type {
        FileType::Socket => {}
        _ if is_whiteout(&node) => {
            out.push(Entry::marker(with_name_prefix(&node.rel, WHITEOUT_PREFIX)))
        }
        FileType::Dir => {
            let opaque = is_opaque(&node, flavour);
            out.push(Entry::from_node(&node, opts)?);
            if opaque {
                out.push(Entry::marker(opaque_marker_path(&node.rel)));
            }
        }
        _ => out.push(Entry::from_node(&node, opts)?),
    }
    Ok(())
}
