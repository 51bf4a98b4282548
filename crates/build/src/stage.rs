//! The build driver: stages in order, each instruction dispatched, the
//! final image written and tagged.

use crate::config::ImageConfig;
use crate::context::Context;
use crate::events::{BuildEvent, Msg, StepCtx};
use crate::explain::{first_difference, miss_reason, Reason};
use crate::keys::{short_digest, KeyBuilder, KeyInput};
use crate::memo::HashMemo;
use crate::BuildError;
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::scope::{global_scope, scope_at, ScopeInput};
use cairn_dockerfile::{Dockerfile, Form, Instruction};
use cairn_layer::{Compression, Digest};
use cairn_registry::{Platform, Registry};
use cairn_sandbox::idmap::IdMapping;
use cairn_sandbox::manager::SandboxManager;
use cairn_sandbox::CancelToken;
use cairn_sandbox::{Launcher, Network};
use cairn_store::image::{BlobRef, ManifestKind};
use cairn_store::reference::ImageRef;
use cairn_store::transport::Transport;
use cairn_store::Store;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// What to build. `Default`: an empty Dockerfile given as text, no context
/// dir (set one), the default compression, host network, no tags.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its path, for messages and for `<Dockerfile>.dockerignore`; empty
    /// for a Dockerfile given as text (messages then name
    /// [`INLINE_DOCKERFILE`], and only the context's `.dockerignore` counts).
    pub dockerfile_path: PathBuf,
    pub context: PathBuf,
    pub tags: Vec<String>,
    pub build_args: HashMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub compression: Compression,
    /// Clamp file mtimes and set every created time to this (SOURCE_DATE_EPOCH).
    pub timestamp: Option<i64>,
    pub network: Network,
    /// The organization the build is for (a platform's tenant), or None for
    /// the operator. With one, FROM / COPY --from / --mount from= cannot
    /// name another organization's snapshot images, cache mounts are the
    /// organization's own, and a step that used a secret is cached for it
    /// alone (see `tenancy`).
    pub organization: Option<String>,
    /// Entitlements and limits of the RUN steps.
    pub run_policy: RunPolicy,
    /// `--cache-from`: registry caches a step missing locally is pulled from.
    pub cache_from: Vec<crate::CacheImport>,
    /// `--cache-to`: registry caches the build's steps are pushed to.
    pub cache_to: Vec<crate::CacheExport>,
    /// Stops this build (and only this one) when cancelled; overrides the
    /// builder's [`Builder::with_cancel`] token.
    pub cancel: Option<CancelToken>,
}

/// What messages call a Dockerfile given as text.
pub const INLINE_DOCKERFILE: &str = "Dockerfile (inline)";

impl BuildRequest {
    /// The Dockerfile as messages name it: its path, or [`INLINE_DOCKERFILE`].
    pub fn dockerfile_name(&self) -> String {
        match self.dockerfile_path.as_os_str().is_empty() {
            true => INLINE_DOCKERFILE.to_string(),
            false => self.dockerfile_path.display().to_string(),
        }
    }
}

/// What the caller lets the Dockerfile's RUN steps have: a Dockerfile can
/// never widen it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunPolicy {
    /// `--allow network.host`: `RUN --network=host` may reach the host's
    /// network even when the build's network is `none` (BuildKit's entitlement).
    pub allow_network_host: bool,
    /// Memory of each RUN step in bytes (cgroup).
    pub memory_bytes: Option<u64>,
    /// CPUs of each RUN step (cgroup).
    pub cpus: Option<f64>,
    /// Processes of each RUN step; [`cairn_sandbox::manager::DEFAULT_PIDS_LIMIT`] when None.
    pub pids: Option<u64>,
    /// Kill a RUN step (and fail the build) after this long.
    pub timeout: Option<std::time::Duration>,
}

impl RunPolicy {
    /// The entitlements BuildKit names, as `--allow` takes them.
    pub fn allow(&mut self, entitlement: &str) -> Result<(), String> {
        match entitlement {
            "network.host" => self.allow_network_host = true,
            "security.insecure" => return Err(
                "entitlement security.insecure: not supported (sandboxes never get host privileges)"
                    .into(),
            ),
            other => {
                return Err(format!(
                    "entitlement {other:?}: unknown (expected network.host)"
                ))
            }
        }
        Ok(())
    }
}

/// How a step was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// It ran (RUN executed, COPY copied) and made a new layer.
    Ran,
    /// Its layer came from the build cache; nothing ran.
    Cached,
    /// It only changed the image config (ENV, CMD, FROM, ...): nothing to run.
    Config,
    /// A dry run: it missed the cache and would run.
    WouldRun,
}

/// One step, for the caller's progress output.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub stage: usize,
    pub line: usize,
    pub text: String,
    pub outcome: StepOutcome,
    /// Why it ran (or, for a config-only step, why its key changed).
    pub reason: Option<Reason>,
}

/// What a build would do (`cairn build --dry-run`): every step of the
/// stages the target needs, in the order they were planned, with hit or
/// miss and, for a miss, why.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stages built, in dependency order.
    pub stages: Vec<usize>,
    pub steps: Vec<StepReport>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub manifest: Digest,
    pub steps: Vec<StepReport>,
    /// Context files whose content was read to digest COPY/ADD sources
    /// (the others were served by the memoised hashes).
    pub context_files_read: u64,
}

/// A layer of the image being built.
#[derive(Debug, Clone)]
pub(crate) struct LayerRef {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

/// A stage's state between instructions.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    pub key: String,
    /// When the newest layer was made (from the cache for a cached one): the
    /// time config-only steps and the image itself carry, so a fully cached
    /// rebuild gives the very same image.
    pub created: String,
    /// The named inputs of `key` (of the last step), for `--explain`.
    pub inputs: Vec<KeyInput>,
    /// The last step whose key changed for a reason of its own: its line
    /// and that reason, which later steps name as their parent's.
    pub change: Option<(usize, Reason)>,
    /// A dry run's FROM image that is not in the store: nothing after it
    /// can be keyed.
    pub missing_base: Option<String>,
}

