//! The public face of builds: a [`Builder`] over one store, its options, and its entry points
//! (`build`, `build_with_events`, `plan`).

use crate::events::BuildEvent;
use crate::exec::{FsTasks, SandboxTasks};
use crate::memo::HashMemo;
use crate::plan::{plan_build, PlanInput};
use crate::report::{BuildResult, Plan, StepReport};
use crate::request::BuildRequest;
use crate::BuildError;
use cairn_registry::{Platform, Registry};
use cairn_sandbox::idmap::IdMapping;
use cairn_sandbox::{CancelToken, Launcher};
use cairn_store::reference::ImageRef;
use cairn_store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Builds Dockerfiles into one store.
pub struct Builder<'s> {
    pub(crate) store: &'s Store,
    /// The filesystem tasks steps are done with (sandbox and store; a fake
    /// in the executor's tests).
    pub(crate) tasks: Arc<dyn FsTasks + 's>,
    pub(crate) mapping: IdMapping,
    /// Where `FROM` images missing from the store are pulled from.
    pub(crate) registry: Option<&'s Registry>,
    /// The caller's way to stop a build from another thread.
    pub(crate) cancel: Option<CancelToken>,
    /// How many stages may build at once.
    pub(crate) parallelism: usize,
    /// Secrets `RUN --mount=type=secret` may use, by id.
    pub(crate) secrets: BTreeMap<String, crate::Secret>,
    /// `--platform`: the target platform (None: this machine's).
    pub(crate) platform: Option<Platform>,
    /// `--cache-from`/`--cache-to` state of the builds running.
    pub(crate) remote_cache: crate::remote_cache::RemoteCache,
    /// Plan only: look the cache up (without marking entries used), run,
    /// copy, pull and write nothing.
    pub(crate) dry_run: bool,
}

impl<'s> Builder<'s> {
    pub fn new(store: &'s Store, launcher: Launcher) -> Self {
        let mapping = IdMapping::for_current_user();
        let tasks = SandboxTasks {
            store,
            launcher,
            mapping: mapping.clone(),
        };
        Self::over_tasks(store, Arc::new(tasks), mapping)
    }

    /// A builder whose steps do their filesystem work through `tasks`
    /// (the executor's tests give a fake), with sandboxes under `mapping`.
    pub(crate) fn over_tasks(
        store: &'s Store,
        tasks: Arc<dyn FsTasks + 's>,
        mapping: IdMapping,
    ) -> Self {
        Builder {
            store,
            tasks,
            mapping,
            registry: None,
            cancel: None,
            parallelism: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            secrets: BTreeMap::new(),
            platform: None,
            remote_cache: Default::default(),
            dry_run: false,
        }
    }

    /// Build for `platform` (`cairn build --platform`, BuildKit's
    /// TARGETPLATFORM): registry bases are pulled for it, scratch stages and
    /// the image say they are for it, and the TARGET* ARGs name it. A stage's
    /// `FROM --platform` still wins for that stage. Nothing emulates another
    /// architecture: a RUN there fails as the kernel decides.
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// The platform stages are built for unless FROM says otherwise.
    pub(crate) fn target_platform(&self) -> Platform {
        self.platform.clone().unwrap_or_else(Platform::host)
    }

