//! An in-process [`FsTasks`] for the executor's tests: no sandbox, no
//! namespaces, no root. Layers are committed through the real store (a
//! temp dir), so cache hits, layer dirs and images are the store's own.
//!
//! A RUN's script is a `;`-separated list of actions: `fail` (exit 3),
//! `meet` (wait, up to 10 s, until another RUN meets too: two stages must be
//! running at once), `cancel` (cancel the caller's token), `wait-for-cancel`
//! (until the step's token fires, up to 10 s), anything else writes a file
//! of that name at the root of the step's upper dir.

use crate::exec::{FsTasks, LayerCommit, LayerCopy};
use crate::BuildError;
use cairn_layer::{Compression, Digest, ExtractLimits};
use cairn_registry::LayerSink;
use cairn_sandbox::{CancelToken, RunControl, RunOutcome, RunSpec, RunStdio};
use cairn_store::{BlobWriter, CommittedLayer, LayerReport, LayerWriter, Store};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(10);

pub(super) struct FakeTasks<'s> {
    store: &'s Store,
    /// Every call, in order: `run:SCRIPT`, `copy_from:SOURCES`, `commit`,
    /// `extract:N`, `extract_tar`, `remove_tree`, `remove_empty`.
    calls: Mutex<Vec<String>>,
    /// What `cancel` cancels (the request's token).
    caller: CancelToken,
    /// RUNs that reached `meet`.
    met: (Mutex<usize>, Condvar),
}

impl<'s> FakeTasks<'s> {
    pub fn new(store: &'s Store, caller: CancelToken) -> Self {
        FakeTasks {
            store,
            calls: Mutex::new(Vec::new()),
            caller,
            met: (Mutex::new(0), Condvar::new()),
        }
    }

    /// The calls so far, and forget them.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    /// Wait for a second RUN to meet; false when none came.
    fn meet(&self) -> bool {
        let (count, arrived) = &self.met;
        let mut n = count.lock().unwrap();
        *n += 1;
        arrived.notify_all();
        let (n, _) = arrived.wait_timeout_while(n, PATIENCE, |n| *n < 2).unwrap();
        *n >= 2
    }
}

fn exited(exit_code: i32) -> RunOutcome {
    RunOutcome {
        exit_code,
        failure: None,
        timed_out: false,
        cancelled: false,
        exec_after: None,
    }
}

fn internal(e: impl std::fmt::Display) -> BuildError {
    BuildError::Internal(format!("fake tasks: {e}"))
}