impl StageState {
    /// A stage starting from nothing: scratch for `platform`, keyed `key`.
    fn empty(platform: &Platform, key: &str, inputs: Vec<KeyInput>) -> Self {
        StageState {
            config: ImageConfig::scratch(platform),
            layers: vec![],
            key: key.into(),
            created: EPOCH.into(),
            inputs,
            change: None,
            missing_base: None,
        }
    }
}

/// Builds Dockerfiles into one store.
pub struct Builder<'s> {
    pub(crate) store: &'s Store,
    pub(crate) launcher: Launcher,
    pub(crate) mapping: IdMapping,
    /// Where `FROM` images missing from the store are pulled from.
    pub(crate) registry: Option<&'s Registry>,
    /// The caller's way to stop a build from another thread.
    pub(crate) cancel: Option<CancelToken>,
    /// How many stages may build at once.
    parallelism: usize,
    /// Secrets `RUN --mount=type=secret` may use, by id.
    pub(crate) secrets: BTreeMap<String, crate::Secret>,
    /// `--platform`: the target platform (None: this machine's).
    platform: Option<Platform>,
    /// `--cache-from`/`--cache-to` state of the builds running.
    pub(crate) remote_cache: crate::remote_cache::RemoteCache,
    /// Plan only: look the cache up (without marking entries used), run,
    /// copy, pull and write nothing.
    pub(crate) dry_run: bool,
}

