//! Where a stage starts: scratch, an earlier stage, a store image, an `oci:`/`oci-archive:`
//! layout or a registry pull; loading an image into a stage's state; its extracted layer dirs.

use crate::config::ImageConfig;
use crate::events::{BuildEvent, StepCtx};
use crate::keys::{KeyBuilder, KeyInput};
use crate::plan::stage_index;
use crate::state::{LayerRef, StageState, EPOCH};
use crate::{BuildError, Builder};
use cairn_dockerfile::Dockerfile;
use cairn_layer::Digest;
use cairn_registry::Platform;
use cairn_sandbox::manager::SandboxManager;
use cairn_store::image::ManifestKind;
use cairn_store::transport::Transport;
use serde_json::{json, Value};
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
                    registry
                        .pull_platform(self.store, base, platform, None, Some(step))?
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
pub(crate) fn record_platform(
    state: &mut StageState,
    platform: &Platform,
    base: &str,
    step: &StepCtx,
) {
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
