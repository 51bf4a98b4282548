//! The image config (`application/vnd.oci.image.config.v1+json`, with
//! Docker's fields) as one typed value for every producer: builds, sandbox
//! commits and snapshots read and edit it here.
//!
//! Why not oci-spec's `ImageConfiguration`: it drops Docker's Healthcheck,
//! OnBuild, Shell and ArgsEscaped (BuildKit keeps them in OCI images too)
//! and every field a base image carries that the spec lacks. Here each
//! object keeps what it does not know in `other`, and each known field
//! remembers whether it was absent, `null` or set ([`Field`]), so a base
//! image's config comes back out with the same content.
//!
//! Bytes: [`ImageConfig::to_bytes`] writes every object with its keys in
//! sorted order and no spaces, which is what Cairn has always written
//! (serde_json's sorted maps); an image's digest depends on it, so
//! `crates/builder/tests/config_golden.rs` pins it.

use crate::Digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A config field that may be absent, JSON `null`, or set. The difference
/// between the first two is kept because it is part of the bytes (and so of
/// the digest): `"Cmd": null` written by ENTRYPOINT, absent when unset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Field<T> {
    /// The value, when set.
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }

    /// The value, set to the default first when absent or null (as Docker
    /// does when it adds to a null map or list).
    pub fn get_or_insert_default(&mut self) -> &mut T
    where
        T: Default,
    {
        if !matches!(self, Field::Set(_)) {
            *self = Field::Set(T::default());
        }
        match self {
            Field::Set(v) => v,
            _ => unreachable!("set just above"),
        }
    }
}

impl<T: Clone + Default> Field<T> {
    /// A copy of the value, or the default when absent or null.
    pub fn or_default(&self) -> T {
        self.get().cloned().unwrap_or_default()
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Set(v) => v.serialize(s),
            // Absent fields are skipped by `skip_serializing_if`.
            Field::Absent | Field::Null => s.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A missing key never gets here: `#[serde(default)]` makes it Absent.
        Ok(Option::<T>::deserialize(d)?.map_or(Field::Null, Field::Set))
    }
}

/// An image config document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub architecture: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub os: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub variant: Field<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub created: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub author: Field<String>,
    /// What a container of the image runs with (Docker's container config).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub config: Field<RunConfig>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub rootfs: Field<RootFs>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub history: Field<Vec<History>>,
    /// Fields Cairn does not know (`container_config`, `docker_version`, ...), kept as they came.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The `config` object: what a container of the image runs with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user: Field<String>,
    /// `KEY=value` entries, in order.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub env: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub cmd: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub entrypoint: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub working_dir: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub labels: Field<BTreeMap<String, String>>,
    /// `port/proto` -> `{}`.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub exposed_ports: Field<BTreeMap<String, Value>>,
    /// path -> `{}`.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub volumes: Field<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub stop_signal: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub healthcheck: Field<Healthcheck>,
    /// ONBUILD triggers, as their instruction text.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub on_build: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub shell: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub args_escaped: Field<bool>,
    /// Docker's other container fields (Hostname, Tty, Image, ...).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// HEALTHCHECK: durations in nanoseconds, as Docker writes them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", argv...]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub test: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub interval: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub timeout: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub start_period: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub start_interval: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub retries: Field<i64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `rootfs`: the layers' diff ids, lowest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default, skip_serializing_if = "Field::is_absent")]
    pub kind: Field<String>,
    /// As written (text): parsed by [`layer_diff_ids`], so a malformed one is
    /// reported where it matters rather than making the whole config unreadable.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub diff_ids: Field<Vec<String>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl RootFs {
    /// `{"type": "layers", "diff_ids": []}`.
    pub fn layers() -> RootFs {
        RootFs {
            kind: Field::Set("layers".into()),
            diff_ids: Field::Set(vec![]),
            other: Map::new(),
        }
    }
}

