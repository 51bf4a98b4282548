//! cairn-registry: images in and out of OCI registries.
//!
//! Built on `oci-client`'s blob-level calls; this crate adds what a builder
//! needs on top: credentials from the Docker and containers auth files,
//! retries with backoff, verified streaming into the store, push that
//! skips and mounts what the registry already has, and regions.
//!
//! The API is blocking: [`Registry`] owns a small tokio runtime and runs
//! each call to completion on it, so callers (the build engine, the CLI)
//! stay plain threads.

pub mod artifact;
pub mod auth;
mod blob_transfer;
pub mod error;
mod login;
pub mod manifest_fetch;
mod pull;
mod push;
pub mod regions;
mod retry;
mod session;
mod unpack;

pub use artifact::{ArtifactSpec, FetchedArtifact};
pub use error::{RegistryError, Result, Target};
pub use regions::Regions;
pub use retry::RetryPolicy;
pub use session::{is_loopback, Platform, RegistryOptions, DEFAULT_MONOLITHIC_MAX};

use cairn_store::{Digest, ImageRef, Store};
use session::Session;

/// Told about each layer of a pull, so layers are extracted while others
/// download. Called from a thread of the pull's own.
pub trait LayerSink: Sync {
    /// The layer's blob is in the store: extract it.
    fn layer_ready(&self, blob: &Digest, diff_id: &Digest) -> std::result::Result<(), String>;

    /// The layer's blob is about to download: start extracting it from the
    /// returned writer, which gets every byte of the blob in order and is
    /// dropped at the end (or when the download fails). `None`: this sink
    /// extracts stored blobs only ([`LayerSink::layer_ready`] follows).
    /// Called from the download's async task: it must not block.
    fn begin_stream(
        &self,
        _blob: &Digest,
        _diff_id: &Digest,
    ) -> std::result::Result<Option<(LayerFeed, StreamTicket)>, String> {
        Ok(None)
    }

    /// The download begun with [`LayerSink::begin_stream`] ended (its
    /// writer is dropped). `verified`: the whole blob went through the
    /// writer and its digest and size checked out; only then may the
    /// extracted layer be kept. Otherwise it must be thrown away (and, if
    /// the blob is stored after all, `layer_ready` follows). A layer kept
    /// comes back as a ticket for [`LayerSink::adopt`].
    fn end_stream(
        &self,
        _ticket: StreamTicket,
        _verified: bool,
    ) -> std::result::Result<Option<StreamTicket>, String> {
        Ok(None)
    }

    /// At the end of the pull: make the kept layers durable (once for
    /// all of them) and name them.
    fn adopt(&self, _kept: Vec<StreamTicket>) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// Where a streamed layer's bytes go (e.g. the pipe to an extractor).
pub type LayerFeed = Box<dyn std::io::Write + Send>;

/// A sink's own record of an extraction under way, handed back to
/// [`LayerSink::end_stream`].
pub struct StreamTicket(pub Box<dyn std::any::Any + Send>);

/// Told how far each blob of a pull or push has come: after every MiB or so
/// of a download, after each chunk an upload hands to the HTTP client, and
/// when the blob is complete. Called from the transfer's worker threads.
pub trait PullProgress: Sync {
    fn transferred(&self, blob: &Digest, done: u64, total: u64);
}

/// What a pull did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PullReport {
    pub reference: String,
    pub manifest: Digest,
    pub blobs_fetched: usize,
    pub blobs_present: usize,
    pub bytes_fetched: u64,
    pub retries: u32,
}

/// What a push did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PushReport {
    pub destination: String,
    pub manifest: Digest,
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_mounted: usize,
    /// Blobs the registry already had (a manifest it had counts all of its blobs).
    pub blobs_present: usize,
    pub retries: u32,
}

/// A pull resolved to its manifest and config, in memory and verified,
/// before any store was needed (see [`Registry::resolve`]).
pub struct ResolvedPull {
    image: ImageRef,
    sess: Session,
    resolved: pull::Resolved,
}

/// A registry client for one process: options plus the runtime.
pub struct Registry {
    /// Always Some until dropped (taken out in `drop`).
    rt: Option<tokio::runtime::Runtime>,
    opts: RegistryOptions,
    /// HTTP clients per registry host, set up once (see [`session::ClientCache`]).
    clients: session::ClientCache,
}

impl Drop for Registry {
    /// A runtime dropped inside another runtime's async context panics
    /// ("Cannot drop a runtime in a context where blocking is not
    /// allowed"), and async services drop clients there. Shutting it down
    /// in the background never blocks: its idle workers exit on their own.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Registry {
    pub fn new(opts: RegistryOptions) -> Result<Registry> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-registry")
            .enable_all()
            .build()
            .map_err(RegistryError::io("start the registry runtime"))?;
        Ok(Registry {
            rt: Some(rt),
            opts,
            clients: Default::default(),
        })
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// Set up the HTTP clients for `reference`'s registry now (TLS config,
    /// and the system's CA roots that oci-client loads for each of its
    /// clients: ~10 ms), so that a caller can do it while it opens its
    /// store; the next pull or push to that host takes them from the
    /// cache. Errors are not reported here: the pull that follows meets
    /// them again and says so.
    pub fn prepare(&self, reference: &str) {
        let Ok(image) = parse_ref(reference) else {
            return;
        };
        self.block_on(Session::prepare(
            &self.opts,
            &self.clients,
            image.registry(),
        ));
    }