impl<'s> Builder<'s> {
    pub fn new(store: &'s Store, launcher: Launcher) -> Self {
        Builder {
            store,
            launcher,
            mapping: IdMapping::for_current_user(),
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
    fn target_platform(&self) -> Platform {
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
            if let BuildEvent::StepDone {
                stage,
                line,
                text,
                outcome,
                reason,
                ..
            } = event
            {
                progress(&StepReport {
                    stage: *stage,
                    line: *line,
                    text: text.clone(),
                    outcome: *outcome,
                    reason: reason.clone(),
                });
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
        let memo = self.hash_memo();
        let result = self.build_inner(req, &memo, events);
        let result = crate::remote_cache::export(self, req, result, events);
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
        let dry = Builder {
            store: self.store,
            launcher: self.launcher.clone(),
            mapping: self.mapping.clone(),
            registry: self.registry,
            cancel: self.cancel.clone(),
            parallelism: self.parallelism,
            secrets: self.secrets.clone(),
            platform: self.platform.clone(),
            remote_cache: Default::default(),
            dry_run: true,
        };
        // The memo is read, never saved: a dry run leaves the store as it was.
        let memo = self.hash_memo();
        let result = dry.run_stages(req, &memo, events);
        if let Err(e) = &result {
            events(&BuildEvent::Failed {
                error: e.to_string(),
                cancelled: matches!(e, BuildError::Cancelled),
            });
        }
        let (stages, steps, _) = result?;
        Ok(Plan { stages, steps })
    }

    fn hash_memo(&self) -> Arc<HashMemo> {
        Arc::new(HashMemo::load(
            self.store.layout().root().join("context-hashes"),
            self.store.layout().tmp(),
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

    /// Run (or, dry, plan) every stage the target needs; the stages in
    /// order, the steps and the target's final state.
    fn run_stages(
        &self,
        req: &BuildRequest,
        memo: &Arc<HashMemo>,
        events: &mut dyn FnMut(&BuildEvent),
    ) -> Result<(Vec<usize>, Vec<StepReport>, StageState), BuildError> {
        let file = req.dockerfile_name();
        // Quoting errors wait until their stage is built, as in BuildKit.
        let doc = cairn_dockerfile::parse_deferring_quotes(&req.dockerfile)
            .map_err(|e| BuildError::input(format!("{file}:{e}")))?;
        if let Some(org) = &req.organization {
            crate::tenancy::check_org(org)?;
        }
        let mut context = Context::open(
            &req.context,
            Some(req.dockerfile_path.as_path()).filter(|p| !p.as_os_str().is_empty()),
        )?
        .with_memo(memo.clone());
        context.organization = req.organization.clone();
        let target = match &req.target {
            Some(t) => stage_index(&doc, t)
                .ok_or_else(|| BuildError::input(format!("target stage {t:?} not found")))?,
            None => doc.stages.len().saturating_sub(1),
        };
        let scope_input = ScopeInput {
            build_args: req.build_args.clone(),
            platform: platform_args(&self.target_platform()),
            ..ScopeInput::default()
        };
        let globals = global_scope(&doc, &scope_input)
            .map_err(|e| BuildError::input(format!("{file}: {e}")))?;

        let (order, deps) = needed_stages(&doc, target, &globals)?;
        let unused = unused_build_args(&doc, &order, &req.build_args);
        if !unused.is_empty() {
            events(&BuildEvent::Warning {
                message: format!(
                    "one or more build args [{}] were not consumed",
                    unused.join(" ")
                ),
            });
        }
        let mut done: Vec<Option<StageState>> = vec![None; doc.stages.len()];
        let mut steps = Vec::new();
        // The build's own token: the caller's token or a failing stage
        // cancels it, and it stops every stage still running.
        let cancel = CancelToken::new();
        let user_cancel = req
            .cancel
            .clone()
            .or_else(|| self.cancel.clone())
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel::<Msg>();
        let mut failure: Option<BuildError> = None;
        let mut records = Vec::new();
        std::thread::scope(|scope| {
            let mut pending = order.clone();
            let mut running = 0usize;
            loop {
                if user_cancel.is_cancelled() {
                    cancel.cancel();
                    failure.get_or_insert(BuildError::Cancelled);
                }
                while failure.is_none() && running < self.parallelism {
                    let Some(pos) = pending
                        .iter()
                        .position(|i| deps[*i].iter().all(|d| done[*d].is_some()))
                    else {
                        break;
                    };
                    let index = pending.remove(pos);
                    let before = done.clone();
                    let (tx, cancel) = (tx.clone(), cancel.clone());
                    let (doc, context, globals) = (&doc, &context, &globals);
                    scope.spawn(move || {
                        // A panic must still say the stage is over, or the
                        // loop below would wait for it forever.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.build_stage(
                                req, doc, context, index, &before, globals, &tx, &cancel,
                            )
                        }))
                        .unwrap_or_else(|_| {
                            Err(BuildError::Internal(format!("stage {index} panicked")))
                        });
                        let _ = tx.send(Msg::StageDone(index, Box::new(result)));
                    });
                    running += 1;
                }
                if running == 0 {
                    break;
                }
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(Msg::Event(event)) => {
                        if let BuildEvent::StepDone {
                            stage,
                            line,
                            text,
                            outcome,
                            reason,
                            ..
                        } = &event
                        {
                            steps.push(StepReport {
                                stage: *stage,
                                line: *line,
                                text: text.clone(),
                                outcome: *outcome,
                                reason: reason.clone(),
                            });
                        }
                        events(&event);
                    }
                    Ok(Msg::Record(record)) => records.push(record),
                    Ok(Msg::StageDone(index, result)) => {
                        running -= 1;
                        match *result {
                            Ok(state) => done[index] = Some(state),
                            Err(e) => {
                                cancel.cancel();
                                // The first failure is the one to report; a
                                // sibling's "cancelled" is its consequence.
                                if failure.is_none()
                                    || matches!(failure, Some(BuildError::Cancelled))
                                        && !user_cancel.is_cancelled()
                                {
                                    failure = Some(e);
                                }
                            }
                        }
                    }
                    Err(_) => {}
                }
            }
        });
        self.record_steps(&records);
        // Cancelled by the caller: whatever a killed step said (a RUN may
        // die of the same Ctrl-C before the token is seen), that is why.
        if user_cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let final_state = done[target]
            .take()
            .ok_or_else(|| BuildError::input("target stage was not built"))?;
        Ok((order, steps, final_state))
    }

    /// Keep the key and inputs of the steps whose key changed, for the
    /// next build's `--explain` (not a dry run's). Losing them loses only
    /// explanations, so a failure is a warning, not a failed build.
    fn record_steps(&self, records: &[cairn_store::cache::StepRecord]) {
        if self.dry_run {
            return;
        }
        if let Err(e) = self.store.put_step_records(records) {
            tracing::warn!("recording build steps for --explain: {e}");
        }
    }

    /// One step with its events: started, cached, layer committed, done.
    fn step(
        &self,
        req: &BuildRequest,
        ctx: &StepCtx,
        text: &str,
        state: &mut StageState,
        work: impl FnOnce(&mut StageState) -> Result<StepOutcome, BuildError>,
    ) -> Result<StepOutcome, BuildError> {
        ctx.check_cancelled()?;
        let started = Instant::now();
        let (stage, line, text) = (ctx.stage, ctx.line, text.to_string());
        ctx.emit(BuildEvent::StepStarted {
            stage,
            line,
            text: text.clone(),
        });
        let layers_before = state.layers.len();
        let outcome = match &state.missing_base {
            // A dry run cannot key anything after a base it does not have.
            Some(_) => StepOutcome::WouldRun,
            None => work(state)?,
        };
        // FROM found that base missing just now: it would be pulled.
        let outcome = match &state.missing_base {
            Some(_) => StepOutcome::WouldRun,
            None => outcome,
        };
        let reason = self.explain(req, ctx, state, outcome)?;
        match outcome {
            StepOutcome::Cached => ctx.emit(BuildEvent::StepCached {
                stage,
                line,
                text: text.clone(),
            }),
            StepOutcome::Ran => {
                if let Some(layer) = state.layers.get(layers_before..).and_then(|l| l.last()) {
                    ctx.emit(BuildEvent::LayerCommitted {
                        stage,
                        line,
                        digest: layer.digest,
                        diff_id: layer.diff_id,
                        size: layer.size,
                    });
                }
            }
            StepOutcome::Config | StepOutcome::WouldRun => {}
        }
        ctx.emit(BuildEvent::StepDone {
            stage,
            line,
            text,
            outcome,
            duration: started.elapsed(),
            reason,
        });
        Ok(outcome)
    }

    /// Why a step ran or would run (for a config-only step: why its key
    /// changed), from the last build of the same step; records this build
    /// of it when its key is new.
    fn explain(
        &self,
        req: &BuildRequest,
        ctx: &StepCtx,
        state: &mut StageState,
        outcome: StepOutcome,
    ) -> Result<Option<Reason>, BuildError> {
        if let Some(image) = &state.missing_base {
            return Ok(Some(Reason::BaseNotInStore {
                image: image.clone(),
            }));
        }
        let old: Option<(String, Vec<KeyInput>)> = self
            .store
            .step_record(&ctx.slot)?
            // A record this version cannot read explains nothing.
            .map(|r| (r.key, serde_json::from_str(&r.inputs).unwrap_or_default()));
        let changed = old.as_ref().is_none_or(|(key, _)| *key != state.key);
        let parent = state.change.as_ref();
        let reason = match outcome {
            StepOutcome::Cached => None,
            StepOutcome::Config => old
                .as_ref()
                .filter(|_| changed)
                .and_then(|(_, inputs)| first_difference(inputs, &state.inputs, parent)),
            StepOutcome::Ran | StepOutcome::WouldRun => Some(miss_reason(
                req.no_cache,
                old.as_ref().map(|(k, i)| (k.as_str(), i.as_slice())),
                &state.key,
                &state.inputs,
                parent,
            )),
        };
        if changed {
            ctx.record(cairn_store::cache::StepRecord {
                slot: ctx.slot.clone(),
                key: state.key.clone(),
                inputs: serde_json::to_string(&state.inputs).unwrap_or_default(),
            });
        }
        match &reason {
            Some(Reason::ParentChanged { .. }) | None => {}
            Some(own) => state.change = Some((ctx.line, own.clone())),
        }
        Ok(reason)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_stage(
        &self,
        req: &BuildRequest,
        doc: &Dockerfile,
        context: &Context,
        index: usize,
        done: &[Option<StageState>],
        globals: &BTreeMap<String, String>,
        tx: &mpsc::Sender<Msg>,
        cancel: &CancelToken,
    ) -> Result<StageState, BuildError> {
        let file = req.dockerfile_name();
        let stage = &doc.stages[index];
        let slots = step_slots(req, index);
        let ordinal = std::cell::Cell::new(0usize);
        let ctx = |line: usize| {
            ordinal.set(ordinal.get() + 1);
            StepCtx {
                tx: tx.clone(),
                stage: index,
                line,
                cancel: cancel.clone(),
                slot: format!("{slots}:{}", ordinal.get()),
            }
        };
        let base = expand_word(&stage.base, globals, doc.escape).map_err(|e| {
            BuildError::input(format!("{file}:{}: FROM {}: {e}", stage.line, stage.base))
        })?;
        let mut state = StageState::empty(&self.target_platform(), "", vec![]);
        let platform = match &stage.platform {
            Some(p) => Some(
                expand_word(p, globals, doc.escape)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        text.parse::<Platform>()
                            .map_err(|e| format!("{text:?}: {e}"))
                    })
                    .map_err(|e| {
                        BuildError::input(format!("{file}:{}: FROM --platform={e}", stage.line))
                    })?,
            ),
            None => None,
        };
        // FROM --platform, else the build's --platform (None: the host's).
        let platform = platform.or_else(|| self.platform.clone());
        let from_step = ctx(stage.line);
        self.step(req, &from_step, &stage.original, &mut state, |state| {
            crate::tenancy::check_readable(req.organization.as_deref(), &base, "FROM")?;
            let for_platform = platform.clone().unwrap_or_else(Platform::host);
            *state = self.resolve_base(
                &base,
                doc,
                done,
                &from_step,
                req.organization.as_deref(),
                &for_platform,
            )?;
            if let Some(platform) = &platform {
                record_platform(state, platform, &base, &from_step);
            }
            Ok(StepOutcome::Config)
        })?;

        let mut stage_state = StageProgress::default();
        // The base's ONBUILD triggers run first, with the base's ENV only
        // (BuildKit's dispatchOnBuildTriggers); the new image keeps none.
        let triggers = state.config.strings("OnBuild");
        if !triggers.is_empty() {
            state.config.set("OnBuild", Value::Null);
            let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
            let trigger_doc = cairn_dockerfile::parse(&text).map_err(|e| {
                BuildError::input(format!(
                    "{file}:{}: an ONBUILD trigger of {base}: {e}",
                    stage.line
                ))
            })?;
            let instructions = trigger_doc
                .stages
                .first()
                .map(|s| s.instructions.as_slice())
                .unwrap_or_default();
            for trigger in instructions {
                let vars: BTreeMap<String, String> = state.config.env().into_iter().collect();
                let mut inst = trigger.clone();
                inst.line = stage.line;
                let step = ctx(stage.line);
                let text = format!("ONBUILD {}", inst.original);
                self.step(req, &step, &text, &mut state, |state| {
                    self.dispatch(
                        req,
                        doc,
                        context,
                        &inst,
                        &vars,
                        &BTreeMap::new(),
                        state,
                        done,
                        &mut stage_state,
                        &step,
                    )
                })?;
            }
        }

        // The scope replays the stage's ENV and ARG lines over the env the
        // stage started with (after its base's triggers); replaying them over
        // the current env would expand each ENV again with later values.
        let scope_input = ScopeInput {
            build_args: req.build_args.clone(),
            base_env: state.config.env(),
            platform: platform_args(&self.target_platform()),
        };
        for (i, inst) in stage.instructions.iter().enumerate() {
            if let Some(e) = &inst.deferred {
                return Err(BuildError::input(format!("{file}:{e}")));
            }
            let scope = scope_at(doc, &scope_input, index, i)
                .map_err(|e| BuildError::input(format!("{file}: {e}")))?;
            let step = ctx(inst.line);
            self.step(req, &step, &inst.original, &mut state, |state| {
                self.dispatch(
                    req,
                    doc,
                    context,
                    inst,
                    &scope.vars,
                    &scope.run_args,
                    state,
                    done,
                    &mut stage_state,
                    &step,
                )
            })?;
        }
        Ok(state)
    }

