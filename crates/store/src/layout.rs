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
    /// built into a layer, say). An existing store costs one `stat` per
    /// directory and one read of `oci-layout` (every command opens it),
    /// plus one flag read on each dir where new trees are made (`tmp/`,
    /// `sandboxes/`: see [`spread_new_trees`]).
    pub fn create(&self) -> Result<()> {
        for (dir, private, trees) in [
            (self.root.clone(), true, false),
            (self.blobs(), false, false),
            (self.layers(), true, false),
            (self.tmp(), true, true),
            (self.sandboxes(), true, true),
        ] {
            let meta = ensure_dir(&dir, "create directory")?;
            if private {
                make_private(&dir, &meta)?;
            }
            if trees {
                spread_new_trees(&dir);
            }
        }
        let layout = self.oci_layout();
        match fs::read(&layout) {
            Ok(bytes) if bytes == OCI_LAYOUT.as_bytes() => {}
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

/// `dir` as a directory, created (with its parents) when missing: one
/// `stat` when it exists. Anything else at that path fails as
/// `create_dir_all` fails there, with `action` in the message.
pub(crate) fn ensure_dir(dir: &Path, action: &'static str) -> Result<fs::Metadata> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(meta),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(action, dir)(e)),
    }
    fs::create_dir_all(dir).map_err(StoreError::io(action, dir))?;
    fs::metadata(dir).map_err(StoreError::io("stat", dir))
}

/// Mark `dir` so that ext4 places each directory made in it like a
/// top-level one (`chattr +T`, `FS_TOPDIR_FL`): in the block group with the
/// fewest directories among those with more free inodes than average,
/// instead of next to `dir`. The files of that new tree then go to its
/// group too.
///
/// Why: on an ext4 without a journal (this machine's disk; containers'
/// scratch disks often are), the inode allocator skips every inode freed
/// in the last 60-300 s, one inode-table lookup per skipped inode and
/// allocation (`find_inode_bit` -> `recently_deleted`). Right after anyone
/// deleted 20,000 files next to the store (a buildah build removes its
/// container's tree; our own GC, `sandbox rm`), making a 20,000-file upper
/// dir in the same group took 6-15 s instead of 0.7 s (docs/performance.md,
/// "Ninth pass (stop 20)"). Spread like this, a new upper dir lands in a
/// group nobody just emptied. Journaled ext4 skips that check; the flag
/// then only spreads the trees, which costs nothing on flash.
///
/// Best effort: other filesystems refuse the flag (tmpfs: `ENOTTY`, xfs
/// and btrfs: `EOPNOTSUPP`), and a dir another user owns keeps its flags
/// (`EPERM`); the store works the same either way, so nothing is reported.
pub(crate) fn spread_new_trees(dir: &Path) {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, open, IFlags, Mode, OFlags};
    let Ok(fd) = open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    ) else {
        return;
    };
    if let Ok(flags) = ioctl_getflags(&fd) {
        if !flags.contains(IFlags::TOPDIR) {
            // Every other bit (ext4's extents flag among them) goes back as
            // it was read: from_bits_retain keeps the ones rustix does not name.
            let _ = ioctl_setflags(&fd, flags | IFlags::TOPDIR);
        }
    }
}

/// Mode 0700 on `dir` unless it already has no group/other bits but group
/// search (0710: real root lets its sandboxes' container root, a group of
/// one subordinate ID, walk through; see `cairn_sandbox::owners`). A dir we do
/// not own (EPERM: a store another user prepared for us) keeps its mode: the
/// store still works, and tightening it is its owner's call.
pub(crate) fn make_private(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o067 == 0 {
        return Ok(());
    }
    match fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        Err(e) => Err(StoreError::io("chmod 0700", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// `tmp/` and `sandboxes/` carry ext4's top-dir flag, so new upper dirs
    /// are not made next to inodes someone just freed (see
    /// `spread_new_trees`); also on a store made before the flag existed.
    /// Only checkable where the test's temp dir is on ext4 (CI's is).
    #[test]
    fn tree_dirs_are_spread_on_ext4() {
        use rustix::fs::{ioctl_getflags, open, statfs, IFlags, Mode, OFlags};
        let dir = tempfile::tempdir().unwrap();
        if statfs(dir.path()).unwrap().f_type as i64 != 0xEF53 {
            eprintln!("skipped: {} is not on ext4", dir.path().display());
            return;
        }
        let flags = |p: &Path| {
            let fd = open(p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
            ioctl_getflags(&fd).unwrap()
        };
        let layout = Layout::new(dir.path().join("store"));
        layout.create().unwrap();
        for p in [layout.tmp(), layout.sandboxes()] {
            assert!(flags(&p).contains(IFlags::TOPDIR), "{}", p.display());
        }
        assert!(!flags(&layout.blobs()).contains(IFlags::TOPDIR));
        // A store from before: the flag is set at its next open.
        let old = Layout::new(dir.path().join("old"));
        for p in [old.tmp(), old.sandboxes()] {
            fs::create_dir_all(&p).unwrap();
            assert!(!flags(&p).contains(IFlags::TOPDIR));
        }
        old.create().unwrap();
        assert!(flags(&old.tmp()).contains(IFlags::TOPDIR));
        assert!(flags(&old.sandboxes()).contains(IFlags::TOPDIR));
    }

    /// The one-`stat` path still creates what is missing and tightens what
    /// is too open, as the mkdir-everything path did.
    #[test]
    fn create_makes_missing_dirs_and_tightens_open_ones() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("store"));
        layout.create().unwrap();
        fs::remove_dir(layout.tmp()).unwrap();
        fs::set_permissions(layout.layers(), fs::Permissions::from_mode(0o755)).unwrap();
        layout.create().unwrap();
        assert_eq!(mode(&layout.tmp()), 0o700);
        assert_eq!(mode(&layout.layers()), 0o700);
        assert!(layout.blobs().is_dir());
        assert_eq!(
            fs::read(layout.oci_layout()).unwrap(),
            OCI_LAYOUT.as_bytes()
        );
    }

    /// Something other than a directory where one belongs is refused with
    /// the path in the error, and is left as it was.
    #[test]
    fn a_file_where_a_store_dir_belongs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("store"));
        layout.create().unwrap();
        fs::remove_dir(layout.sandboxes()).unwrap();
        fs::write(layout.sandboxes(), b"x").unwrap();
        let err = layout.create().unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { action: "create directory", path, .. } if *path == layout.sandboxes()),
            "{err}"
        );
        assert_eq!(fs::read(layout.sandboxes()).unwrap(), b"x");
    }

    /// An `oci-layout` that differs from ours byte for byte but says the
    /// same (other spacing) is accepted; one that says otherwise is not.
    #[test]
    fn oci_layout_is_checked_by_meaning() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("store"));
        layout.create().unwrap();
        fs::write(
            layout.oci_layout(),
            b"{ \"imageLayoutVersion\": \"1.0.0\" }\n",
        )
        .unwrap();
        layout.create().unwrap();
        fs::write(layout.oci_layout(), b"{\"imageLayoutVersion\":\"2.0.0\"}").unwrap();
        assert!(matches!(
            layout.create().unwrap_err(),
            StoreError::BadLayout { .. }
        ));
    }
}
