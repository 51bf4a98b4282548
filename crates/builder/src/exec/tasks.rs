//! The filesystem tasks the executor has done for it: make a stage's layers
//! available, run a RUN's command in a sandbox, write into a step's upper dir
//! as the mapped user, commit an upper dir as a layer, remove scratch trees.
//!
//! The executor only ever calls these through [`FsTasks`], held by the
//! per-build [`crate::Builder`]: [`SandboxTasks`] does them for real (helper
//! tasks in user namespaces, the store's one commit path), and the
//! executor's tests swap in a fake that needs neither root nor namespaces.

use crate::BuildError;
use cairn_layer::{Compression, Digest, ExtractLimits};
use cairn_registry::LayerSink;
use cairn_sandbox::chmod::Chmod;
use cairn_sandbox::idmap::IdMapping;
use cairn_sandbox::manager::SandboxManager;
use cairn_sandbox::{Launcher, RunControl, RunOutcome, RunSpec, RunStdio, Task, UpperLayerWriter};
use cairn_store::{CacheRecord, CommittedLayer, Store};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// `COPY --from`: paths copied out of a stack of layer dirs (seen as one
/// read-only tree at `mountpoint`, so whiteouts and opaque dirs hold) into
/// `dest`, keeping owners unless `owner` is given.
pub(crate) struct LayerCopy {
    pub layers: Vec<PathBuf>,
    pub mountpoint: PathBuf,
    pub sources: Vec<String>,
    pub dest: PathBuf,
    pub dest_is_dir: bool,
    /// Container IDs (the task runs as the mapped user).
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<Chmod>,
}

/// How a step's upper dir becomes a layer.
pub(crate) struct LayerCommit<'a> {
    pub compression: Compression,
    /// `--timestamp`: clamp mtimes.
    pub timestamp: Option<i64>,
    /// The build-cache entry recorded with the layer.
    pub cache: Option<CacheRecord<'a>>,
}

/// The few filesystem operations the executor needs (see the module doc).
/// Paths are the store's: layer dirs are `store.layer_dir(diff_id)`, scratch
/// dirs are under its tmp/.
pub(crate) trait FsTasks: Send + Sync {
    /// Make sure each layer (blob digest, diff id) has its extracted dir.
    fn extract_layers(&self, layers: &[(Digest, Digest)]) -> Result<(), BuildError>;

    /// Where a pull (FROM, a registry-cache import) hands the layers it
    /// downloads, to be extracted as they come.
    fn layer_sink(&self) -> Box<dyn LayerSink + '_>;

    /// Run `spec` (its command over its rootfs, with its mounts) in a
    /// sandbox, whose own files (/etc/hosts, …) go in the scratch dir `dir`;
    /// `spec.bind_files` is filled in here.
    fn run(
        &self,
        dir: &Path,
        spec: &RunSpec,
        stdio: RunStdio,
        control: &RunControl,
    ) -> Result<RunOutcome, BuildError>;

    /// Extract a tar (or layer blob) into `dest` as the mapped user,
    /// within `limits`; `what` names it in errors.
    fn extract_tar(
        &self,
        blob: &Path,
        dest: &Path,
        limits: ExtractLimits,
        what: &str,
    ) -> Result<(), BuildError>;

    /// [`FsTasks::extract_tar`] of the tar read from `stream` (the read
    /// end of a pipe the caller writes as this runs), so nothing is staged
    /// on disk. By default the stream is saved next to `dest` first.
    fn extract_tar_stream(
        &self,
        stream: OwnedFd,
        dest: &Path,
        limits: ExtractLimits,
        what: &str,
    ) -> Result<(), BuildError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let mut saved = tempfile::NamedTempFile::new_in(dir).map_err(BuildError::io(dir))?;
        std::io::copy(&mut std::fs::File::from(stream), saved.as_file_mut())
            .map_err(BuildError::io(saved.path()))?;
        self.extract_tar(saved.path(), dest, limits, what)
    }

    /// See [`LayerCopy`].
    fn copy_from_layers(&self, copy: LayerCopy) -> Result<(), BuildError>;

    /// Commit `upper` as a layer through the store's commit path (blob
    /// written and checked, the dir adopted as the layer dir, the cache
    /// entry recorded).
    fn commit_layer(
        &self,
        upper: &Path,
        commit: LayerCommit<'_>,
    ) -> Result<CommittedLayer, BuildError>;

    /// [`FsTasks::commit_layer`] of a tree whose writer knows part of it
    /// (a root COPY; see `copy::known`). The layer is the same.
    fn commit_known_layer(
        &self,
        upper: &Path,
        commit: LayerCommit<'_>,
        _known: &cairn_layer::KnownEntries,
    ) -> Result<CommittedLayer, BuildError> {
        self.commit_layer(upper, commit)
    }

    /// Remove a scratch tree whose files may belong to subordinate IDs.
    fn remove_tree(&self, dir: &Path) -> Result<(), BuildError>;

    /// Remove each path that is an empty dir or file, as the mapped user.
    fn remove_empty(&self, paths: Vec<PathBuf>) -> Result<(), BuildError>;
}