    /// Give RUNs these secrets (`RUN --mount=type=secret,id=ID`). They reach
    /// no layer, no cache key and no event.
    pub fn with_secrets(mut self, secrets: BTreeMap<String, crate::Secret>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Stop builds when `token` is cancelled: the running RUN's processes
    /// are killed, scratch dirs removed, nothing is tagged, and `build`
    /// returns [`BuildError::Cancelled`].
    pub fn with_cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Build at most `n` independent stages at once (default: the cores).
    pub fn with_parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// Pull `FROM` images that are not in the store through `registry`
    /// (as `docker build` does; without one, such a `FROM` is an error).
    pub fn with_registry(mut self, registry: &'s Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Build `req`; `progress` hears of every step once it is done.
    pub fn build(
        &self,
        req: &BuildRequest,
        progress: &mut dyn FnMut(&StepReport),
    ) -> Result<BuildResult, BuildError> {
        self.build_with_events(req, &mut |event| {
            if let Some(report) = StepReport::from_event(event) {
                progress(&report);
            }
        })
    }

    /// Build `req`, telling `events` everything that happens (on this
    /// thread, in order; stages built at once interleave), ending with
    /// [`BuildEvent::Finished`] or [`BuildEvent::Failed`].
    pub fn build_with_events(
        &self,
        req: &BuildRequest,
        events: &mut dyn FnMut(&BuildEvent),
    ) -> Result<BuildResult, BuildError> {
        let started = Instant::now();
        // Extracted layer dirs of another ID mapping (an older store as
        // root) must not be reused: see cairn_sandbox::owners.
        let layers = self.store.layout().layers();
        cairn_sandbox::owners::adopt_layer_dirs(self.store, &self.mapping)
            .map_err(BuildError::io(&layers))?;
        let memo = self.hash_memo(req);
        // This build's own executor state (its registry-cache session).
        let run = self.for_one_build(false);
        let result = run.build_inner(req, &memo, events);
        let result = crate::remote_cache::export(&run, req, result, events);
        memo.save();
        match &result {
            Ok(r) => events(&BuildEvent::Finished {
                manifest: r.manifest,
                duration: started.elapsed(),
            }),
            Err(e) => events(&BuildEvent::Failed {
                error: e.to_string(),
                cancelled: matches!(e, BuildError::Cancelled),
            }),
        }
        result
    }

    /// What `req` would do, step by step, without doing it: the cache is
    /// looked up (entries are not marked used), nothing runs, nothing is
    /// copied, pulled, written or tagged. `events` hears the steps as a
    /// build's (outcome [`StepOutcome::WouldRun`] for a miss).
    pub fn plan(
        &self,
        req: &BuildRequest,
        events: &mut dyn FnMut(&BuildEvent),
    ) -> Result<Plan, BuildError> {
        let dry = self.for_one_build(true);
        // The memo is read, never saved: a dry run leaves the store as it was.
        let memo = self.hash_memo(req);
        let result = dry.run_stages(req, &memo, events);
        if let Err(e) = &result {
            events(&BuildEvent::Failed {
                error: e.to_string(),
                cancelled: matches!(e, BuildError::Cancelled),
            });
        }
        let (stages, steps, _) = result?;
        // The pure plan of the same request: what planning alone can key.
        let doc = cairn_dockerfile::parse_deferring_quotes(&req.dockerfile)
            .map_err(|e| BuildError::input(format!("{}:{e}", req.dockerfile_name())))?;
        let input = PlanInput {
            req,
            platform: self.platform.clone(),
        };
        let graph = plan_build(&doc, &input, &dry)?;
        Ok(Plan {
            stages,
            steps,
            graph,
        })
    }

    /// A builder for one build: the same settings, and per-build state of
    /// its own (the registry-cache session), so concurrent builds on one
    /// builder never share it. `dry_run`: plan only.
    fn for_one_build(&self, dry_run: bool) -> Builder<'s> {
        Builder {
            store: self.store,
            tasks: self.tasks.clone(),
            mapping: self.mapping.clone(),
            registry: self.registry,
            cancel: self.cancel.clone(),
            parallelism: self.parallelism,
            secrets: self.secrets.clone(),
            platform: self.platform.clone(),
            remote_cache: Default::default(),
            dry_run,
        }
    }

    fn hash_memo(&self, req: &BuildRequest) -> Arc<HashMemo> {
        // Only this context's entries are parsed (keys are canonical paths).
        let context = std::fs::canonicalize(&req.context).ok();
        Arc::new(HashMemo::load(
            self.store.layout().root().join("context-hashes"),
            self.store.layout().tmp(),
            context.as_deref(),
        ))
    }

    fn build_inner(
        &self,
        req: &BuildRequest,
        memo: &Arc<HashMemo>,
        events: &mut dyn FnMut(&BuildEvent),
    ) -> Result<BuildResult, BuildError> {
        let (_, steps, final_state) = self.run_stages(req, memo, events)?;
        // Every step is done: here the image is written and tagged, and here
        // an exporter of the build cache would be called.
        let manifest = self.write_image(final_state, req.timestamp)?;
        for tag in &req.tags {
            self.store.tag(&ImageRef::parse(tag)?, &manifest)?;
        }
        Ok(BuildResult {
            manifest,
            steps,
            context_files_read: memo.reads.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}
