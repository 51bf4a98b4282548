//! The descriptors of a chain of nested directories that a loop walks
//! down and back up (the capture walk, `COPY --from`'s copier): each level
//! is opened relative to its parent, and only the last [`OPEN_LEVELS`] stay
//! open, so a 4,096-level tree needs no more descriptors than a shallow
//! one (a rootless caller may have only 1,024). An ancestor whose
//! descriptor was closed is reopened as its child's `..` and checked to be
//! the same directory (dev, ino) when the walk climbs back to it.

use crate::extract::root::{reopen_parent, OPEN_LEVELS};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// A chain of open directories, the root first.
pub struct DirChain {
    levels: Vec<(Option<OwnedFd>, (u64, u64))>,
}

impl DirChain {
    /// A chain holding `root`, whose (dev, ino) is read here.
    pub fn new(root: OwnedFd) -> io::Result<DirChain> {
        let id = dir_id(root.as_fd())?;
        Ok(DirChain {
            levels: vec![(Some(root), id)],
        })
    }

    /// Levels below the root (0 for the root alone).
    pub fn depth(&self) -> usize {
        self.levels.len() - 1
    }

    /// The innermost directory (always open).
    pub fn top(&self) -> io::Result<BorrowedFd<'_>> {
        match self.levels.last() {
            Some((Some(fd), _)) => Ok(fd.as_fd()),
            _ => Err(io::Error::other("a directory chain with no open top")),
        }
    }

    /// Go down into `fd`, a child of the top whose (dev, ino) is `id`;
    /// the level [`OPEN_LEVELS`] above it is closed.
    pub fn push(&mut self, fd: OwnedFd, id: (u64, u64)) {
        if self.levels.len() >= OPEN_LEVELS {
            let far = self.levels.len() - OPEN_LEVELS;
            self.levels[far].0 = None;
        }
        self.levels.push((Some(fd), id));
    }

    /// Go back up one level, reopening the new top if it was closed.
    /// The root is never popped.
    pub fn pop(&mut self) -> io::Result<()> {
        if self.levels.len() < 2 {
            return Err(io::Error::other("popping the root of a directory chain"));
        }
        let child = self.levels.pop().and_then(|(fd, _)| fd);
        if let (Some(parent), Some(child)) = (self.levels.last_mut(), child) {
            if parent.0.is_none() {
                parent.0 = Some(reopen_parent(child.as_fd(), parent.1)?);
            }
        }
        Ok(())
    }
}

/// (dev, ino) of the open directory `fd`.
pub fn dir_id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    match crate::sys::lstatat(fd, b".")? {
        Some(st) => Ok((st.st_dev, st.st_ino)),
        None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
    }
}
