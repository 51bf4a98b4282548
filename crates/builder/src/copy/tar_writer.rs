//! The tree a step writes new entries into, and how they get their owners: directly as root
//! (with an identity mapping: owners set as entries are written; with a subordinate mapping:
//! mapped in one pass at the end); rootless, as a tar streamed into an extract task: dirs,
//! heredocs and downloads from a staging tree, context files straight from the context.

use super::deferred::{Body, Deferred, SourceDirs};
use super::fs::lchown;
use crate::{BuildError, Builder};
use cairn_sandbox::idmap::IdMapping;
use std::collections::{HashMap, HashSet};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where a step writes new entries and how they get their owners. As root,
/// straight into the upper dir with `lchown`. Rootless, the caller cannot
/// give files to subordinate IDs: dirs, heredocs and downloads go to a
/// staging tree, owned by the caller, context files and symlinks are only
/// recorded ([`Deferred`]), and [`TreeWriter::finish`] writes both as one tar
/// with the owners they should have, read as it is written by an extract
/// task (in the user namespace, where those IDs are its own).
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
    /// Staged: the context files the copies recorded, not written.
    deferred: Option<Deferred>,
    /// Direct or mapped: what the copies wrote below their destination
    /// dirs, for the commit (see `super::known`); `None` once something
    /// was written that no log describes.
    known: Option<cairn_layer::KnownEntries>,
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
        let staged = !direct && mapped.is_none();
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
            deferred: staged.then(Deferred::default),
            known: (!staged).then(cairn_layer::KnownEntries::default),
        })
    }

    /// Whether copies should log what they write (see `super::known`).
    pub(super) fn knows(&self) -> bool {
        self.known.is_some()
    }

    /// Something was written that no copy's log describes: the commit
    /// walks the whole tree.
    pub(super) fn forget_known(&mut self) {
        self.known = None;
    }

    /// Add a copy's log of what it wrote below `top` (a dir in the tree).
    pub(super) fn add_known(&mut self, top: &Path, log: super::known::KnownLog) {
        let rel = top
            .strip_prefix(&self.root)
            .ok()
            .map(|r| r.as_os_str().as_bytes().to_vec());
        let added = match (&mut self.known, rel) {
            (Some(known), Some(rel)) => log.into_known(rel, known),
            _ => false,
        };
        if !added {
            self.forget_known();
        }
    }

    /// What the copies wrote, for the commit; `None` if not all of it is known.
    pub fn take_known(&mut self) -> Option<cairn_layer::KnownEntries> {
        self.known.take().filter(|k| !k.is_empty())
    }

    /// Staged: where copies record context files instead of writing them.
    pub(super) fn deferred(&self) -> Option<&Deferred> {
        self.deferred.as_ref()
    }

    /// Make the dir `path` in the tree (it fails, as `mkdir` does, where a
    /// recorded file stands).
    pub(super) fn create_dir(&self, path: &Path) -> Result<(), BuildError> {
        if self.deferred.as_ref().is_some_and(|d| d.holds(path)) {
            let e = std::io::Error::from_raw_os_error(libc::EEXIST);
            return Err(BuildError::io(path)(e));
        }
        std::fs::create_dir(path).map_err(BuildError::io(path))
    }

    /// A file is written at `path` in the tree: it replaces what a copy
    /// recorded there.
    pub(super) fn forget(&self, path: &Path) {
        if let (Some(deferred), Some(dir), Some(name)) =
            (&self.deferred, path.parent(), path.file_name())
        {
            deferred.forget(dir, name.as_bytes());
        }
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
            let written = TreeTar {
                root: &self.root,
                owners: &self.owners,
                default_owner: self.default_owner,
                deferred: self.deferred.as_ref(),
            }
            .write(std::fs::File::from(write));
            let extracted = extract.join().unwrap_or_else(|_| {
                Err(BuildError::Internal("the extract thread panicked".into()))
            });
            // A failed extraction closes the pipe (the writer then sees a
            // broken pipe): its error says why. A failed writer (a context
            // file that changed) ends the stream early: its error says why.
            match (extracted, written) {
                (Err(e), Err(BuildError::Io { source, .. }))
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Err(e)
                }
                (_, Err(w)) => Err(w),
                (extracted, Ok(())) => extracted,
            }
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

/// The tar of a staged step: the staging tree's entries and the recorded
/// context files, merged dir by dir in name order.
struct TreeTar<'a> {
    root: &'a Path,
    /// Owners (container IDs) of particular entries, else `default_owner`.
    owners: &'a HashMap<String, (u32, u32)>,
    default_owner: (u32, u32),
    deferred: Option<&'a Deferred>,
}

/// One entry of a staging dir: on disk, or recorded.
enum Child {
    Staged(std::ffi::OsString),
    Recorded(Vec<u8>, super::deferred::Entry),
}

impl Child {
    fn name(&self) -> &[u8] {
        match self {
            Child::Staged(n) => n.as_bytes(),
            Child::Recorded(n, _) => n,
        }
    }
}

/// Hard links already in the tar: staged files by (dev, ino), recorded
/// ones by (copy, dev, ino) of their source; the first name written.
#[derive(Default)]
struct Links {
    staged: HashMap<(u64, u64), String>,
    recorded: HashMap<(usize, u64, u64), String>,
}

