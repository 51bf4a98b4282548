//! Where a stage starts: scratch, an earlier stage, a store image, an `oci:`/`oci-archive:`
//! layout or a registry pull; loading an image into a stage's state; its extracted layer dirs.

use crate::config::Field;
use crate::events::{BuildEvent, StepCtx};
use crate::keys::KeyInput;
use crate::plan::stage_index;
use crate::state::{LayerRef, StageState, EPOCH};
use crate::{BuildError, Builder};
use cairn_dockerfile::Dockerfile;
use cairn_layer::Digest;
use cairn_registry::Platform;
use cairn_store::transport::Transport;
use cairn_store::StoreError;
use std::path::PathBuf;

impl Builder<'_> {
    /// The state a stage starts from; `platform` picks a registry base's
    /// image from its index and is what a scratch stage says it is for.
    pub(crate) fn resolve_base(
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
                    let sink = self.tasks.layer_sink();
                    registry
                        .pull_platform(self.store, base, platform, Some(&*sink), Some(step))?
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
        let image = self.store.image(manifest).map_err(|e| match e {
            StoreError::NotAnImage(_) => BuildError::unsupported(format!(
                "FROM {name}: an image index (pick one platform's image)"
            )),
            e @ (StoreError::BadImageConfig { .. } | StoreError::DiffIds { .. }) => {
                BuildError::input(format!("FROM {name}: {e}"))
            }
            e => e.into(),
        })?;
        let config = image.config;
        let created = config
            .created
            .get()
            .map_or(EPOCH, String::as_str)
            .to_string();
        let layers = image
            .layers
            .into_iter()
            .map(|l| LayerRef {
                digest: l.blob.digest,
                size: l.blob.size,
                media_type: l.blob.media_type,
                diff_id: l.diff_id,
            })
            .collect();
        let platform = config.platform();
        let key = crate::keys::base_key(&manifest.to_string(), &platform);
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
            pending_files: None,
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
        let pairs: Vec<(Digest, Digest)> =
            state.layers.iter().map(|l| (l.digest, l.diff_id)).collect();
        self.tasks.extract_layers(&pairs)
    }
}

/// `FROM --platform=P`: the stage's image says it is for P, and P is part
/// of every later key. A base made for another platform is used anyway,
/// with a warning (BuildKit's InvalidBaseImagePlatform); nothing emulates
/// another architecture, so a RUN there fails as the kernel decides.
pub(crate) fn record_platform(
    state: &mut StageState,
    platform: &Platform,
    base: &str,
    step: &StepCtx,
) {
    let config = &mut state.config;
    let field = |f: &Field<String>| f.get().cloned().unwrap_or_default();
    let (os, arch) = (field(&config.os), field(&config.architecture));
    if !state.layers.is_empty() && (os != platform.os || arch != platform.architecture) {
        step.emit(BuildEvent::Warning {
            message: format!("FROM --platform={platform}: the base {base} is for {os}/{arch}"),
        });
    }
    config.os = Field::Set(platform.os.clone());
    config.architecture = Field::Set(platform.architecture.clone());
    config.variant = match &platform.variant {
        Some(v) => Field::Set(v.clone()),
        None => Field::Absent,
    };
    state.key = crate::keys::platform_key(&state.key, &platform.to_string());
    state.inputs.push(KeyInput::Setting {
        name: "FROM --platform".into(),
        digest: platform.to_string(),
    });
}