/// The real tasks: helper tasks of `launcher` in user namespaces with
/// `mapping`, the store's sandbox manager and its commit path.
pub(crate) struct SandboxTasks<'s> {
    pub store: &'s Store,
    pub launcher: Launcher,
    pub mapping: IdMapping,
}

impl SandboxTasks<'_> {
    fn manager(&self) -> SandboxManager<'_> {
        SandboxManager::new(self.store, self.launcher.clone())
    }

    fn task(&self, task: Task) -> Result<(), BuildError> {
        self.launcher.run_task(&self.mapping, task)?;
        Ok(())
    }
}

impl FsTasks for SandboxTasks<'_> {
    fn extract_layers(&self, layers: &[(Digest, Digest)]) -> Result<(), BuildError> {
        self.manager().extract_layers(layers)?;
        Ok(())
    }

    fn layer_sink(&self) -> Box<dyn LayerSink + '_> {
        Box::new(crate::layer_sink::Extractor(self.manager()))
    }

    fn run(
        &self,
        dir: &Path,
        spec: &RunSpec,
        stdio: RunStdio,
        control: &RunControl,
    ) -> Result<RunOutcome, BuildError> {
        let mut spec = spec.clone();
        spec.bind_files = self.manager().etc_files(dir, &spec.hostname)?;
        Ok(self.launcher.run_with(&spec, stdio, control)?)
    }

    fn extract_tar(
        &self,
        blob: &Path,
        dest: &Path,
        limits: ExtractLimits,
        what: &str,
    ) -> Result<(), BuildError> {
        self.launcher
            .extract_layer(&self.mapping, blob, dest, limits, what, false)?;
        Ok(())
    }

    fn extract_tar_stream(
        &self,
        stream: OwnedFd,
        dest: &Path,
        limits: ExtractLimits,
        what: &str,
    ) -> Result<(), BuildError> {
        self.launcher.extract_layer_from(
            &self.mapping,
            Path::new(what),
            Some(stream),
            dest,
            limits,
            what,
            false,
        )?;
        Ok(())
    }

    fn copy_from_layers(&self, copy: LayerCopy) -> Result<(), BuildError> {
        self.task(Task::CopyFromLayers {
            layers: copy.layers,
            mountpoint: copy.mountpoint,
            sources: copy.sources,
            dest: copy.dest,
            dest_is_dir: copy.dest_is_dir,
            owner: copy.owner,
            chmod: copy.chmod,
        })
    }

    fn commit_layer(
        &self,
        upper: &Path,
        commit: LayerCommit<'_>,
    ) -> Result<CommittedLayer, BuildError> {
        let writer = UpperLayerWriter {
            launcher: &self.launcher,
            mapping: &self.mapping,
            compression: commit.compression,
            // With clamped mtimes (whose tar differs from the dir's own) the
            // task also takes the dir's tree digest.
            timestamp: commit.timestamp,
        };
        Ok(self.store.commit_layer(&writer, upper, commit.cache)?)
    }

    /// As root, the commit is written here, not in a task: the caller
    /// can read the tree it just wrote, and the known entries live in its
    /// memory. Clamped mtimes (which also need the dir's own tree digest)
    /// take the task's path.
    fn commit_known_layer(
        &self,
        upper: &Path,
        commit: LayerCommit<'_>,
        known: &cairn_layer::KnownEntries,
    ) -> Result<CommittedLayer, BuildError> {
        if commit.timestamp.is_some() || !nix::unistd::geteuid().is_root() {
            return self.commit_layer(upper, commit);
        }
        let writer = crate::copy::KnownLayerWriter {
            known,
            compression: commit.compression,
            id_map: &self.mapping.map,
        };
        self.store.commit_layer(&writer, upper, commit.cache)
    }

    fn remove_tree(&self, dir: &Path) -> Result<(), BuildError> {
        self.task(Task::RemoveTree(dir.to_path_buf()))
    }

    fn remove_empty(&self, paths: Vec<PathBuf>) -> Result<(), BuildError> {
        self.task(Task::RemoveEmpty(paths))
    }
}
