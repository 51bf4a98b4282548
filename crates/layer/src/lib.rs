//! Layers: turning a changed filesystem into an OCI layer blob and back.
//!
//! * [`write_layer`] captures a diff ([`DiffSource`]: an overlay upper dir, a
//!   before/after comparison, or a whole tree), writes a deterministic tar and
//!   compresses and digests it in one pass.
//! * [`extract_layer`] turns any layer blob — gzip, zstd or plain, detected by
//!   content — back into a directory, never writing outside it.
//!
//! See `docs/layers.md` for the exact tar rules and the hostile-input policy.

mod capture;
pub mod compression;
pub mod digest;
pub mod dir_chain;
pub mod error;
mod extract;
mod hash_thread;
pub mod idmap;
pub mod limits;
pub mod meter;
mod pgzip;
mod pzstd;
pub mod quiet;
pub mod sys;
mod tar_writer;
#[doc(hidden)]
pub mod testdata;
pub mod timing;
mod write;

pub use capture::{KnownEntries, KnownEntry, KnownKind};
pub use compression::Compression;
pub use digest::{BackgroundHasher, Digest, HashingWriter};
pub use error::LayerError;
pub use extract::root::remove_all_at;
pub use extract::{
    blob_diff_id, buffered_blob_diff_id, extract_layer, is_real_root, BlobDiffId, ExtractOptions,
    ExtractStats, WhiteoutMode,
};
pub use idmap::{IdMap, IdRange};
pub use limits::{ExtractLimits, LimitExceeded, LimitKind, MAX_TREE_DEPTH};
pub use pgzip::ParallelGzEncoder;
pub use pzstd::ZstdEncoder;
pub use sys::{openat2_in_root, readlinkat};
pub use write::{
    write_layer, write_layer_known_unhashed, write_layer_unhashed, LayerInfo, WrittenLayer,
};

use std::path::Path;

/// Which xattr namespace an overlayfs mount keeps its metadata in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverlayFlavour {
    /// Mounted with `userxattr` (in a user namespace): `user.overlay.*`.
    UserXattr,
    /// Mounted by real root: `trusted.overlay.*`.
    Trusted,
}

/// Where the content of a new layer comes from.
#[derive(Debug, Clone, Copy)]
pub enum DiffSource<'a> {
    /// The upper dir of an overlay mount (unmounted, or at least quiescent).
    OverlayUpper {
        upper: &'a Path,
        flavour: OverlayFlavour,
    },
    /// Walk-and-compare fallback: `lower` is the stack of layer dirs under the
    /// change, topmost first (overlay-form whiteouts and opaque dirs of either
    /// flavour are honoured; a single plain tree works too); `upper_tree` is the
    /// whole tree after the change.
    Compare {
        lower: &'a [&'a Path],
        upper_tree: &'a Path,
    },
    /// Every file under the directory, as-is (COPY into an empty dir, a rootfs).
    Full(&'a Path),
}

/// How to write a layer.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Compression level; `None` for the default (zstd 3, gzip 6).
    pub level: Option<i32>,
    /// Clamp every mtime to at most this (`--timestamp` / `SOURCE_DATE_EPOCH`).
    pub timestamp: Option<i64>,
    /// Maps the owners found on disk (host IDs) to the IDs written in the tar.
    pub id_map: IdMap,
    /// Compression threads (zstd workers, gzip pool). The output does not depend on it.
    pub threads: usize,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Zstd,
            level: None,
            timestamp: None,
            id_map: IdMap::identity(),
            threads: 2,
        }
    }
}