impl TreeTar<'_> {
    /// Write the tar into `out`: modes and times as staged or recorded,
    /// owners from `owners` or `default_owner`, hard links as links.
    fn write(&self, out: impl std::io::Write) -> Result<(), BuildError> {
        let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
        let mut links = Links::default();
        let mut sources = SourceDirs::default();
        // Depth first, each dir's children in name order (as a sorted walk).
        let mut stack = vec![(self.root.to_path_buf(), self.children(self.root)?)];
        while let Some((dir, children)) = stack.last_mut() {
            let Some(child) = children.pop() else {
                stack.pop();
                continue;
            };
            let dir = dir.clone();
            let path = dir.join(std::ffi::OsStr::from_bytes(child.name()));
            let rel = crate::context::rel_of(self.root, &path);
            match child {
                Child::Staged(_) => {
                    if self.staged(&mut tar, &mut links, &path, &rel)? {
                        let children = self.children(&path)?;
                        stack.push((path, children));
                    }
                }
                Child::Recorded(_, entry) => {
                    self.recorded(&mut tar, &mut links, &mut sources, &entry, &path, &rel)?
                }
            }
        }
        tar.into_inner()
            .and_then(|mut w| std::io::Write::flush(&mut w))
            .map_err(BuildError::io(self.root))
    }

    /// The children of the staging dir `dir`, in reverse name order (they
    /// are popped).
    fn children(&self, dir: &Path) -> Result<Vec<Child>, BuildError> {
        let mut children = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(BuildError::io(dir))? {
            let entry = entry.map_err(BuildError::io(dir))?;
            children.push(Child::Staged(entry.file_name()));
        }
        if let Some(deferred) = self.deferred {
            let recorded = deferred.take(dir);
            children.extend(recorded.into_iter().map(|(n, e)| Child::Recorded(n, e)));
        }
        children.sort_by(|a, b| b.name().cmp(a.name()));
        Ok(children)
    }

    fn header(&self, rel: &str, mode: u32, mtime: i64) -> tar::Header {
        let (uid, gid) = self.owners.get(rel).copied().unwrap_or(self.default_owner);
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode);
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        header.set_mtime(mtime.max(0) as u64);
        header.set_size(0);
        header
    }

    /// One entry of the staging tree. Says whether it is a dir to descend.
    fn staged<W: std::io::Write>(
        &self,
        tar: &mut tar::Builder<W>,
        links: &mut Links,
        path: &Path,
        rel: &str,
    ) -> Result<bool, BuildError> {
        let meta = path.symlink_metadata().map_err(BuildError::io(path))?;
        let mut header = self.header(rel, meta.mode() & 0o7777, meta.mtime());
        let io = BuildError::io(path);
        let ft = meta.file_type();
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, rel, std::io::empty())
                .map_err(io)?;
            // A mode without read or search (`--chmod=640`) is in the
            // header; the staging dir itself is ours to read.
            if meta.mode() & 0o500 != 0o500 {
                use std::os::unix::fs::PermissionsExt;
                let readable = std::fs::Permissions::from_mode(meta.mode() | 0o700);
                std::fs::set_permissions(path, readable).map_err(BuildError::io(path))?;
            }
            return Ok(true);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(BuildError::io(path))?;
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, rel, &target).map_err(io)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.staged.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(tar::EntryType::Link);
                    tar.append_link(&mut header, rel, first).map_err(io)?;
                    return Ok(false);
                }
                links
                    .staged
                    .insert((meta.dev(), meta.ino()), rel.to_string());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let f = std::fs::File::open(path).map_err(BuildError::io(path))?;
            tar.append_data(&mut header, rel, f).map_err(io)?;
        }
        Ok(false)
    }

    /// One recorded context file or symlink, read from the context.
    fn recorded<W: std::io::Write>(
        &self,
        tar: &mut tar::Builder<W>,
        links: &mut Links,
        sources: &mut SourceDirs,
        entry: &super::deferred::Entry,
        path: &Path,
        rel: &str,
    ) -> Result<(), BuildError> {
        let mut header = self.header(rel, entry.mode, entry.mtime);
        let io = BuildError::io(path);
        match &entry.body {
            Body::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                let target = std::ffi::OsStr::from_bytes(target.to_bytes());
                tar.append_link(&mut header, rel, target).map_err(io)
            }
            Body::File {
                size, id, linked, ..
            } => {
                if *linked {
                    let key = (entry.copy, id.0, id.1);
                    if let Some(first) = links.recorded.get(&key) {
                        header.set_entry_type(tar::EntryType::Link);
                        return tar.append_link(&mut header, rel, first).map_err(io);
                    }
                    links.recorded.insert(key, rel.to_string());
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(*size);
                let data = self
                    .deferred
                    .map(|d| d.open(sources, entry))
                    .transpose()
                    .map_err(BuildError::io(path))?
                    .flatten();
                match data {
                    Some(data) => tar.append_data(&mut header, rel, data).map_err(io),
                    None => Err(BuildError::Internal(
                        "a recorded file without a source".into(),
                    )),
                }
            }
        }
    }
}
