//! The build cache shared through an OCI registry (`--cache-from`,
//! `--cache-to type=registry,...`, BuildKit's syntax).
//!
//! A cache manifest is an OCI artifact ([`document::ARTIFACT_TYPE`]) whose
//! config maps cache keys to layers; the layers are ordinary blobs. Keys are
//! the local cache's keys (`keys.rs`), which depend on inputs only, so two
//! stores building the same thing compute the same keys.
//!
//! The builder calls in at two points: where a local cache lookup misses
//! ([`import`]: the step's layer blob is pulled, its diff id checked, and
//! the entry recorded in the local cache, then the local lookup is
//! retried; the layer is extracted only when a later step or a sandbox
//! needs its tree) and after the build ([`export`]). A cache registry that is down, slow or answers garbage
//! costs a `tracing::warn!` and a local build, never a failure.

mod document;
mod spec;
mod verify;

pub use document::{ARTIFACT_TYPE, CONFIG_MEDIA_TYPE};
pub use spec::{CacheExport, CacheImport, CacheMode};

use crate::events::BuildEvent;
use crate::BuildError;
use crate::{BuildRequest, BuildResult, Builder};
use cairn_registry::{ArtifactSpec, Registry, RegistryOptions};
use cairn_store::cache::CacheEntry;
use document::Entry;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use verify::DiffIdCheck;

/// How long fetching the cache manifests may take, all of them together.
const FETCH_DEADLINE: Duration = Duration::from_secs(15);

/// One build's registry-cache state. The executor makes a builder of its
/// own for each build (`Builder::for_one_build`), holding a fresh one, so
/// builds never share a session, whatever request values they share.
#[derive(Default)]
pub(crate) struct RemoteCache {
    session: Session,
}

/// One build's use of the registry cache.
#[derive(Default)]
struct Session {
    /// The client for cache registries, made on first use.
    registry: OnceLock<Option<Registry>>,
    /// The imported entries by key, with the reference to pull from;
    /// fetched once per build, on the first local miss.
    index: OnceLock<HashMap<String, (String, Entry)>>,
    /// Every layer of the cache the local one lacked was fetched at the
    /// first hit (not extracted): the keys recorded then.
    prefetched: OnceLock<HashSet<String>>,
    /// The diff ids the import's layer blobs were found to have.
    found: verify::Found,
    /// A cache registry failed mid-build: stop asking it.
    broken: AtomicBool,
    /// The keys the build's layer steps looked up, for the export.
    keys: Mutex<BTreeSet<String>>,
}

impl RemoteCache {
    fn session(&self) -> &Session {
        &self.session
    }

    /// A layer step of `req` looked up `key` (exported if it has a layer).
    pub(crate) fn note_key(&self, req: &BuildRequest, key: &str) {
        if req.cache_to.is_empty() {
            return;
        }
        let mut keys = self.session.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.insert(key.to_string());
    }
}

impl Session {
    fn registry(&self, builder: &Builder) -> Option<&Registry> {
        self.registry
            .get_or_init(|| {
                let opts = builder
                    .registry
                    .map(|r| r.options().clone())
                    .unwrap_or_else(RegistryOptions::from_env);
                Registry::new(cache_options(opts))
                    .map_err(|e| tracing::warn!("registry cache: no client: {e}"))
                    .ok()
            })
            .as_ref()
    }

    fn index(&self, builder: &Builder, req: &BuildRequest) -> &HashMap<String, (String, Entry)> {
        self.index.get_or_init(|| {
            let Some(registry) = self.registry(builder) else {
                return HashMap::new();
            };
            let mut index = HashMap::new();
            for from in &req.cache_from {
                for entry in fetch_entries(registry, builder, &from.reference) {
                    index
                        .entry(entry.key.clone())
                        .or_insert_with(|| (from.reference.clone(), entry));
                }
            }
            index
        })
    }
}

/// The builder's registry options, with fewer retries and shorter waits:
/// a cache is worth less than the time a dead registry would cost.
fn cache_options(mut opts: RegistryOptions) -> RegistryOptions {
    opts.retry.max_attempts = opts.retry.max_attempts.min(2);
    opts.connect_timeout = opts.connect_timeout.min(Duration::from_secs(5));
    opts.read_timeout = opts.read_timeout.min(Duration::from_secs(30));
    opts
}

