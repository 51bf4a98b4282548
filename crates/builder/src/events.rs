//! Typed progress events of a build, in the order things happen.
//!
//! Stages may run at once, so events of different stages interleave; every
//! event of a step names its stage and Dockerfile line. The caller's callback
//! is always called on the thread that called [`crate::Builder::build_with_events`].

use crate::explain::Reason;
use crate::StepOutcome;
use cairn_layer::Digest;
use serde::Serialize;
use std::sync::mpsc::Sender;
use std::time::Duration;

/// Which stream of a RUN a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Something that happened during a build. Serialises as one JSON object
/// with an `"event"` field (`step_started`, `output`, ...): what
/// `cairn build --progress json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BuildEvent {
    /// A step (FROM, an instruction, an ONBUILD trigger) starts.
    StepStarted {
        stage: usize,
        line: usize,
        text: String,
    },
    /// The step's layer came from the build cache: nothing runs.
    StepCached {
        stage: usize,
        line: usize,
        text: String,
    },
    /// The step is over (ran, cached or config-only).
    StepDone {
        stage: usize,
        line: usize,
        text: String,
        outcome: StepOutcome,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        duration: Duration,
        /// Why it ran (or would run), or why a config step's key changed;
        /// None for a cache hit or an unchanged step.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// One line a RUN wrote (without its newline; invalid UTF-8 replaced).
    Output {
        stage: usize,
        line: usize,
        stream: OutputStream,
        text: String,
    },
    /// A step made a new layer and stored it.
    LayerCommitted {
        stage: usize,
        line: usize,
        digest: Digest,
        diff_id: Digest,
        size: u64,
    },
    /// The image is stored and tagged.
    Finished {
        manifest: Digest,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        duration: Duration,
    },
    /// The build failed or was cancelled; nothing was tagged.
    Failed { error: String, cancelled: bool },
    /// A `FROM` image is being pulled: `done` of `total` bytes of one of
    /// its blobs are in (sent about every MiB and when the blob is complete).
    Transfer {
        stage: usize,
        line: usize,
        blob: Digest,
        done: u64,
        total: u64,
    },
    /// Something the user may want to fix that does not stop the build
    /// (a `--build-arg` no stage declares).
    Warning { message: String },
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
}

/// What stage threads send to the thread driving the build.
pub(crate) enum Msg {
    Event(BuildEvent),
    StageDone(
        usize,
        Box<Result<crate::state::StageState, crate::BuildError>>,
    ),
    /// A step's key changed since its last build: keep it for `--explain`.
    Record(cairn_store::cache::StepRecord),
}

/// Where a step sends its events (cheap to clone; one per step).
#[derive(Clone)]
pub(crate) struct StepCtx {
    pub tx: Sender<Msg>,
    pub stage: usize,
    pub line: usize,
    /// The build's own token: cancelled by the caller's token or by a
    /// failing sibling stage.
    pub cancel: cairn_sandbox::CancelToken,
    /// The caller's token, checked before each step too: a cancel stops
    /// the build before its next step even when the scheduler has not
    /// passed it on to `cancel` yet.
    pub caller: cairn_sandbox::CancelToken,
    /// The step's name across builds (Dockerfile, context, stage, position).
    pub slot: String,
}

impl cairn_registry::PullProgress for StepCtx {
    fn transferred(&self, blob: &Digest, done: u64, total: u64) {
        self.emit(BuildEvent::Transfer {
            stage: self.stage,
            line: self.line,
            blob: *blob,
            done,
            total,
        });
    }
}

impl StepCtx {
    pub fn emit(&self, event: BuildEvent) {
        // The receiver lives until every stage thread is joined.
        let _ = self.tx.send(Msg::Event(event));
    }

    pub fn record(&self, record: cairn_store::cache::StepRecord) {
        // As for events: the receiver outlives every stage thread.
        let _ = self.tx.send(Msg::Record(record));
    }

    pub fn output(&self, stream: OutputStream, text: String) {
        self.emit(BuildEvent::Output {
            stage: self.stage,
            line: self.line,
            stream,
            text,
        });
    }

    pub fn check_cancelled(&self) -> Result<(), crate::BuildError> {
        if self.cancel.is_cancelled() || self.caller.is_cancelled() {
            Err(crate::BuildError::Cancelled)
        } else {
            Ok(())
        }
    }
}
