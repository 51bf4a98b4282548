//! The tree a step writes new entries into, and how they get their owners: directly as root
//! (with an identity mapping: owners set as entries are written; with a subordinate mapping:
//! mapped in one pass at the end), through a staging tree and a tar extracted in a task rootless.

use super::fs::lchown;
use crate::{BuildError, Builder};
use cairn_sandbox::idmap::IdMapping;
use std::collections::{HashMap, HashSet};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where a step writes new entries and how they get their owners. As root,
/// straight into the upper dir with `lchown`. Rootless, the caller cannot
/// give files to subordinate IDs: entries go to a staging tree, owned by the
/// caller, and [`TreeWriter::finish`] writes that tree as a tar with the
/// owners it should have and extracts it into the upper dir in a task (in the
/// user namespace, where those IDs are its own).
pub(crate) struct TreeWriter {
    /// The tree entries are written to (the upper dir, or the staging dir).
    pub root: PathBuf,
    direct: bool,
    /// Root with a subordinate mapping (every root build since the sandbox
    /// hardening): entries are written straight into the upper dir and
    /// [`TreeWriter::finish`] gives each its mapped host owner. Staging,
    /// tar and extraction in a task cost ~10x the copy on a 20,000-file
    /// tree; root can chown to any host ID, so none of that is needed.
    mapped: Option<IdMapping>,
    /// Staged or mapped: owners (container IDs) of particular entries.
    owners: HashMap<String, (u32, u32)>,
    /// Staged or mapped: the owner of every other entry.
    default_owner: (u32, u32),
    /// Mapped: trees already given their host owners by the copy.
    owned: HashSet<PathBuf>,
}

impl TreeWriter {
    pub fn new(
        builder: &Builder,
        dir: &Path,
        default_owner: (u32, u32),
    ) -> Result<Self, BuildError> {
        let root_user = nix::unistd::geteuid().is_root();
        let direct = builder.mapping.is_identity() && root_user;
        let mapped = (root_user && !direct).then(|| builder.mapping.clone());
        let root = if direct || mapped.is_some() {
            dir.join("upper")
        } else {
            dir.join("stage")
        };
        std::fs::create_dir_all(&root).map_err(BuildError::io(&root))?;
        Ok(TreeWriter {
            root,
            direct,
            mapped,
            owners: HashMap::new(),
            default_owner,
            owned: HashSet::new(),
        })
    }

    /// Give the entry at `rel` (relative to the root) the container owner `owner`.
    pub fn set_owner(&mut self, rel: &str, owner: (u32, u32)) -> Result<(), BuildError> {
        if self.direct {
            lchown(&self.root.join(rel), Some(owner))
        } else {
            self.owners.insert(rel.to_string(), owner);
            Ok(())
        }
    }

    /// The host owner a [`super::tree_copy::TreeCopy`] gives what it
    /// writes: `--chown`'s (as root with an identity mapping; else the
    /// creator's, root), the mapped host owner (root with a subordinate
    /// mapping: those entries then need no pass in [`TreeWriter::finish`],
    /// see [`TreeWriter::mark_owned`]), or none (staged: the tar gives
    /// owners).
    pub(super) fn copy_owner(
        &self,
        owner: Option<(u32, u32)>,
    ) -> Result<Option<(u32, u32)>, BuildError> {
        if self.direct {
            return Ok(owner);
        }
        match &self.mapped {
            Some(mapping) => host_owner(mapping, owner.unwrap_or(self.default_owner)).map(Some),
            None => Ok(None),
        }
    }

    /// The entry at `path` (and everything below it) was written with the
    /// owner [`TreeWriter::copy_owner`] gave: the mapped pass skips it.
    pub(super) fn mark_owned(&mut self, path: &Path) {
        if self.mapped.is_some() {
            self.owned.insert(path.to_path_buf());
        }
    }

