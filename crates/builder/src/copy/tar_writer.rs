//! The tree a step writes new entries into, and how they get their owners: directly as root,
//! through a staging tree and a tar extracted in a task rootless.

use super::fs::lchown;
use crate::{BuildError, Builder};
use cairn_sandbox::fscopy::Owners;
use cairn_sandbox::Task;
use std::collections::HashMap;
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
    /// Staged: owners (container IDs) of particular entries.
    owners: HashMap<String, (u32, u32)>,
    /// Staged: the owner of every other entry.
    default_owner: (u32, u32),
}

impl TreeWriter {
    pub fn new(
        builder: &Builder,
        dir: &Path,
        default_owner: (u32, u32),
    ) -> Result<Self, BuildError> {
        let direct = builder.mapping.is_identity() && nix::unistd::geteuid().is_root();
        let root = if direct {
            dir.join("upper")
        } else {
            dir.join("stage")
        };
        std::fs::create_dir_all(&root).map_err(BuildError::io(&root))?;
        Ok(TreeWriter {
            root,
            direct,
            owners: HashMap::new(),
            default_owner,
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

    /// How a copier gives owners to what it writes: `owner` now (as root),
    /// or later through `default_owner` (staged).
    pub(super) fn copier_owners(&self, owner: Option<(u32, u32)>) -> Owners {
        match owner {
            Some((u, g)) if self.direct => Owners::Set(u, g),
            _ => Owners::Creator,
        }
    }

    pub(super) fn rel_of(&self, path: &Path) -> String {
        crate::context::rel_of(&self.root, path)
    }

    /// Staged: write the staging tree into `dir/upper` with its owners.
    pub fn finish(self, builder: &Builder, dir: &Path) -> Result<(), BuildError> {
        if self.direct {
            return Ok(());
        }
        let tar_path = dir.join("stage.tar");
        write_tree_tar(&self.root, &self.owners, self.default_owner, &tar_path)?;
        builder.launcher.run_task(
            &builder.mapping,
            Task::ExtractLayer {
                blob: tar_path,
                dest: dir.join("upper"),
                // Our own tar of the staged context files (sized by the
                // context, not by a stranger): no caps.
                limits: cairn_layer::ExtractLimits::unlimited(),
                tree_digest: false,
            },
        )?;
        Ok(())
    }
}

/// A tar of `root`'s contents: modes and times as they are, owners from
/// `owners` or `default_owner`, hard links as links.
fn write_tree_tar(
    root: &Path,
    owners: &HashMap<String, (u32, u32)>,
    default_owner: (u32, u32),
    out: &Path,
) -> Result<(), BuildError> {
    let file = std::fs::File::create(out).map_err(BuildError::io(out))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
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
        .map_err(BuildError::io(out))
}
