//! Builds through the handle: a [`BuildRequest`] with defaults, the
//! Dockerfile as text or as a path, a per-build cancel token and event sink.

use crate::error::{Error, ErrorKind, Result};
use crate::handle::Cairn;
use cairn_builder::{BuildEvent, BuildResult, Builder, CancelToken, RunPolicy};
use cairn_layer::Compression;
use cairn_sandbox::Network;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dockerfile {
    /// Its text; messages call it `Dockerfile (inline)`.
    Text(String),
    /// A file; messages name it, and `<file>.dockerignore` applies.
    Path(PathBuf),
}

impl Default for Dockerfile {
    fn default() -> Self {
        Dockerfile::Text(String::new())
    }
}

/// What to build. Start from [`BuildRequest::text`] or [`BuildRequest::file`]
/// and change what differs from the defaults (no tags, no context files,
/// build cache on, gzip layers, host network for RUN, as `docker build`).
///
/// ```
/// let req = cairn::BuildRequest::text("FROM busybox:fixture\nRUN echo hi\n")
///     .tag("localhost/app:1")
///     .build_arg("VERSION", "1");
/// assert_eq!(req.tags, vec!["localhost/app:1".to_string()]);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BuildRequest {
    /// The Dockerfile.
    pub dockerfile: Dockerfile,
    /// The context dir COPY/ADD read from. None: the Dockerfile's dir for a
    /// path, an empty context for text.
    pub context: Option<PathBuf>,
    /// Names to tag the image with (`name[:tag]`).
    pub tags: Vec<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Ignore the build cache.
    pub no_cache: bool,
    /// Layer compression (default gzip, what every registry takes).
    pub compression: Option<Compression>,
    /// SOURCE_DATE_EPOCH: clamp mtimes and created times, for reproducible images.
    pub timestamp: Option<i64>,
    /// Network of RUN steps (default host, as Docker's RUN).
    pub network: Network,
    /// Build for this organization (tenant): see `cairn::build::tenancy`.
    pub organization: Option<String>,
    /// Entitlements and limits of RUN steps.
    pub run_policy: RunPolicy,
}

impl BuildRequest {
    /// A build of this Dockerfile text.
    ///
    /// ```
    /// let req = cairn::BuildRequest::text("FROM scratch\n");
    /// assert!(matches!(req.dockerfile, cairn::Dockerfile::Text(_)));
    /// ```
    pub fn text(dockerfile: impl Into<String>) -> Self {
        BuildRequest {
            dockerfile: Dockerfile::Text(dockerfile.into()),
            ..BuildRequest::default()
        }
    }

    /// A build of the Dockerfile at `path` (its dir is the context unless
    /// [`BuildRequest::context`] says otherwise).
    ///
    /// ```
    /// let req = cairn::BuildRequest::file("app/Dockerfile");
    /// assert!(matches!(req.dockerfile, cairn::Dockerfile::Path(_)));
    /// ```
    pub fn file(path: impl Into<PathBuf>) -> Self {
        BuildRequest {
            dockerfile: Dockerfile::Path(path.into()),
            ..BuildRequest::default()
        }
    }

    /// Use `dir` as the build context.
    ///
    /// ```
    /// let req = cairn::BuildRequest::text("FROM scratch\nCOPY . /\n").context("site");
    /// assert_eq!(req.context.as_deref(), Some(std::path::Path::new("site")));
    /// ```
    pub fn context(mut self, dir: impl Into<PathBuf>) -> Self {
        self.context = Some(dir.into());
        self
    }

    /// Add a tag.
    ///
    /// ```
    /// let req = cairn::BuildRequest::text("FROM scratch\n").tag("a:1").tag("a:latest");
    /// assert_eq!(req.tags.len(), 2);
    /// ```
    pub fn tag(mut self, name: impl Into<String>) -> Self {
        self.tags.push(name.into());
        self
    }

    /// Set a build arg.
    ///
    /// ```
    /// let req = cairn::BuildRequest::text("FROM scratch\n").build_arg("A", "1");
    /// assert_eq!(req.build_args["A"], "1");
    /// ```
    pub fn build_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.build_args.insert(key.into(), value.into());
        self
    }

    /// Build stage `stage` instead of the last.
    ///
    /// ```
    /// let req = cairn::BuildRequest::text("FROM scratch AS a\nFROM scratch\n").target("a");
    /// assert_eq!(req.target.as_deref(), Some("a"));
    /// ```
    pub fn target(mut self, stage: impl Into<String>) -> Self {
        self.target = Some(stage.into());
        self
    }

    /// Give RUN steps `network` (`Network::None` isolates them).
    ///
    /// ```
    /// let req = cairn::BuildRequest::text("FROM scratch\n").network(cairn::sandbox::Network::None);
    /// assert_eq!(req.network, cairn::sandbox::Network::None);
    /// ```
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Build for organization `org`.
    ///
    /// ```
    /// let req = cairn::BuildRequest::text("FROM scratch\n").organization("acme");
    /// assert_eq!(req.organization.as_deref(), Some("acme"));
    /// ```
    pub fn organization(mut self, org: impl Into<String>) -> Self {
        self.organization = Some(org.into());
        self
    }

    /// Ignore (or use) the build cache.
    ///
    /// ```
    /// assert!(cairn::BuildRequest::text("FROM scratch\n").no_cache(true).no_cache);
    /// ```
    pub fn no_cache(mut self, no_cache: bool) -> Self {
        self.no_cache = no_cache;
        self
    }
}

