//! The one error type of this crate. Every variant names what it was working on
//! (a path in the source tree, an entry of the tar stream), so a caller can tell
//! the user which file or which layer entry was at fault.

use std::io;
use std::path::PathBuf;

/// Anything that can go wrong while writing or extracting a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Reading the source tree failed at `path`.
    #[error("reading {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file changed size while it was being archived (the tar would be corrupt).
    #[error("{path} changed while it was being archived (expected {expected} bytes, read {read})")]
    ChangedDuringCapture {
        path: PathBuf,
        expected: u64,
        read: u64,
    },

    /// The overlay upper dir uses a feature we never mount with (redirect_dir, metacopy).
    #[error("{path}: overlay {feature} is not supported (mount overlay without it)")]
    UnsupportedOverlayFeature {
        path: PathBuf,
        feature: &'static str,
    },

    /// A host ID that the ID map does not cover.
    #[error("{path}: {kind} {id} is not covered by the ID map")]
    UnmappedId {
        path: PathBuf,
        kind: &'static str,
        id: u32,
    },

    /// Writing the tar / compressed stream to the sink failed.
    #[error("writing the layer stream: {0}")]
    Sink(#[source] io::Error),

    /// The layer stream could not be read or decompressed, or is not a valid tar.
    #[error("reading the layer stream: {0}")]
    Stream(#[source] io::Error),

    /// A cap of `ExtractOptions::limits` was hit (size, entries, header size).
    #[error("layer has {0}")]
    Limit(crate::limits::LimitExceeded),

    /// An entry whose name or link target is not acceptable (`..`, NUL, bad whiteout).
    #[error("entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },

    /// Creating or changing an entry under the destination failed.
    #[error("extracting {entry:?}: {op}: {source}")]
    Extract {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// The destination directory itself is unusable.
    #[error("destination {path}: {source}")]
    Destination {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A value that does not parse (compression name, ID map line).
    #[error("invalid {what}: {value:?}")]
    Parse { what: &'static str, value: String },
}

impl LayerError {
    pub(crate) fn source_io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LayerError::Source {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_entry(entry: &[u8], reason: impl Into<String>) -> Self {
        LayerError::BadEntry {
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn extract(entry: &[u8], op: &'static str, source: io::Error) -> Self {
        LayerError::Extract {
            entry: String::from_utf8_lossy(entry).into_owned(),
            op,
            source,
        }
    }
}
