//! The async (tokio) face of [`Cairn`]: every call runs the blocking one on
//! tokio's blocking pool with the same owned handle (no thread, store or
//! registry client per call), and a future dropped before it completes
//! cancels its work: the build's RUN or the exec's processes are killed
//! (a drop guard fires the call's cancel token).

use crate::builds::BuildRequest;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Cairn;
use crate::sandboxes::{ExecRequest, SandboxOptions};
use crate::snapshots::SnapshotRequest;
use cairn_builder::{BuildEvent, BuildResult, CancelToken};
use cairn_registry::{PullReport, PushReport};
use cairn_sandbox::manager::SandboxRecord;
use cairn_sandbox::{ExecOutput, RunOutcome, StdStream};
use cairn_snapshot::repo::{ListQuery, Page};
use cairn_snapshot::Snapshot;
use cairn_store::gc::GcReport;
use cairn_store::Digest;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Fires its token when dropped: a future dropped mid-call cancels the call.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The async surface of a [`Cairn`] handle (see [`Cairn::asynchronous`]).
/// Cheap to clone; every method needs a tokio runtime.
///
/// ```
/// cairn::init();
/// # let dir = tempfile::tempdir()?;
/// # drop(cairn_testsupport::store_with_busybox(dir.path()));
/// # let rt = tokio::runtime::Runtime::new()?;
/// # rt.block_on(async {
/// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?.asynchronous();
/// let sb = cairn.create_sandbox("busybox:fixture", cairn::SandboxOptions::default()).await?;
/// let out = cairn.exec_output(&sb.id, cairn::ExecRequest::new(["echo", "hi"])).await?;
/// assert_eq!(out.stdout, b"hi\n");
/// cairn.remove_sandbox(&sb.id).await?;
/// # Ok::<(), cairn::Error>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct AsyncCairn {
    cairn: Cairn,
}

impl Cairn {
    /// The async surface over this same handle.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// let a = cairn.asynchronous();
    /// assert_eq!(a.blocking().options().store(), dir.path());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn asynchronous(&self) -> AsyncCairn {
        AsyncCairn {
            cairn: self.clone(),
        }
    }
}

/// A runtime to spawn on, or an error saying there is none (not a panic).
fn runtime() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|_| {
        Error::new(
            ErrorKind::Unavailable,
            "cairn's async calls need a tokio runtime (call them from within one)",
        )
    })
}