    /// Staged: write the staging tree into `dir/upper` with its owners.
    /// Mapped: give every entry of the upper dir its mapped host owner.
    pub fn finish(self, builder: &Builder, dir: &Path) -> Result<(), BuildError> {
        if self.direct {
            return Ok(());
        }
        if let Some(mapping) = &self.mapped {
            let pass = OwnerPass {
                owners: &self.owners,
                default_owner: self.default_owner,
                owned: &self.owned,
                mapping,
            };
            return pass.run(&self.root);
        }
        // The tar goes through a pipe into the extract task as it is
        // written (no tar file; writing and extraction on both cores).
        let (read, write) = pipe().map_err(BuildError::io(dir))?;
        let upper = dir.join("upper");
        let what = format!("the copied files staged in {}", self.root.display());
        std::thread::scope(|scope| {
            let extract = scope.spawn(|| {
                // Our own tar of the staged context files (sized by the
                // context, not by a stranger): no caps.
                let limits = cairn_layer::ExtractLimits::unlimited();
                builder
                    .tasks
                    .extract_tar_stream(read, &upper, limits, &what)
            });
            // Dropping the write end (also on an error) ends the stream.
            let written = write_tree_tar(
                &self.root,
                &self.owners,
                self.default_owner,
                std::fs::File::from(write),
            );
            let extracted = extract.join().unwrap_or_else(|_| {
                Err(BuildError::Internal("the extract thread panicked".into()))
            });
            // A failed extraction closes the pipe: its error says why.
            extracted.and(written)
        })
    }
}

/// A pipe (read end, write end), both close-on-exec.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two descriptors, owned by no one.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The host IDs `mapping` gives the container owner `(uid, gid)`.
fn host_owner(mapping: &IdMapping, (uid, gid): (u32, u32)) -> Result<(u32, u32), BuildError> {
    match (mapping.host_uid(uid), mapping.host_gid(gid)) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err(BuildError::input(format!(
            "owner {uid}:{gid}: outside this user's ID mapping"
        ))),
    }
}

/// The mapped pass: chown a tree to the host IDs `mapping` gives the
/// container owners (`owners`, else `default_owner`), as the extract task
/// would have made them, except the trees the copy already owned.
struct OwnerPass<'a> {
    owners: &'a HashMap<String, (u32, u32)>,
    default_owner: (u32, u32),
    owned: &'a HashSet<PathBuf>,
    mapping: &'a IdMapping,
}

impl OwnerPass<'_> {
    /// Chown `root` and everything below it. chown clears setuid/setgid,
    /// so those modes are put back; times are not touched by chown.
    fn run(&self, root: &Path) -> Result<(), BuildError> {
        use std::os::unix::fs::PermissionsExt;
        // The upper dir itself is the layer's root: container root's, as
        // the extract task creates it.
        let (uid, gid) = host_owner(self.mapping, (0, 0))?;
        std::os::unix::fs::lchown(root, Some(uid), Some(gid)).map_err(BuildError::io(root))?;
        let walk = walkdir::WalkDir::new(root).min_depth(1).into_iter();
        // An entry that also got an owner of its own (a heredoc written
        // over a copied file) is still chowned.
        let skip = |e: &walkdir::DirEntry| {
            self.owned.contains(e.path())
                && !self
                    .owners
                    .contains_key(&crate::context::rel_of(root, e.path()))
        };
        for entry in walk.filter_entry(|e| !skip(e)) {
            let entry = entry.map_err(|e| BuildError::input(format!("copied tree: {e}")))?;
            let path = entry.path();
            let rel = crate::context::rel_of(root, path);
            let owner = self.owners.get(&rel).copied().unwrap_or(self.default_owner);
            let (uid, gid) = host_owner(self.mapping, owner)?;
            let meta = path.symlink_metadata().map_err(BuildError::io(path))?;
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(BuildError::io(path))?;
            let mode = meta.mode() & 0o7777;
            if meta.is_file() && mode & 0o6000 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(BuildError::io(path))?;
            }
        }
        Ok(())
    }
}

/// A tar of `root`'s contents into `out`: modes and times as they are,
/// owners from `owners` or `default_owner`, hard links as links.
fn write_tree_tar(
    root: &Path,
    owners: &HashMap<String, (u32, u32)>,
    default_owner: (u32, u32),
    out: impl std::io::Write,
) -> Result<(), BuildError> {
    let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| BuildError::input(format!("staging tree: {e}")))?;
        let path = entry.path();
        let rel = crate::context::rel_of(root, path);
        let meta = path.symlink_metadata().map_err(BuildError::io(path))?;
        let (uid, gid) = owners.get(&rel).copied().unwrap_or(default_owner);
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_size(0);
        let io = BuildError::io(path);
        let ft = meta.file_type();
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, &rel, std::io::empty())
                .map_err(io)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(BuildError::io(path))?;
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, &rel, &target).map_err(io)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(tar::EntryType::Link);
                    tar.append_link(&mut header, &rel, first).map_err(io)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), rel.clone());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let f = std::fs::File::open(path).map_err(BuildError::io(path))?;
            tar.append_data(&mut header, &rel, f).map_err(io)?;
        }
    }
    tar.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(BuildError::io(root))
}