/// One `history` entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub created: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub created_by: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub author: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub comment: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub empty_layer: Field<bool>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl History {
    /// An entry as Cairn writes them: `created`, `created_by`, and
    /// `empty_layer: true` only for a step without a layer (Docker's omitempty).
    pub fn new(created: &str, created_by: &str, empty_layer: bool) -> History {
        History {
            created: Field::Set(created.into()),
            created_by: Field::Set(created_by.into()),
            empty_layer: match empty_layer {
                true => Field::Set(true),
                false => Field::Absent,
            },
            ..History::default()
        }
    }
}

/// Why a config does not give one diff id per layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffIdError {
    #[error("{layers} layers but {diff_ids} diff ids")]
    Count { layers: usize, diff_ids: usize },
    #[error("diff id {index} ({value:?}) is not a sha256 digest")]
    Malformed { index: usize, value: String },
}

/// The one reading of `rootfs.diff_ids` against a manifest's layer count:
/// every id parsed, one per layer (a missing list is an empty one).
pub fn layer_diff_ids(ids: &[String], layers: usize) -> Result<Vec<Digest>, DiffIdError> {
    if ids.len() != layers {
        return Err(DiffIdError::Count {
            layers,
            diff_ids: ids.len(),
        });
    }
    ids.iter()
        .enumerate()
        .map(|(index, id)| {
            id.parse().map_err(|_| DiffIdError::Malformed {
                index,
                value: id.clone(),
            })
        })
        .collect()
}

impl ImageConfig {
    /// Parse config bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The bytes Cairn writes: compact JSON, every object's keys sorted
    /// (through `serde_json::Value`, whose maps sort; sorted again in case a
    /// dependency turns on serde_json's `preserve_order`).
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut value = serde_json::to_value(self)?;
        value.sort_all_objects();
        serde_json::to_vec(&value)
    }

    /// The run config, when the document has one.
    pub fn run(&self) -> Option<&RunConfig> {
        self.config.get()
    }

    /// The run config, made empty first when absent or null.
    pub fn run_mut(&mut self) -> &mut RunConfig {
        self.config.get_or_insert_default()
    }

    /// `rootfs.diff_ids` as written (empty when absent).
    pub fn diff_id_texts(&self) -> &[String] {
        self.rootfs
            .get()
            .and_then(|r| r.diff_ids.get())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// One diff id per layer of a manifest with `layers` layers.
    pub fn layer_diff_ids(&self, layers: usize) -> Result<Vec<Digest>, DiffIdError> {
        layer_diff_ids(self.diff_id_texts(), layers)
    }

    /// Append a layer's diff id (a missing rootfs becomes `{"type": "layers"}`).
    pub fn push_diff_id(&mut self, diff_id: &Digest) {
        if self.rootfs.is_absent() {
            self.rootfs = Field::Set(RootFs::layers());
        }
        let rootfs = self.rootfs.get_or_insert_default();
        rootfs
            .diff_ids
            .get_or_insert_default()
            .push(diff_id.to_string());
    }

    /// Append a history entry.
    pub fn push_history(&mut self, entry: History) {
        self.history.get_or_insert_default().push(entry);
    }

    /// `os/arch[/variant]` (`linux/amd64` for what the config leaves out).
    pub fn platform(&self) -> String {
        let field = |f: &Field<String>| f.get().cloned().unwrap_or_default();
        let (os, arch) = (field(&self.os), field(&self.architecture));
        let os = if os.is_empty() { "linux".into() } else { os };
        let arch = if arch.is_empty() {
            "amd64".into()
        } else {
            arch
        };
        match field(&self.variant).as_str() {
            "" => format!("{os}/{arch}"),
            v => format!("{os}/{arch}/{v}"),
        }
    }
}

impl RunConfig {
    /// ENV entries as (key, value) in order (an entry without `=` has an empty value).
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .or_default()
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e, String::new()),
            })
            .collect()
    }

    /// Set one ENV variable, replacing an earlier value in place (Docker
    /// keeps the position); the list is rewritten as `KEY=value` entries.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env_pairs();
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => env.push((key.to_string(), value.to_string())),
        }
        self.env = Field::Set(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect());
    }
}

#[cfg(test)]
mod tests;