impl AsyncCairn {
    /// The blocking handle this wraps.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// assert!(cairn.blocking().images()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn blocking(&self) -> &Cairn {
        &self.cairn
    }

    /// Run `f` on the blocking pool with a token that fires if the
    /// returned future is dropped first.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Cairn, &CancelToken) -> Result<T> + Send + 'static,
    {
        let cancel = CancelToken::new();
        let _guard = CancelOnDrop(cancel.clone());
        let cairn = self.cairn.clone();
        let task = runtime()?.spawn_blocking(move || f(&cairn, &cancel));
        match task.await {
            Ok(result) => result,
            Err(e) => Err(Error::new(
                ErrorKind::Internal,
                format!("a cairn call panicked or was aborted: {e}"),
            )),
        }
    }

    /// [`Cairn::build`]; dropping the future cancels the build.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?.asynchronous();
    /// let built = cairn.build(cairn::BuildRequest::text("FROM busybox:fixture\n").tag("localhost/a:1")).await?;
    /// assert_eq!(cairn.blocking().store().resolve("localhost/a:1")?, built.manifest);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn build(&self, req: BuildRequest) -> Result<BuildResult> {
        self.run(move |c, cancel| c.build_with(&req, cancel, &mut |_| {}))
            .await
    }

    /// [`Cairn::build_with`]: `events` hears every event (on the blocking
    /// thread); dropping the future cancels the build.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?.asynchronous();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// cairn.build_with(cairn::BuildRequest::text("FROM busybox:fixture\nRUN echo hi\n"), move |e| {
    ///     let _ = tx.send(e.clone());
    /// }).await?;
    /// assert!(rx.try_iter().any(|e| matches!(e, cairn::BuildEvent::Finished { .. })));
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn build_with(
        &self,
        req: BuildRequest,
        mut events: impl FnMut(&BuildEvent) + Send + 'static,
    ) -> Result<BuildResult> {
        self.run(move |c, cancel| c.build_with(&req, cancel, &mut events))
            .await
    }

    /// Start a build whose events come as a stream ([`BuildStream`]);
    /// dropping the stream before the end cancels the build.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?.asynchronous();
    /// let mut build = cairn.build_stream(cairn::BuildRequest::text("FROM busybox:fixture\nRUN echo hi\n"))?;
    /// let mut output = Vec::new();
    /// while let Some(event) = build.next_event().await {
    ///     if let cairn::BuildEvent::Output { text, .. } = event { output.push(text) }
    /// }
    /// build.finish().await?;
    /// assert_eq!(output, ["hi"]);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_stream(&self, req: BuildRequest) -> Result<BuildStream> {
        let rt = runtime()?;
        let cancel = CancelToken::new();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cairn = self.cairn.clone();
        let token = cancel.clone();
        let task = rt.spawn_blocking(move || {
            cairn.build_with(&req, &token, &mut |e| {
                // The stream may be gone: the build is then being cancelled.
                let _ = tx.send(e.clone());
            })
        });
        Ok(BuildStream {
            events: rx,
            task: Some(task),
            _guard: CancelOnDrop(cancel),
        })
    }

    /// [`Cairn::create_sandbox`].
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?.asynchronous();
    /// let sb = cairn.create_sandbox("busybox:fixture", cairn::SandboxOptions::default().name("x")).await?;
    /// assert_eq!(cairn.sandbox("x").await?.id, sb.id);
    /// assert_eq!(cairn.sandboxes().await?.len(), 1);
    /// cairn.remove_sandbox("x").await?;
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn create_sandbox(&self, image: &str, opts: SandboxOptions) -> Result<SandboxRecord> {
        let image = image.to_string();
        self.run(move |c, _| c.create_sandbox(&image, &opts)).await
    }

    /// [`Cairn::sandbox`] (see [`AsyncCairn::create_sandbox`]'s example).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// assert_eq!(cairn.sandbox("nope").await.unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn sandbox(&self, id_or_name: &str) -> Result<SandboxRecord> {
        let id = id_or_name.to_string();
        self.run(move |c, _| c.sandbox(&id)).await
    }

    /// [`Cairn::sandboxes`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// assert!(cairn.sandboxes().await?.is_empty());
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn sandboxes(&self) -> Result<Vec<SandboxRecord>> {
        self.run(|c, _| c.sandboxes()).await
    }

    /// [`Cairn::exec_output`]; dropping the future kills the command.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?.asynchronous();
    /// let sb = cairn.create_sandbox("busybox:fixture", Default::default()).await?;
    /// // A command that would run for a minute, given up after 100 ms:
    /// let exec = cairn.exec_output(&sb.id, cairn::ExecRequest::new(["sleep", "60"]));
    /// assert!(tokio::time::timeout(std::time::Duration::from_millis(100), exec).await.is_err());
    /// cairn.remove_sandbox(&sb.id).await?; // nothing of it is left running
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn exec_output(&self, sandbox: &str, req: ExecRequest) -> Result<ExecOutput> {
        let id = sandbox.to_string();
        self.run(move |c, cancel| c.exec_output_with(&id, &req, cancel))
            .await
    }

    /// [`Cairn::exec_streaming`]: `sink` gets output chunks as they come (on
    /// the blocking thread); dropping the future kills the command.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?.asynchronous();
    /// let sb = cairn.create_sandbox("busybox:fixture", Default::default()).await?;
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// let outcome = cairn.exec_streaming(&sb.id, cairn::ExecRequest::new(["echo", "hi"]),
    ///     move |stream, bytes| { let _ = tx.send((stream, bytes.to_vec())); }).await?;
    /// assert_eq!(outcome.exit_code, 0);
    /// assert_eq!(rx.recv().await, Some((cairn::StdStream::Stdout, b"hi\n".to_vec())));
    /// # cairn.remove_sandbox(&sb.id).await?;
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn exec_streaming(
        &self,
        sandbox: &str,
        req: ExecRequest,
        mut sink: impl FnMut(StdStream, &[u8]) + Send + 'static,
    ) -> Result<RunOutcome> {
        let id = sandbox.to_string();
        self.run(move |c, cancel| c.exec_streaming(&id, &req, cancel, &mut sink))
            .await
    }

    /// [`Cairn::write_file`].
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?.asynchronous();
    /// let sb = cairn.create_sandbox("busybox:fixture", Default::default()).await?;
    /// cairn.write_file(&sb.id, "/tmp/a", b"hello".to_vec(), 0o600).await?;
    /// assert_eq!(cairn.read_file(&sb.id, "/tmp/a").await?, b"hello");
    /// let manifest = cairn.commit_sandbox(&sb.id, "localhost/with-a:1").await?;
    /// assert_eq!(cairn.blocking().store().resolve("localhost/with-a:1")?, manifest);
    /// # cairn.remove_sandbox(&sb.id).await?;
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn write_file(
        &self,
        sandbox: &str,
        path: &str,
        data: Vec<u8>,
        mode: u32,
    ) -> Result<()> {
        let (id, path) = (sandbox.to_string(), path.to_string());
        self.run(move |c, _| c.write_file(&id, &path, &data, mode))
            .await
    }

    /// [`Cairn::read_file`] (see [`AsyncCairn::write_file`]'s example).
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// assert_eq!(cairn.read_file("nope", "/x").await.unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn read_file(&self, sandbox: &str, path: &str) -> Result<Vec<u8>> {
        let (id, path) = (sandbox.to_string(), path.to_string());
        self.run(move |c, _| c.read_file(&id, &path)).await
    }

    /// [`Cairn::commit_sandbox`] (see [`AsyncCairn::write_file`]'s example).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// let err = cairn.commit_sandbox("nope", "localhost/x:1").await.unwrap_err();
    /// assert!(matches!(err.kind(), cairn::ErrorKind::NotFound | cairn::ErrorKind::Invalid));
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn commit_sandbox(&self, sandbox: &str, name: &str) -> Result<Digest> {
        let (id, name) = (sandbox.to_string(), name.to_string());
        self.run(move |c, _| c.commit_sandbox(&id, &name)).await
    }

    /// [`Cairn::remove_sandbox`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// assert_eq!(cairn.remove_sandbox("nope").await.unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn remove_sandbox(&self, sandbox: &str) -> Result<()> {
        let id = sandbox.to_string();
        self.run(move |c, _| c.remove_sandbox(&id)).await
    }

    /// [`Cairn::create_snapshot`]; `log` hears each progress line.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # let ctx = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?.asynchronous();
    /// let req = cairn::SnapshotRequest::dockerfile("app:1", "FROM busybox:fixture\n", ctx.path());
    /// let snap = cairn.create_snapshot("acme", req, |_| {}).await?;
    /// assert_eq!(cairn.snapshot("acme", "app:1").await?.id, snap.id);
    /// let sb = cairn.start_sandbox("acme", "app:1", Default::default()).await?;
    /// cairn.remove_sandbox(&sb.id).await?;
    /// assert!(cairn.snapshot_log("acme", "app:1").await?.contains("active"));
    /// cairn.delete_snapshot("acme", "app:1").await?;
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn create_snapshot(
        &self,
        org: &str,
        req: SnapshotRequest,
        mut log: impl FnMut(&str) + Send + 'static,
    ) -> Result<Snapshot> {
        let org = org.to_string();
        self.run(move |c, _| c.create_snapshot(&org, &req, &mut log))
            .await
    }

    /// [`Cairn::snapshot`] (see [`AsyncCairn::create_snapshot`]'s example).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// assert_eq!(cairn.snapshot("acme", "nope").await.unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn snapshot(&self, org: &str, key: &str) -> Result<Snapshot> {
        let (org, key) = (org.to_string(), key.to_string());
        self.run(move |c, _| c.snapshot(&org, &key)).await
    }

    /// [`Cairn::snapshots`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// let page = cairn.snapshots(cairn::snapshot::repo::ListQuery::new("acme")).await?;
    /// assert!(page.items.is_empty());
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn snapshots(&self, query: ListQuery) -> Result<Page> {
        self.run(move |c, _| c.snapshots(&query)).await
    }

    /// [`Cairn::delete_snapshot`] (see [`AsyncCairn::create_snapshot`]'s example).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// assert_eq!(cairn.delete_snapshot("acme", "x").await.unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn delete_snapshot(&self, org: &str, key: &str) -> Result<Snapshot> {
        let (org, key) = (org.to_string(), key.to_string());
        self.run(move |c, _| c.delete_snapshot(&org, &key)).await
    }

    /// [`Cairn::snapshot_log`] (see [`AsyncCairn::create_snapshot`]'s example).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// assert_eq!(cairn.snapshot_log("acme", "x").await.unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn snapshot_log(&self, org: &str, key: &str) -> Result<String> {
        let (org, key) = (org.to_string(), key.to_string());
        self.run(move |c, _| c.snapshot_log(&org, &key)).await
    }

    /// [`Cairn::start_sandbox`] (see [`AsyncCairn::create_snapshot`]'s example).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// let err = cairn.start_sandbox("acme", "x", Default::default()).await.unwrap_err();
    /// assert!(matches!(err.kind(), cairn::ErrorKind::NotFound | cairn::ErrorKind::Invalid));
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn start_sandbox(
        &self,
        org: &str,
        key: &str,
        opts: SandboxOptions,
    ) -> Result<SandboxRecord> {
        let (org, key) = (org.to_string(), key.to_string());
        self.run(move |c, _| c.start_sandbox(&org, &key, &opts))
            .await
    }

    /// [`Cairn::pull`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// let err = cairn.pull("127.0.0.1:1/nothing:here").await.unwrap_err();
    /// assert_eq!(err.kind(), cairn::ErrorKind::Unavailable);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn pull(&self, reference: &str) -> Result<PullReport> {
        let reference = reference.to_string();
        self.run(move |c, _| c.pull(&reference)).await
    }

    /// [`Cairn::push`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// let err = cairn.push("nothing", "127.0.0.1:1/x:y").await.unwrap_err();
    /// assert_eq!(err.kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn push(&self, image: &str, dest: &str) -> Result<PushReport> {
        let (image, dest) = (image.to_string(), dest.to_string());
        self.run(move |c, _| c.push(&image, &dest)).await
    }

    /// [`Cairn::gc`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?.asynchronous();
    /// assert_eq!(cairn.gc(None).await?.blobs_removed, 0);
    /// # Ok::<(), cairn::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn gc(&self, cache_budget: Option<u64>) -> Result<GcReport> {
        self.run(move |c, _| c.gc(cache_budget)).await
    }
}

