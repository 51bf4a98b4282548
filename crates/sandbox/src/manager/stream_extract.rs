//! Extracting a layer while its blob downloads.
//!
//! [`SandboxManager::begin_extract`] starts the extract task on a temp dir
//! under the store's `tmp/`, reading from a pipe; the caller writes the
//! blob's bytes into the pipe as they arrive (and into the blob file, and
//! the hash). [`SandboxManager::end_extract`] is told whether the blob
//! checked out: only then, and only if the task read a stream whose diff id
//! is the one expected, is the dir adopted as the layer dir. Anything else
//! (a digest mismatch, a broken download, a tar bomb) removes the temp dir:
//! nothing half-written is ever named.

use super::{io, ManagerError, SandboxManager};
use crate::launch::{Extracted, TaskRemover};
use crate::SandboxError;
use cairn_layer::Digest;
use cairn_store::layer_dirs::{TreeRef, TreeRemover};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// Bytes a pipe holds before the writer waits (`F_SETPIPE_SZ`): at the
/// default 64 KiB the download and the extractor would take turns every
/// few packets. 1 MiB is the unprivileged maximum by default.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Numbers this process's temp dirs (the pid tells processes apart).
static NEXT_DIR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An extraction under way; give it back to [`SandboxManager::end_extract`].
pub struct PendingExtract {
    blob: Digest,
    diff_id: Digest,
    /// The temp dir being filled.
    tmp: PathBuf,
    task: JoinHandle<Result<Extracted, SandboxError>>,
}

impl SandboxManager<'_> {
    /// Start extracting the layer `blob` (diff id `diff_id`) from bytes
    /// written to the returned pipe, in order, from the first. `None` when
    /// the layer dir is already complete. Dropping the pipe ends the input.
    pub fn begin_extract(
        &self,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<Option<(File, PendingExtract)>, ManagerError> {
        if self.store.has_layer_dir(diff_id) {
            return Ok(None);
        }
        crate::owners::adopt_layer_dirs(self.store, &self.mapping)
            .map_err(io("checking the owners of the store's layer dirs"))?;
        let limits = match self.extract_limits {
            Some(l) => l,
            None => cairn_layer::ExtractLimits::from_env().map_err(SandboxError::from)?,
        };
        let tmp_root = self.store.layout().tmp();
        let tmp = fresh_dir(&tmp_root)?;
        let (read, write) = stream_pipe()?;
        let (launcher, mapping) = (self.launcher.clone(), self.mapping.clone());
        let (label, dest) = (self.store.blob_path(blob), tmp.clone());
        let what = format!("layer {blob}");
        let task = std::thread::Builder::new()
            .name("layer-extract".into())
            .spawn(move || {
                launcher.extract_layer_from(
                    &mapping,
                    &label,
                    Some(read),
                    &dest,
                    limits,
                    &what,
                    false,
                )
            })
            .map_err(io("starting a layer extraction thread"))?;
        let pending = PendingExtract {
            blob: *blob,
            diff_id: *diff_id,
            tmp,
            task,
        };
        Ok(Some((File::from(write), pending)))
    }

    /// Finish an extraction begun by [`SandboxManager::begin_extract`]
    /// (its pipe must be dropped first). `verified`: the blob's bytes were
    /// all written and its digest and size checked out. Only then, and when
    /// its diff id is the expected one, is the dir returned, to be adopted
    /// by [`SandboxManager::adopt_extracted`]; otherwise it is removed, and
    /// the extraction's own failure, if any, is returned.
    pub fn end_extract(
        &self,
        pending: PendingExtract,
        verified: bool,
    ) -> Result<Option<ExtractedDir>, ManagerError> {
        let PendingExtract {
            blob,
            diff_id,
            tmp,
            task,
        } = pending;
        let extracted = task.join().unwrap_or_else(|_| {
            Err(SandboxError::TaskFailed(
                "extraction thread panicked".into(),
            ))
        });
        let kept = match extracted {
            Ok(got) if verified && got.diff_id == diff_id.to_string() => Ok(Some(())),
            Ok(got) if verified => Err(ManagerError::Sandbox(SandboxError::TaskFailed(format!(
                "layer {blob} has diff id {}, the config says {diff_id}",
                got.diff_id
            )))),
            // The download failed or was wrong: its own error says why.
            Ok(_) => Ok(None),
            Err(e) if verified => Err(e.into()),
            Err(_) => Ok(None),
        };
        match kept {
            Ok(Some(())) => Ok(Some(ExtractedDir { blob, diff_id, tmp })),
            other => {
                self.discard(&tmp);
                other.map(|_| None)
            }
        }
    }

    /// Make extracted dirs durable with one `syncfs` for all of them, then
    /// name each as its layer dir (one that is already there is dropped),
    /// with one fsync of `layers/` for all ([`cairn_store::Store::adopt_layer_dirs`]).
    pub fn adopt_extracted(&self, dirs: Vec<ExtractedDir>) -> Result<(), ManagerError> {
        if dirs.is_empty() {
            return Ok(());
        }
        let batch: Vec<_> = dirs
            .iter()
            .map(|d| (d.diff_id, d.tmp.clone(), TreeRef::Blob(d.blob)))
            .collect();
        let results = match self.store.adopt_layer_dirs(&batch) {
            Ok(r) => r,
            Err(e) => {
                dirs.iter().for_each(|d| self.discard(&d.tmp));
                return Err(e.into());
            }
        };
        let mut first_error = None;
        for (dir, adopted) in dirs.iter().zip(results) {
            match adopted {
                Ok(true) => {}
                Ok(false) => self.discard(&dir.tmp),
                Err(e) => {
                    self.discard(&dir.tmp);
                    first_error.get_or_insert(e.into());
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Remove a temp dir that will not be adopted. Best effort: what stays
    /// behind is in tmp/, garbage for GC.
    fn discard(&self, tmp: &std::path::Path) {
        let remover = TaskRemover {
            launcher: &self.launcher,
            mapping: &self.mapping,
        };
        let _ = remover.remove_tree(tmp);
    }
}

/// A layer extracted from a verified blob, waiting to be adopted.
pub struct ExtractedDir {
    blob: Digest,
    diff_id: Digest,
    tmp: PathBuf,
}

/// A new empty dir under `tmp_root`. (A leftover of an earlier process
/// with our pid is skipped: it is garbage, GC's.)
fn fresh_dir(tmp_root: &std::path::Path) -> Result<PathBuf, ManagerError> {
    loop {
        let n = NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = tmp_root.join(format!("layer-stream-{}-{n}", std::process::id()));
        match std::fs::create_dir(&tmp) {
            Ok(()) => return Ok(tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(format!("creating {}", tmp.display()))(e)),
        }
    }
}

/// A pipe for a layer stream: both ends close-on-exec (another helper
/// started meanwhile must not hold the write end open), enlarged.
fn stream_pipe() -> Result<(OwnedFd, OwnedFd), ManagerError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ManagerError::from(SandboxError::sys("creating a pipe", e)))?;
    // SAFETY: F_SETPIPE_SZ on a pipe we own; no pointers. Refused (a lower
    // pipe-max-size), the pipe keeps its default size: slower, still right.
    let _ = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&write),
            libc::F_SETPIPE_SZ,
            PIPE_SIZE,
        )
    };
    Ok((read, write))
}