/// The usable entries of one cache manifest; none (and a warning) when it
/// cannot be had.
fn fetch_entries(registry: &Registry, builder: &Builder, reference: &str) -> Vec<Entry> {
    let fetched = registry.fetch_artifact(builder.store, reference, ARTIFACT_TYPE, FETCH_DEADLINE);
    let artifact = match fetched {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("--cache-from {reference}: not used: {e}");
            return Vec::new();
        }
    };
    match document::decode(&artifact.config, &artifact.layers) {
        Ok((entries, dropped)) => {
            for why in dropped {
                tracing::warn!("--cache-from {reference}: {why}: ignored");
            }
            tracing::info!("--cache-from {reference}: {} cached steps", entries.len());
            entries
        }
        Err(e) => {
            tracing::warn!("--cache-from {reference}: not used: {e}");
            Vec::new()
        }
    }
}

/// A local cache miss of `key`: if a `--cache-from` manifest has the key,
/// get its layer blob (only a missing blob moves; its digest and diff id
/// are checked as it downloads) and record the entry in the local cache.
/// The layer is not extracted: its dir is made when something needs the
/// tree. True when the local cache now has the key.
pub(crate) fn import(builder: &Builder, req: &BuildRequest, key: &str) -> bool {
    if req.cache_from.is_empty() || req.no_cache {
        return false;
    }
    let session = builder.remote_cache.session();
    if session.broken.load(Ordering::Relaxed) {
        return false;
    }
    let index = session.index(builder, req);
    let Some((reference, entry)) = index.get(key) else {
        return false;
    };
    let Some(registry) = session.registry(builder) else {
        return false;
    };
    let recorded = session
        .prefetched
        .get_or_init(|| prefetch(builder, registry, index, &session.found));
    if recorded.contains(key) {
        return true;
    }
    // Not had at the first hit: this layer alone, once more.
    let check = DiffIdCheck::new(builder.store, size_limit(), &session.found);
    let layer = [(entry.blob(), entry.diff_id)];
    let fetched = registry.fetch_layers(builder.store, reference, &layer, &check);
    let checked = check.verified(&entry.layer, &entry.diff_id);
    let why = match (fetched, checked) {
        (_, true) => match record(builder, &[entry]) {
            Ok(()) => return true,
            Err(e) => e.to_string(),
        },
        (Err(e), false) => {
            if !builder.store.has_blob(&entry.layer) {
                // The transfer failed: stop asking this build's registry.
                session.broken.store(true, Ordering::Relaxed);
            }
            e.to_string()
        }
        (Ok(_), false) => "its diff id was not checked".into(),
    };
    tracing::warn!(
        "--cache-from {reference}: layer {}: {why}; building locally",
        entry.layer
    );
    false
}

/// The uncompressed size a cache layer may have (the extraction limit).
fn size_limit() -> Option<u64> {
    cairn_layer::ExtractLimits::from_env()
        .unwrap_or_default()
        .max_size
}

/// The first hit shows the cache applies: fetch the blobs of every entry
/// the local cache lacks, at once and in parallel, each checked as it
/// downloads (`verify`), and record the entries whose layers checked out,
/// in one commit. Their keys. Best effort: a layer that fails here is tried
/// again, alone, by its own step.
fn prefetch(
    builder: &Builder,
    registry: &Registry,
    index: &HashMap<String, (String, Entry)>,
    found: &verify::Found,
) -> HashSet<String> {
    let wanted: Vec<&(String, Entry)> = index
        .values()
        .filter(|(_, e)| !matches!(builder.store.cache_peek(&e.key), Ok(Some(_))))
        .collect();
    let mut by_ref: HashMap<&str, Vec<_>> = HashMap::new();
    for (reference, entry) in &wanted {
        by_ref
            .entry(reference.as_str())
            .or_default()
            .push((entry.blob(), entry.diff_id));
    }
    let check = DiffIdCheck::new(builder.store, size_limit(), found);
    for (reference, mut layers) in by_ref {
        layers.sort_by_key(|(b, _)| (std::cmp::Reverse(b.size), b.digest.to_string()));
        layers.dedup_by_key(|(b, _)| b.digest);
        if let Err(e) = registry.fetch_layers(builder.store, reference, &layers, &check) {
            tracing::warn!("--cache-from {reference}: prefetching layers: {e}");
        }
    }
    let good: Vec<&Entry> = wanted
        .iter()
        .map(|(_, e)| e)
        .filter(|e| check.verified(&e.layer, &e.diff_id))
        .collect();
    match record(builder, &good) {
        Ok(()) => good.iter().map(|e| e.key.clone()).collect(),
        Err(e) => {
            tracing::warn!("--cache-from: recording the imported entries: {e}");
            HashSet::new()
        }
    }
}