/// The request as the build crate takes it, and the temp dir behind an
/// empty context (removed when dropped).
struct Prepared {
    request: cairn_builder::BuildRequest,
    _empty_context: Option<tempfile::TempDir>,
}

fn prepare(cairn: &Cairn, req: &BuildRequest, cancel: &CancelToken) -> Result<Prepared> {
    let (text, path) = match &req.dockerfile {
        Dockerfile::Text(t) => (t.clone(), PathBuf::new()),
        Dockerfile::Path(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                let kind = match e.kind() {
                    std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                    _ => ErrorKind::Invalid,
                };
                Error::new(kind, format!("{}: {e}", p.display()))
            })?;
            (text, p.clone())
        }
    };
    let (context, empty) = match (&req.context, &req.dockerfile) {
        (Some(c), _) => (c.clone(), None),
        (None, Dockerfile::Path(p)) => (dockerfile_dir(p), None),
        (None, Dockerfile::Text(_)) => {
            let dir = tempfile::Builder::new()
                .prefix("empty-context-")
                .tempdir_in(cairn.store().layout().tmp())
                .map_err(|e| Error::new(ErrorKind::Internal, format!("empty context: {e}")))?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let mut request = cairn_builder::BuildRequest {
        dockerfile: text,
        dockerfile_path: path,
        context,
        tags: req.tags.clone(),
        build_args: req.build_args.clone().into_iter().collect(),
        target: req.target.clone(),
        no_cache: req.no_cache,
        compression: req.compression.unwrap_or(Compression::Gzip),
        timestamp: req.timestamp,
        network: req.network,
        organization: req.organization.clone(),
        run_policy: req.run_policy.clone(),
        ..Default::default()
    };
    request.cancel = Some(cancel.clone());
    Ok(Prepared {
        request,
        _empty_context: empty,
    })
}

fn dockerfile_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Cairn {
    /// Build `req` and tag the image.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// let req = cairn::BuildRequest::text("FROM busybox:fixture\nRUN echo hi > /hi\n")
    ///     .tag("localhost/hi:1");
    /// let built = cairn.build(&req)?;
    /// assert_eq!(cairn.store().resolve("localhost/hi:1")?, built.manifest);
    ///
    /// // Errors carry their kind and position.
    /// let err = cairn.build(&cairn::BuildRequest::text("FROM busybox:fixture\nBOGUS x\n")).unwrap_err();
    /// assert_eq!(err.kind(), cairn::ErrorKind::Invalid);
    /// assert_eq!(err.position().map(|p| (p.file.as_str(), p.line)), Some(("Dockerfile (inline)", 2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self, req: &BuildRequest) -> Result<BuildResult> {
        self.build_with(req, &CancelToken::new(), &mut |_| {})
    }

    /// Build `req`, telling `events` everything that happens (steps, RUN
    /// output lines, layers, the end), stopping when `cancel` fires: the
    /// running RUN is killed, nothing is tagged, and the error is
    /// [`ErrorKind::Cancelled`]. The token is this build's alone.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// let mut lines = Vec::new();
    /// let req = cairn::BuildRequest::text("FROM busybox:fixture\nRUN echo building\n");
    /// cairn.build_with(&req, &cairn::CancelToken::new(), &mut |event| {
    ///     if let cairn::BuildEvent::Output { text, .. } = event {
    ///         lines.push(text.clone());
    ///     }
    /// })?;
    /// assert_eq!(lines, ["building"]);
    ///
    /// let cancelled = cairn::CancelToken::new();
    /// cancelled.cancel();
    /// let err = cairn.build_with(&req.clone().no_cache(true), &cancelled, &mut |_| {}).unwrap_err();
    /// assert_eq!(err.kind(), cairn::ErrorKind::Cancelled);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_with(
        &self,
        req: &BuildRequest,
        cancel: &CancelToken,
        events: &mut dyn FnMut(&BuildEvent),
    ) -> Result<BuildResult> {
        self.check_ready()?;
        let registry = self.registry()?;
        // Before the empty context is made in tmp/: GC clears tmp/.
        let _lease = self.store().lease()?;
        let prepared = prepare(self, req, cancel)?;
        let builder =
            Builder::new(self.store(), self.inner.launcher.clone()).with_registry(&registry);
        Ok(builder.build_with_events(&prepared.request, events)?)
    }
}
