//! `build --label` and `--annotation`: the built image again with labels
//! added to its config and annotations to its manifest (as BuildKit sets
//! them on the result, with no history entry). Blobs are shared; only the
//! config and manifest are new.

use crate::exit::{classify, CliError};
use cairn::store::{Digest, Store};
use serde_json::{Map, Value};

/// `KEY=VALUE` flags into a map (a bare KEY gets an empty value, as docker).
pub fn parse_pairs(flag: &str, values: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut map = Map::new();
    for v in values {
        let (k, val) = v.split_once('=').unwrap_or((v, ""));
        if k.is_empty() {
            return Err(CliError::bad_input(format!(
                "{flag} {v:?}: expected KEY=VALUE"
            )));
        }
        map.insert(k.to_string(), Value::String(val.to_string()));
    }
    Ok(map)
}

/// The digest of `manifest` with `labels` and `annotations` added.
pub fn relabel(
    store: &Store,
    manifest: &Digest,
    labels: &Map<String, Value>,
    annotations: &Map<String, Value>,
) -> Result<Digest, CliError> {
    let (bytes, parsed) = store.manifest(manifest).map_err(classify)?;
    let bad = |why: String| CliError::failed(format!("adding labels to {manifest}: {why}"));
    let mut doc: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if !labels.is_empty() {
        let config_ref = parsed
            .config
            .as_ref()
            .ok_or_else(|| bad("no config".into()))?;
        let raw = store
            .read_blob_bytes(&config_ref.digest)
            .map_err(classify)?;
        let mut config: Value = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
        let inner = config
            .as_object_mut()
            .ok_or_else(|| bad("config is not an object".into()))?
            .entry("config")
            .or_insert_with(|| Value::Object(Map::new()));
        let slot = inner
            .as_object_mut()
            .ok_or_else(|| bad("config.config is not an object".into()))?
            .entry("Labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        if let Some(m) = slot.as_object_mut() {
            m.extend(labels.clone());
        }
        let body = serde_json::to_vec(&config).map_err(|e| bad(e.to_string()))?;
        let info = store.ingest_bytes(&body, None).map_err(classify)?;
        doc["config"]["digest"] = Value::String(info.digest.to_string());
        doc["config"]["size"] = Value::from(info.size);
    }
    if !annotations.is_empty() {
        let slot = doc
            .as_object_mut()
            .ok_or_else(|| bad("manifest is not an object".into()))?
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = slot.as_object_mut() {
            m.extend(annotations.clone());
        }
    }
    let body = serde_json::to_vec(&doc).map_err(|e| bad(e.to_string()))?;
    let recorded = store
        .record_manifest(&body, Some(&parsed.media_type))
        .map_err(classify)?;
    Ok(recorded.digest)
}