    /// Run one instruction of a stage (or of its base's ONBUILD triggers).
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        req: &BuildRequest,
        doc: &Dockerfile,
        context: &Context,
        inst: &Instruction,
        vars: &BTreeMap<String, String>,
        run_args: &BTreeMap<String, String>,
        state: &mut StageState,
        done: &[Option<StageState>],
        stage_state: &mut StageProgress,
        step: &StepCtx,
    ) -> Result<StepOutcome, BuildError> {
        let file = req.dockerfile_name();
        let at = |m: String| BuildError::input(format!("{file}:{}: {m}", inst.line));
        let mut key = KeyBuilder::after(&state.key)
            .instruction(&inst.original)
            .vars(vars, run_args);
        for (i, h) in inst.heredocs.iter().enumerate() {
            key = key.heredoc(i, &h.body);
        }
        let mut outcome = StepOutcome::Config;
        match inst.name.as_str() {
            "run" => {
                let workdir = state.config.string("WorkingDir").unwrap_or_default();
                let expand = |w: &str| expand_word(w, vars, doc.escape).map_err(|e| e.to_string());
                let mounts = inst
                    .flags
                    .get("mount")
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        crate::mounts::parse(v, &workdir, &expand)
                            .map_err(|e| at(format!("RUN --mount={v}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let parts = self.mount_key(&mounts, doc, context, done)?;
                if !parts.is_empty() {
                    let mut joined = String::new();
                    for (source, part) in &parts {
                        joined.push_str(part);
                        joined.push('\0');
                        key = key.note(KeyInput::Mount {
                            source: source.clone(),
                            digest: short_digest(part.as_bytes()),
                        });
                    }
                    key = key.field(joined.as_bytes());
                }
                // What a secret let a step make is its organization's alone.
                if mounts
                    .iter()
                    .any(|m| m.kind == crate::mounts::MountType::Secret)
                {
                    let scope = req.organization.as_deref().map(crate::tenancy::namespace);
                    let scope = format!("secret-scope:{scope:?}");
                    let input = KeyInput::Setting {
                        name: "secret scope".into(),
                        digest: short_digest(scope.as_bytes()),
                    };
                    key = key.named(scope.as_bytes(), input);
                }
                let (key, inputs) = key.finish_with_inputs();
                state.inputs = inputs;
                let inputs = crate::run::RunInputs {
                    context,
                    done,
                    mounts,
                };
                outcome = self.run_step(req, doc, inst, run_args, state, &key, step, &inputs)?;
                state.key = key;
            }
            "copy" | "add" => {
                let mut plan = crate::copy::plan(self, doc, context, inst, vars, state, done)?;
                for input in std::mem::take(&mut plan.inputs) {
                    key = key.note(input);
                }
                let setting = KeyInput::Setting {
                    name: "sources, owner, mode and flags".into(),
                    digest: short_digest(plan.sources_digest.as_bytes()),
                };
                let (key_with_sources, inputs) = key
                    .named(plan.sources_digest.as_bytes(), setting)
                    .finish_with_inputs();
                state.inputs = inputs;
                outcome = self.copy_step(req, inst, plan, state, &key_with_sources)?;
                state.key = key_with_sources;
            }
            _ => {
                apply_config(inst, doc.escape, vars, &mut state.config, stage_state).map_err(at)?;
                let (key, inputs) = key.finish_with_inputs();
                state.inputs = inputs;
                if inst.name == "workdir" {
                    if let Some(made) = self.workdir_step(req, inst, state, &key)? {
                        state.key = key;
                        return Ok(made);
                    }
                }
                let created = req
                    .timestamp
                    .map(|t| created_time(Some(t)))
                    .unwrap_or_else(|| state.created.clone());
                state
                    .config
                    .push_history(&created, &history_text(inst), true);
                state.key = key;
            }
        }
        Ok(outcome)
    }

    /// The state a stage starts from; `platform` picks a registry base's
    /// image from its index and is what a scratch stage says it is for.
    fn resolve_base(
        &self,
        base: &str,
        doc: &Dockerfile,
        done: &[Option<StageState>],
        step: &StepCtx,
        org: Option<&str>,
        platform: &Platform,
    ) -> Result<StageState, BuildError> {
        if base.eq_ignore_ascii_case("scratch") {
            let input = KeyInput::Base {
                image: "scratch".into(),
                digest: String::new(),
                platform: platform.to_string(),
            };
            return Ok(StageState::empty(platform, "scratch", vec![input]));
        }
        if let Some(i) = stage_index(doc, base) {
            if let Some(Some(state)) = done.get(i) {
                let mut state = state.clone();
                state.inputs = vec![KeyInput::Stage {
                    name: base.to_string(),
                    key: state.key.clone(),
                }];
                return Ok(state);
            }
        }
        let local = base.starts_with("oci:")
            || base.starts_with("oci-archive:")
            || self.store.resolve(base).is_ok();
        if self.dry_run && !local {
            // A dry run neither pulls nor imports.
            let mut state = StageState::empty(platform, &format!("unresolved:{base}"), vec![]);
            state.missing_base = Some(base.to_string());
            return Ok(state);
        }
        let manifest = if base.starts_with("oci:") || base.starts_with("oci-archive:") {
            let transport = Transport::parse(base)?;
            let imported = self.store.import(&transport, None)?;
            match imported.as_slice() {
                [one] => one.digest,
                _ => {
                    return Err(BuildError::input(format!(
                        "FROM {base}: expected one image, found {}",
                        imported.len()
                    )))
                }
            }
        } else {
            match (self.store.resolve(base), self.registry) {
                (Ok(d), _) => d,
                (Err(cairn_store::StoreError::UnknownImage(_)), Some(registry)) => {
                    tracing::info!("FROM {base}: not in the store, pulling");
                    // Layers are extracted as they download.
                    let sink = crate::layer_sink::Extractor(SandboxManager::new(
                        self.store,
                        self.launcher.clone(),
                    ));
                    registry
                        .pull_platform(self.store, base, platform, Some(&sink), Some(step))?
                        .manifest
                }
                (Err(e), _) => return Err(e.into()),
            }
        };
        crate::tenancy::check_pinned(self.store, org, base, &manifest, "FROM")?;
        self.load_image(base, &manifest)
    }

    pub(crate) fn load_image(
        &self,
        name: &str,
        manifest: &Digest,
    ) -> Result<StageState, BuildError> {
        let (_, parsed) = self.store.manifest(manifest)?;
        if parsed.kind != ManifestKind::Image {
            return Err(BuildError::Unsupported(format!(
                "FROM {name}: an image index (pick one platform's image)"
            )));
        }
        let config_ref = parsed
            .config
            .ok_or_else(|| BuildError::input(format!("FROM {name}: manifest without config")))?;
        let config: Value =
            serde_json::from_slice(&self.store.read_blob_bytes(&config_ref.digest)?)
                .map_err(|e| BuildError::input(format!("FROM {name}: config is not JSON: {e}")))?;
        let created = config["created"].as_str().unwrap_or(EPOCH).to_string();
        let config = ImageConfig(config);
        let diff_ids: Vec<Digest> = config
            .diff_ids()
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect();
        if diff_ids.len() != parsed.children.len() {
            return Err(BuildError::input(format!(
                "FROM {name}: layers and diff ids disagree"
            )));
        }
        let layers = parsed
            .children
            .iter()
            .zip(&diff_ids)
            .map(|(b, d)| LayerRef {
                digest: b.digest,
                size: b.size,
                media_type: b.media_type.clone(),
                diff_id: *d,
            })
            .collect();
        let platform = image_platform(&config);
        let key = KeyBuilder::after("from")
            .field(manifest.to_string().as_bytes())
            .field(platform.as_bytes())
            .finish();
        let inputs = vec![KeyInput::Base {
            image: name.to_string(),
            digest: manifest.to_string(),
            platform,
        }];
        Ok(StageState {
            config,
            layers,
            key,
            created,
            inputs,
            change: None,
            missing_base: None,
        })
    }

    /// The extracted dirs of `state`'s layers, lowest first.
    pub(crate) fn layer_dirs(&self, state: &StageState) -> Vec<PathBuf> {
        state
            .layers
            .iter()
            .map(|l| self.store.layer_dir(&l.diff_id))
            .collect()
    }

    /// Make sure every layer of `state` has its extracted dir.
    pub(crate) fn ensure_extracted(&self, state: &StageState) -> Result<(), BuildError> {
        let manager = SandboxManager::new(self.store, self.launcher.clone());
        let pairs: Vec<(Digest, Digest)> =
            state.layers.iter().map(|l| (l.digest, l.diff_id)).collect();
        manager.extract_layers(&pairs)?;
        Ok(())
    }

    /// Record a step's new layer in the stage and the build cache.
    pub(crate) fn add_layer(
        &self,
        state: &mut StageState,
        layer: LayerRef,
        created_by: &str,
        key: &str,
        timestamp: Option<i64>,
    ) -> Result<(), BuildError> {
        let created = created_time(timestamp);
        let value =
            json!({ "media_type": layer.media_type, "created_by": created_by, "created": created })
                .to_string();
        self.store.cache_put(&cairn_store::cache::CacheEntry {
            key: key.to_string(),
            layer_digest: Some(layer.digest),
            diff_id: Some(layer.diff_id),
            size: layer.size,
            value,
        })?;
        state.config.push_diff_id(&layer.diff_id.to_string());
        state.config.push_history(&created, created_by, false);
        state.created = created;
        state.layers.push(layer);
        Ok(())
    }

    /// A cache hit, locally or else from a `--cache-from` registry cache.
    pub(crate) fn cached_layer(
        &self,
        req: &BuildRequest,
        key: &str,
    ) -> Result<Option<(LayerRef, String)>, BuildError> {
        self.remote_cache.note_key(req, key);
        match self.local_cached_layer(req, key)? {
            // A dry run plans from what is here: it pulls nothing.
            None if !self.dry_run && crate::remote_cache::import(self, req, key) => {
                self.local_cached_layer(req, key)
            }
            hit => Ok(hit),
        }
    }

    /// A local hit: the step's layer (if its blob and extracted dir are still
    /// there) and the time it was first made. A dry run only peeks (the entry
    /// is not marked used).
    fn local_cached_layer(
        &self,
        req: &BuildRequest,
        key: &str,
    ) -> Result<Option<(LayerRef, String)>, BuildError> {
        if req.no_cache {
            return Ok(None);
        }
        let entry = match self.dry_run {
            true => self.store.cache_peek(key)?,
            false => self.store.cache_get(key)?,
        };
        let Some(entry) = entry else {
            return Ok(None);
        };
        let (Some(digest), Some(diff_id)) = (entry.layer_digest, entry.diff_id) else {
            return Ok(None);
        };
        if !self.store.has_blob(&digest) || !self.store.has_layer_dir(&diff_id) {
            return Ok(None);
        }
        let value: Value = serde_json::from_str(&entry.value).unwrap_or(Value::Null);
        let media_type = value["media_type"]
            .as_str()
            .unwrap_or(req.compression.media_type())
            .to_string();
        let created = match req.timestamp {
            Some(t) => created_time(Some(t)),
            None => value["created"].as_str().unwrap_or(EPOCH).to_string(),
        };
        Ok(Some((
            LayerRef {
                digest,
                size: entry.size,
                media_type,
                diff_id,
            },
            created,
        )))
    }

    fn write_image(
        &self,
        mut state: StageState,
        timestamp: Option<i64>,
    ) -> Result<Digest, BuildError> {
        let created = timestamp
            .map(|t| created_time(Some(t)))
            .unwrap_or_else(|| state.created.clone());
        state.config.set_created(&created);
        let config =
            serde_json::to_vec(&state.config.0).map_err(|e| BuildError::input(e.to_string()))?;
        let layers: Vec<BlobRef> = state
            .layers
            .iter()
            .map(|l| BlobRef {
                digest: l.digest,
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect();
        Ok(self.store.record_oci_image(&config, &layers)?)
    }
}

/// The prefix of the slots of a stage's steps: the same Dockerfile and
/// context give the same slots, so a build is compared with the last one.
fn step_slots(req: &BuildRequest, stage: usize) -> String {
    let context = std::fs::canonicalize(&req.context).unwrap_or_else(|_| req.context.clone());
    let dockerfile =
        std::path::absolute(&req.dockerfile_path).unwrap_or_else(|_| req.dockerfile_path.clone());
    let place = format!("{}\0{}", context.display(), dockerfile.display());
    format!("{}:{stage}", short_digest(place.as_bytes()))
}

/// RFC 3339 of the build's timestamp, or now.
pub(crate) fn created_time(timestamp: Option<i64>) -> String {
    let t = match timestamp {
        Some(secs) => std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64),
        None => std::time::SystemTime::now(),
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// History text as BuildKit writes it: `RUN /bin/sh -c ...` for shell forms.
pub(crate) fn history_text(inst: &Instruction) -> String {
    let name = inst.name.to_uppercase();
    let rest = inst.original.trim_start();
    let rest = rest.get(inst.name.len()..).unwrap_or("").trim_start();
    format!("{name} {rest}").trim_end().to_string()
}

/// A stage by name (case-insensitive) or index.
pub(crate) fn stage_index(doc: &Dockerfile, name: &str) -> Option<usize> {
    doc.stages
        .iter()
        .position(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < doc.stages.len()))
}

/// The stages `target` needs, in dependency order (FROM and COPY --from
/// edges), and the stages each stage depends on.
fn needed_stages(
    doc: &Dockerfile,
    target: usize,
    globals: &BTreeMap<String, String>,
) -> Result<(Vec<usize>, Vec<Vec<usize>>), BuildError> {
    fn visit(
        doc: &Dockerfile,
        i: usize,
        globals: &BTreeMap<String, String>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        edges: &mut [Vec<usize>],
    ) -> Result<(), BuildError> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                return Err(BuildError::input(format!(
                    "stage {i} depends on itself (a cycle between stages)"
                )))
            }
            _ => {}
        }
        state[i] = 1;
        let stage = &doc.stages[i];
        let base =
            expand_word(&stage.base, globals, doc.escape).unwrap_or_else(|_| stage.base.clone());
        let mut deps: Vec<String> = vec![base];
        for inst in &stage.instructions {
            deps.extend(inst.flags.get("from").into_iter().flatten().cloned());
            deps.extend(crate::mounts::from_names(&inst.flags));
        }
        for dep in deps {
            // Only earlier stages can be named: `FROM x AS x` means the image x.
            if let Some(j) = stage_index(doc, &dep).filter(|j| *j < i) {
                visit(doc, j, globals, state, order, edges)?;
                edges[i].push(j);
            }
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    let mut state = vec![0u8; doc.stages.len()];
    let mut order = Vec::new();
    let mut edges = vec![Vec::new(); doc.stages.len()];
    visit(doc, target, globals, &mut state, &mut order, &mut edges)?;
    Ok((order, edges))
}

/// The platform ARGs BuildKit predefines: builds run for this machine
/// (linux/amd64; there is no `--platform` for a whole build).
fn platform_args(target: &Platform) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (side, p) in [("TARGET", target), ("BUILD", &Platform::host())] {
        args.insert(format!("{side}PLATFORM"), p.to_string());
        args.insert(format!("{side}OS"), p.os.clone());
        args.insert(format!("{side}ARCH"), p.architecture.clone());
        args.insert(
            format!("{side}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    args
}

/// `os/arch[/variant]` of an image config (`linux/amd64` when it says none).
fn image_platform(config: &ImageConfig) -> String {
    let field = |k: &str| config.0.get(k).and_then(Value::as_str).unwrap_or_default();
    let (os, arch) = (field("os"), field("architecture"));
    let os = if os.is_empty() { "linux" } else { os };
    let arch = if arch.is_empty() { "amd64" } else { arch };
    match field("variant") {
        "" => format!("{os}/{arch}"),
        v => format!("{os}/{arch}/{v}"),
    }
}

/// `FROM --platform=P`: the stage's image says it is for P, and P is part
/// of every later key. A base made for another platform is used anyway,
/// with a warning (BuildKit's InvalidBaseImagePlatform); nothing emulates
/// another architecture, so a RUN there fails as the kernel decides.
fn record_platform(state: &mut StageState, platform: &Platform, base: &str, step: &StepCtx) {
    let root = &mut state.config.0;
    let field = |k: &str| {
        root.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (os, arch) = (field("os"), field("architecture"));
    if !state.layers.is_empty() && (os != platform.os || arch != platform.architecture) {
        step.emit(BuildEvent::Warning {
            message: format!("FROM --platform={platform}: the base {base} is for {os}/{arch}"),
        });
    }
    if let Some(obj) = root.as_object_mut() {
        obj.insert("os".into(), json!(platform.os));
        obj.insert("architecture".into(), json!(platform.architecture));
        match &platform.variant {
            Some(v) => obj.insert("variant".into(), json!(v)),
            None => obj.remove("variant"),
        };
    }
    state.key = format!("{}\0platform:{platform}", state.key);
    state.inputs.push(KeyInput::Setting {
        name: "FROM --platform".into(),
        digest: platform.to_string(),
    });
}

/// Build args no ARG declares, neither global nor in the stages built, in
/// name order; the proxy variables every build takes are never unused.
fn unused_build_args(
    doc: &Dockerfile,
    stages: &[usize],
    build_args: &HashMap<String, String>,
) -> Vec<String> {
    const PREDEFINED: [&str; 5] = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    ];
    let mut declared: Vec<&str> = doc.global_args.iter().map(|a| a.name.as_str()).collect();
    for i in stages {
        for inst in doc.stages[*i]
            .instructions
            .iter()
            .filter(|i| i.name == "arg")
        {
            declared.extend(inst.args.iter().map(|a| a.split('=').next().unwrap_or(a)));
        }
    }
    let mut unused: Vec<String> = build_args
        .keys()
        .filter(|k| !declared.contains(&k.as_str()))
        .filter(|k| !PREDEFINED.contains(&k.to_ascii_uppercase().as_str()))
        .cloned()
        .collect();
    unused.sort();
    unused
}

/// What a stage has done so far that changes later instructions.
#[derive(Debug, Default)]
pub(crate) struct StageProgress {
    /// CMD was set in this stage: a later ENTRYPOINT keeps it.
    cmd_set: bool,
}

/// Apply a config-only instruction.
fn apply_config(
    inst: &Instruction,
    escape: char,
    vars: &BTreeMap<String, String>,
    cfg: &mut ImageConfig,
    stage: &mut StageProgress,
) -> Result<(), String> {
    let expand = |w: &str| expand_word(w, vars, escape).map_err(|e| e.to_string());
    let exec_or_shell = |cfg: &ImageConfig| -> Value {
        match inst.form {
            Some(Form::Exec) => json!(inst.args),
            _ => {
                let mut shell = cfg.strings("Shell");
                if shell.is_empty() {
                    shell = vec!["/bin/sh".into(), "-c".into()];
                }
                shell.push(inst.args.join(" "));
                json!(shell)
            }
        }
    };
    match inst.name.as_str() {
        "arg" => {}
        "env" => {
            let pairs: Vec<(String, String)> = inst
                .pairs
                .iter()
                .flatten()
                .map(|p| Ok((expand(&p.key)?, expand(p.value.as_deref().unwrap_or(""))?)))
                .collect::<Result<_, String>>()?;
            for (k, v) in pairs {
                cfg.set_env(&k, &v);
            }
        }
        "label" => {
            for p in inst.pairs.iter().flatten() {
                cfg.insert_into(
                    "Labels",
                    &expand(&p.key)?,
                    json!(expand(p.value.as_deref().unwrap_or(""))?),
                );
            }
        }
        "maintainer" => {
            let root = &mut cfg.0;
            root["author"] = json!(inst.args.join(" "));
        }
        "workdir" => {
            let dir = expand(inst.args.first().map(String::as_str).unwrap_or(""))?;
            let joined = if dir.starts_with('/') {
                dir
            } else {
                format!("{}/{dir}", cfg.string("WorkingDir").unwrap_or_default())
            };
            cfg.set(
                "WorkingDir",
                json!(format!("/{}", crate::context::clean(&joined))),
            );
        }
        "user" => cfg.set(
            "User",
            json!(expand(inst.args.first().map(String::as_str).unwrap_or(""))?),
        ),
        "cmd" => {
            let v = exec_or_shell(cfg);
            cfg.set("Cmd", v);
            stage.cmd_set = true;
        }
        "entrypoint" => {
            let v = exec_or_shell(cfg);
            cfg.set("Entrypoint", v);
            // ENTRYPOINT resets a CMD inherited from the base (or an earlier
            // stage), not one set in this stage (BuildKit's d.cmdSet).
            if !stage.cmd_set {
                cfg.set("Cmd", Value::Null);
            }
        }
        "expose" => {
            for p in &inst.args {
                let p = expand(p)?;
                let p = if p.contains('/') {
                    p
                } else {
                    format!("{p}/tcp")
                };
                cfg.insert_into("ExposedPorts", &p, json!({}));
            }
        }
        "volume" => {
            for v in &inst.args {
                cfg.insert_into("Volumes", &expand(v)?, json!({}));
            }
        }
        "stopsignal" => cfg.set(
            "StopSignal",
            json!(expand(inst.args.first().map(String::as_str).unwrap_or(""))?),
        ),
        "shell" => cfg.set("Shell", json!(inst.args)),
        "onbuild" => {
            let mut triggers = cfg.strings("OnBuild");
            triggers.push(inst.args.join(" "));
            cfg.set("OnBuild", json!(triggers));
        }
        "healthcheck" => {
            let test: Vec<String> = match inst.args.first().map(String::as_str) {
                Some(a) if a.eq_ignore_ascii_case("NONE") => vec!["NONE".into()],
                _ => {
                    let rest = &inst.args[1.min(inst.args.len())..];
                    match inst.form {
                        Some(Form::Exec) => [vec!["CMD".to_string()], rest.to_vec()].concat(),
                        _ => vec!["CMD-SHELL".into(), rest.join(" ")],
                    }
                }
            };
            let mut hc = json!({ "Test": test });
            for (flag, field) in [
                ("interval", "Interval"),
                ("timeout", "Timeout"),
                ("start-period", "StartPeriod"),
                ("start-interval", "StartInterval"),
            ] {
                if let Some(v) = inst.flags.get(flag).and_then(|v| v.last()) {
                    let d =
                        humantime::parse_duration(v).map_err(|e| format!("--{flag}={v}: {e}"))?;
                    hc[field] = json!(d.as_nanos() as u64);
                }
            }
            if let Some(v) = inst.flags.get("retries").and_then(|v| v.last()) {
                hc["Retries"] = json!(v
                    .parse::<u64>()
                    .map_err(|_| format!("--retries={v}: not a number"))?);
            }
            cfg.set("Healthcheck", hc);
        }
        other => {
            return Err(format!(
                "instruction {} is not supported here",
                other.to_uppercase()
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