/// Record imported entries (their blobs stored and checked) in the local
/// cache, in one commit.
fn record(builder: &Builder, entries: &[&Entry]) -> Result<(), BuildError> {
    let rows: Vec<CacheEntry> = entries
        .iter()
        .map(|entry| CacheEntry {
            key: entry.key.clone(),
            layer_digest: Some(entry.layer),
            diff_id: Some(entry.diff_id),
            size: entry.size,
            value: json!({
                "media_type": entry.media_type,
                "created_by": entry.created_by,
                "created": entry.created,
            })
            .to_string(),
        })
        .collect();
    builder.store.cache_put_imported(&rows)?;
    Ok(())
}

/// After a build: push its cache to every `--cache-to`. A failed export warns, or fails the build when its
/// `ignore-error` is false.
pub(crate) fn export(
    builder: &Builder,
    req: &BuildRequest,
    result: Result<BuildResult, BuildError>,
    events: &mut dyn FnMut(&BuildEvent),
) -> Result<BuildResult, BuildError> {
    let session = builder.remote_cache.session();
    let result = result?;
    if req.cache_to.is_empty() {
        return Ok(result);
    }
    let entries = local_entries(builder, session)?;
    let (_, manifest) = builder.store.manifest(&result.manifest)?;
    for to in &req.cache_to {
        let chosen: Vec<Entry> = entries
            .iter()
            .filter(|e| {
                to.mode == CacheMode::Max || manifest.children.iter().any(|l| l.digest == e.layer)
            })
            .cloned()
            .collect();
        let (config, layers) = document::encode(chosen);
        let spec = ArtifactSpec {
            artifact_type: ARTIFACT_TYPE,
            config_media_type: CONFIG_MEDIA_TYPE,
            config: &config,
            layers: &layers,
        };
        let pushed = match session.registry(builder) {
            Some(registry) => registry
                .push_artifact(builder.store, &to.reference, &spec)
                .map_err(BuildError::from),
            None => Err(BuildError::Internal("no registry client".into())),
        };
        match pushed {
            Ok(report) => tracing::info!(
                "--cache-to {}: {} layers, {} uploaded, {} present, {} mounted",
                to.reference,
                layers.len(),
                report.blobs_uploaded,
                report.blobs_present,
                report.blobs_mounted
            ),
            Err(e) if to.ignore_error => {
                let message = format!("--cache-to {}: cache not exported: {e}", to.reference);
                tracing::warn!("{message}");
                events(&BuildEvent::Warning { message });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(result)
}

/// The local cache entries of the keys the build's layer steps looked up
/// (steps that made no layer, as a WORKDIR that existed, have none).
fn local_entries(builder: &Builder, session: &Session) -> Result<Vec<Entry>, BuildError> {
    let keys = session
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut entries = Vec::new();
    for key in keys {
        let Some(local) = builder.store.cache_get(&key)? else {
            continue;
        };
        let (Some(layer), Some(diff_id)) = (local.layer_digest, local.diff_id) else {
            continue;
        };
        let value: Value = serde_json::from_str(&local.value).unwrap_or(Value::Null);
        let field = |k: &str| value[k].as_str().unwrap_or_default().to_string();
        entries.push(Entry {
            key,
            layer,
            diff_id,
            media_type: field("media_type"),
            size: local.size,
            created: field("created"),
            created_by: field("created_by"),
        });
    }
    Ok(entries)
}