/// A build in progress whose events arrive as a stream (also a
/// `futures_core::Stream` of [`BuildEvent`]); dropping it cancels the build.
pub struct BuildStream {
    events: tokio::sync::mpsc::UnboundedReceiver<BuildEvent>,
    task: Option<tokio::task::JoinHandle<Result<BuildResult>>>,
    _guard: CancelOnDrop,
}

impl BuildStream {
    /// The next event; None once the build is over (then call
    /// [`BuildStream::finish`]). See [`AsyncCairn::build_stream`].
    pub async fn next_event(&mut self) -> Option<BuildEvent> {
        self.events.recv().await
    }

    /// Cancel the build now (the stream then ends with a `Failed` event).
    pub fn cancel(&self) {
        self._guard.0.cancel();
    }

    /// Wait for the build's result.
    pub async fn finish(mut self) -> Result<BuildResult> {
        let Some(task) = self.task.take() else {
            return Err(Error::new(ErrorKind::Internal, "build already finished"));
        };
        match task.await {
            Ok(result) => result,
            Err(e) => Err(Error::new(
                ErrorKind::Internal,
                format!("the build panicked or was aborted: {e}"),
            )),
        }
    }
}

impl futures_core::Stream for BuildStream {
    type Item = BuildEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BuildEvent>> {
        self.events.poll_recv(cx)
    }
}