    /// Pull `reference` into the store and tag it there under its full name.
    pub fn pull(
        &self,
        store: &Store,
        reference: &str,
        sink: Option<&dyn LayerSink>,
    ) -> Result<PullReport> {
        self.pull_with_progress(store, reference, sink, None)
    }

    /// [`Registry::pull`], telling `progress` how each blob download goes.
    pub fn pull_with_progress(
        &self,
        store: &Store,
        reference: &str,
        sink: Option<&dyn LayerSink>,
        progress: Option<&dyn PullProgress>,
    ) -> Result<PullReport> {
        self.pull_platform(store, reference, &self.opts.platform, sink, progress)
    }

    /// [`Registry::pull_with_progress`] of `platform`'s image of an index
    /// (a build's `--platform` or `FROM --platform`), whatever the
    /// registry's default platform is.
    pub fn pull_platform(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
        sink: Option<&dyn LayerSink>,
        progress: Option<&dyn PullProgress>,
    ) -> Result<PullReport> {
        let image = parse_ref(reference)?;
        unpack::with_sink(sink, |unpack| {
            self.block_on(async {
                let sess = Session::open(&self.opts, &self.clients, image.registry()).await?;
                let resolved = pull::resolve(&sess, Some(store), &image, platform).await?;
                pull::pull_resolved(
                    &sess,
                    store,
                    &image,
                    resolved,
                    self.opts.max_parallel,
                    unpack,
                    progress,
                )
                .await
            })
        })
    }

    /// The first half of a pull of `reference` (this registry's platform),
    /// which needs no store: the clients set up, the manifest (through an
    /// index) and the config fetched into memory and verified. A caller
    /// does it while it opens its store, then finishes with
    /// [`Registry::pull_resolved`].
    pub fn resolve(&self, reference: &str) -> Result<ResolvedPull> {
        let image = parse_ref(reference)?;
        self.block_on(async {
            let sess = Session::open(&self.opts, &self.clients, image.registry()).await?;
            let resolved = pull::resolve(&sess, None, &image, &self.opts.platform).await?;
            Ok(ResolvedPull {
                image,
                sess,
                resolved,
            })
        })
    }

    /// The rest of a pull begun with [`Registry::resolve`]: the config
    /// stored, the layers downloaded (and given to `sink`), the manifest
    /// recorded and tagged; `progress` as for
    /// [`Registry::pull_with_progress`].
    pub fn pull_resolved(
        &self,
        store: &Store,
        resolved: ResolvedPull,
        sink: Option<&dyn LayerSink>,
        progress: Option<&dyn PullProgress>,
    ) -> Result<PullReport> {
        let ResolvedPull {
            image,
            sess,
            resolved,
        } = resolved;
        unpack::with_sink(sink, |unpack| {
            self.block_on(pull::pull_resolved(
                &sess,
                store,
                &image,
                resolved,
                self.opts.max_parallel,
                unpack,
                progress,
            ))
        })
    }

    /// Push the store image `image` (a name or digest) to `dest`.
    pub fn push(&self, store: &Store, image: &str, dest: &str) -> Result<PushReport> {
        let manifest = store.resolve(image)?;
        let dest = parse_ref(dest)?;
        self.block_on(self.push_one(store, &manifest, &dest, None))
    }

    /// Push one store image to several destinations at once (regions);
    /// one result per destination, in order.
    pub fn push_many(
        &self,
        store: &Store,
        image: &str,
        dests: &[ImageRef],
    ) -> Result<Vec<Result<PushReport>>> {
        self.push_many_with_progress(store, image, dests, None)
    }

    /// [`Registry::push_many`], telling `progress` as each blob starts
    /// (0 of its size), as its upload's bytes go out, and as it is done
    /// (present, mounted or uploaded).
    pub fn push_many_with_progress(
        &self,
        store: &Store,
        image: &str,
        dests: &[ImageRef],
        progress: Option<&dyn PullProgress>,
    ) -> Result<Vec<Result<PushReport>>> {
        let manifest = store.resolve(image)?;
        Ok(self.block_on(futures_util::future::join_all(
            dests
                .iter()
                .map(|d| self.push_one(store, &manifest, d, progress)),
        )))
    }

    async fn push_one(
        &self,
        store: &Store,
        manifest: &Digest,
        dest: &ImageRef,
        progress: Option<&dyn PullProgress>,
    ) -> Result<PushReport> {
        let sess = Session::open(&self.opts, &self.clients, dest.registry()).await?;
        push::push(
            &sess,
            store,
            manifest,
            dest,
            self.opts.max_parallel,
            self.opts.monolithic_max,
            progress,
        )
        .await
    }

    /// Check credentials against a registry the way `docker login` does:
    /// Ok only if the registry accepts them.
    pub fn check_login(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        self.block_on(login::check(&self.opts, registry, username, password))
    }

    /// Run `f` to completion on our runtime. Called from inside another
    /// tokio runtime (an async service calling us, even from
    /// `spawn_blocking`), `block_on` would panic; there it runs on a
    /// thread of its own, outside that runtime's context.
    fn block_on<F: std::future::Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        let Some(rt) = &self.rt else {
            unreachable!("the runtime is only taken out in drop")
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return rt.block_on(f);
        }
        std::thread::scope(|s| match s.spawn(|| rt.block_on(f)).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }
}

/// A reference as the user typed it, normalised (`busybox` is
/// `docker.io/library/busybox:latest`).
pub fn parse_ref(input: &str) -> Result<ImageRef> {
    ImageRef::parse(input).map_err(|e| RegistryError::BadReference {
        input: input.to_string(),
        reason: e.to_string(),
    })
}
