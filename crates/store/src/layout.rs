//! Where a store lives and what its directory holds.

use crate::error::{Result, StoreError};
use std::fs;
use std::path::{Path, PathBuf};

/// The content of the `oci-layout` file of an OCI image layout.
pub const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

/// Pick the store root the way the CLI contract says: an explicit value
/// (`--store` or `CAIRN_STORE`, which clap merges), else
/// `$XDG_DATA_HOME/cairn`, else `~/.local/share/cairn`, and `/var/lib/cairn`
/// for root.
pub fn default_root(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("CAIRN_STORE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/cairn");
    }
    if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(p).join("cairn");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/cairn"),
        None => PathBuf::from("/var/lib/cairn"),
    }
}

/// The paths inside a store root.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn sandboxes(&self) -> PathBuf {
        self.root.join("sandboxes")
    }
    pub fn index_json(&self) -> PathBuf {
        self.root.join("index.json")
    }
    pub fn oci_layout(&self) -> PathBuf {
        self.root.join("oci-layout")
    }
    pub fn meta_db(&self) -> PathBuf {
        self.root.join("meta.db")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("store.lock")
    }

    /// Create whatever is missing; check what exists is what we expect.
    /// The root and the dirs that hold tenants' files (`layers/`,
    /// `sandboxes/`, `tmp/` where RUN upper dirs live) are 0700: as root,
    /// other local users must not reach a tenant's files (a setuid binary
    /// built into a layer, say).
    pub fn create(&self) -> Result<()> {
        for dir in [
            self.root.clone(),
            self.blobs(),
            self.layers(),
            self.tmp(),
            self.sandboxes(),
        ] {
            fs::create_dir_all(&dir).map_err(StoreError::io("create directory", &dir))?;
        }
        for dir in [
            self.root.clone(),
            self.layers(),
            self.tmp(),
            self.sandboxes(),
        ] {
            make_private(&dir)?;
        }
        let layout = self.oci_layout();
        match fs::read(&layout) {
            Ok(bytes) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::BadLayout {
                        path: layout.clone(),
                        reason: format!("oci-layout is not JSON: {e}"),
                    })?;
                if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
                    return Err(StoreError::BadLayout {
                        path: layout,
                        reason: "oci-layout does not say imageLayoutVersion 1.0.0".into(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::fsutil::write_atomic(&layout, &self.tmp(), OCI_LAYOUT.as_bytes())?;
            }
            Err(e) => return Err(StoreError::io("read", layout)(e)),
        }
        Ok(())
    }
}

/// Mode 0700 on `dir` unless it already has no group/other bits but group
/// search (0710: real root lets its sandboxes' container root, a group of
/// one subordinate ID, walk through; see `cairn_sandbox::owners`). A dir we do
/// not own (EPERM: a store another user prepared for us) keeps its mode: the
/// store still works, and tightening it is its owner's call.
pub(crate) fn make_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(dir).map_err(StoreError::io("stat", dir))?;
    if meta.permissions().mode() & 0o067 == 0 {
        return Ok(());
    }
    match fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        Err(e) => Err(StoreError::io("chmod 0700", dir)(e)),
    }
}