impl FsTasks for FakeTasks<'_> {
    fn extract_layers(&self, layers: &[(Digest, Digest)]) -> Result<(), BuildError> {
        self.record(format!("extract:{}", layers.len()));
        match layers.iter().find(|(_, d)| !self.store.has_layer_dir(d)) {
            Some((_, d)) => Err(internal(format!("layer {d} has no dir"))),
            None => Ok(()),
        }
    }

    fn layer_sink(&self) -> Box<dyn LayerSink + '_> {
        Box::new(NoPulls)
    }

    fn run(
        &self,
        _dir: &Path,
        spec: &RunSpec,
        _stdio: RunStdio,
        control: &RunControl,
    ) -> Result<RunOutcome, BuildError> {
        let script = spec.process.args.last().cloned().unwrap_or_default();
        self.record(format!("run:{script}"));
        for action in script.split(';') {
            match action {
                "fail" => return Ok(exited(3)),
                "meet" if !self.meet() => return Ok(exited(99)),
                "meet" => {}
                "cancel" => self.caller.cancel(),
                "wait-for-cancel" => {
                    let deadline = Instant::now() + PATIENCE;
                    while Instant::now() < deadline {
                        if control.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                            self.record("cancelled".into());
                            return Ok(RunOutcome {
                                cancelled: true,
                                ..exited(137)
                            });
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                name => {
                    let path = spec.rootfs.upper.join(name);
                    std::fs::write(&path, name).map_err(BuildError::io(&path))?;
                }
            }
        }
        Ok(exited(0))
    }

    fn extract_tar(
        &self,
        blob: &Path,
        dest: &Path,
        limits: ExtractLimits,
        _what: &str,
    ) -> Result<(), BuildError> {
        self.record("extract_tar".into());
        let file = std::fs::File::open(blob).map_err(BuildError::io(blob))?;
        let opts = cairn_layer::ExtractOptions {
            limits,
            ..Default::default()
        };
        cairn_layer::extract_layer(file, dest, &opts).map_err(internal)?;
        Ok(())
    }

    fn copy_from_layers(&self, copy: LayerCopy) -> Result<(), BuildError> {
        self.record(format!("copy_from:{}", copy.sources.join(",")));
        for source in &copy.sources {
            let rel = source.trim_start_matches('/');
            // The topmost layer that has it (the tests use no whiteouts).
            let found = copy
                .layers
                .iter()
                .rev()
                .map(|l| l.join(rel))
                .find(|p| p.symlink_metadata().is_ok())
                .ok_or_else(|| internal(format!("{source} is in no layer")))?;
            let dest = match copy.dest_is_dir {
                true => copy.dest.join(found.file_name().unwrap_or_default()),
                false => copy.dest.clone(),
            };
            copy_tree(&found, &dest)?;
        }
        Ok(())
    }

    fn commit_layer(
        &self,
        upper: &Path,
        commit: LayerCommit<'_>,
    ) -> Result<CommittedLayer, BuildError> {
        self.record("commit".into());
        let writer = InProcessWriter {
            compression: commit.compression,
            timestamp: commit.timestamp,
        };
        self.store.commit_layer(&writer, upper, commit.cache)
    }

    fn remove_tree(&self, dir: &Path) -> Result<(), BuildError> {
        self.record("remove_tree".into());
        std::fs::remove_dir_all(dir).map_err(BuildError::io(dir))
    }

    fn remove_empty(&self, paths: Vec<PathBuf>) -> Result<(), BuildError> {
        self.record("remove_empty".into());
        cairn_sandbox::remove_empty(&paths)
            .map_err(|(path, source)| BuildError::Io { path, source })
    }
}

/// Copy a file or a dir's tree (regular files and dirs: all the tests make).
fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(BuildError::io(parent))?;
    }
    if !from.is_dir() {
        std::fs::copy(from, to).map_err(BuildError::io(from))?;
        return Ok(());
    }
    std::fs::create_dir_all(to).map_err(BuildError::io(to))?;
    for entry in std::fs::read_dir(from).map_err(BuildError::io(from))? {
        let entry = entry.map_err(BuildError::io(from))?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Writes an upper dir's layer in this process (the real one is a task in
/// the user namespace).
struct InProcessWriter {
    compression: Compression,
    timestamp: Option<i64>,
}

impl LayerWriter for InProcessWriter {
    type Error = BuildError;

    fn write_layer(&self, dir: &Path, out: &mut BlobWriter) -> Result<LayerReport, BuildError> {
        let opts = cairn_layer::LayerOptions {
            compression: self.compression,
            timestamp: self.timestamp,
            ..Default::default()
        };
        let source = cairn_layer::DiffSource::OverlayUpper {
            upper: dir,
            flavour: cairn_layer::OverlayFlavour::UserXattr,
        };
        let written = cairn_layer::write_layer_unhashed(source, &opts, out).map_err(internal)?;
        Ok(LayerReport {
            diff_id: written.diff_id,
            size: written.size,
            media_type: written.media_type.to_string(),
            tree: None,
        })
    }
}

/// The tests pull nothing.
struct NoPulls;

impl LayerSink for NoPulls {
    fn layer_ready(&self, _blob: &Digest, _diff_id: &Digest) -> Result<(), String> {
        Err("the executor's tests pull nothing".into())
    }
}
