//! The image config as a JSON document, edited in place.
//!
//! oci-spec's `Config` drops Docker's fields that the OCI config lacks
//! (Healthcheck, OnBuild, Shell, ArgsEscaped) and BuildKit keeps them in OCI
//! images too; a `serde_json::Value` keeps every field a base image carries
//! and lets us write exactly the ones Docker writes.

use cairn_registry::Platform;
use serde_json::{json, Map, Value};

/// An image config document (`architecture`, `os`, `config`, `rootfs`, `history`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig(pub Value);

impl ImageConfig {
    /// The config of `FROM scratch` for `platform`: BuildKit's empty image
    /// has the default PATH in its Env.
    pub fn scratch(platform: &Platform) -> Self {
        let mut doc = json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {
                "Env": [format!("PATH={}", cairn_dockerfile::scope::DEFAULT_PATH)],
            },
            "rootfs": { "type": "layers", "diff_ids": [] },
            "history": [],
        });
        if let (Some(v), Some(obj)) = (&platform.variant, doc.as_object_mut()) {
            obj.insert("variant".into(), json!(v));
        }
        ImageConfig(doc)
    }

    /// The `config` object (Env, Cmd, ...), created when missing.
    pub fn runtime(&mut self) -> &mut Map<String, Value> {
        let root = object(&mut self.0);
        let cfg = root.entry("config").or_insert_with(|| json!({}));
        object(cfg)
    }

    fn runtime_ref(&self) -> Option<&Map<String, Value>> {
        self.0.get("config").and_then(Value::as_object)
    }

    /// A string array field of `config` (Env, Cmd, Entrypoint, Shell).
    pub fn strings(&self, field: &str) -> Vec<String> {
        self.runtime_ref()
            .and_then(|c| c.get(field))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A string field of `config` (User, WorkingDir, StopSignal).
    pub fn string(&self, field: &str) -> Option<String> {
        self.runtime_ref()
            .and_then(|c| c.get(field))
            .and_then(Value::as_str)
            .map(String::from)
    }

    pub fn set(&mut self, field: &str, value: Value) {
        self.runtime().insert(field.to_string(), value);
    }

    /// ENV entries as (key, value) in order.
    pub fn env(&self) -> Vec<(String, String)> {
        self.strings("Env")
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e, String::new()),
            })
            .collect()
    }

    /// Set one ENV variable, replacing an earlier value in place (Docker keeps the position).
    pub fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => env.push((key.to_string(), value.to_string())),
        }
        let list: Vec<Value> = env
            .into_iter()
            .map(|(k, v)| Value::String(format!("{k}={v}")))
            .collect();
        self.set("Env", Value::Array(list));
    }

    /// Add entries to a map-valued field (Labels, ExposedPorts, Volumes).
    pub fn insert_into(&mut self, field: &str, key: &str, value: Value) {
        let map = self
            .runtime()
            .entry(field.to_string())
            .or_insert_with(|| json!({}));
        if !map.is_object() {
            *map = json!({});
        }
        object(map).insert(key.to_string(), value);
    }

    pub fn diff_ids(&self) -> Vec<String> {
        self.0["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn push_diff_id(&mut self, diff_id: &str) {
        let root = object(&mut self.0);
        let rootfs = root
            .entry("rootfs")
            .or_insert_with(|| json!({ "type": "layers", "diff_ids": [] }));
        let ids = object(rootfs)
            .entry("diff_ids")
            .or_insert_with(|| json!([]));
        push(ids, Value::String(diff_id.to_string()));
    }

    /// Append a history entry as Docker writes them.
    pub fn push_history(&mut self, created: &str, created_by: &str, empty_layer: bool) {
        let mut entry = json!({ "created": created, "created_by": created_by });
        if empty_layer {
            entry["empty_layer"] = Value::Bool(true);
        }
        let root = object(&mut self.0);
        push(root.entry("history").or_insert_with(|| json!([])), entry);
    }

    pub fn set_created(&mut self, created: &str) {
        object(&mut self.0).insert("created".into(), Value::String(created.to_string()));
    }
}

fn object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn push(v: &mut Value, item: Value) {
    match v {
        Value::Array(a) => a.push(item),
        other => *other = Value::Array(vec![item]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_replaces_in_place_and_keeps_unknown_fields() {
        let mut c = ImageConfig(
            json!({"config": {"Env": ["A=1", "B=2"], "Healthcheck": {"Test": ["NONE"]}}}),
        );
        c.set_env("A", "3");
        c.set_env("C", "4");
        assert_eq!(c.strings("Env"), vec!["A=3", "B=2", "C=4"]);
        assert_eq!(c.0["config"]["Healthcheck"]["Test"][0], "NONE");
    }

    #[test]
    fn history_and_diff_ids_accumulate() {
        let mut c = ImageConfig::scratch(&Platform::linux_amd64());
        c.push_diff_id("sha256:aa");
        c.push_history("1970-01-01T00:00:00Z", "RUN x", false);
        c.push_history("1970-01-01T00:00:00Z", "ENV a=b", true);
        assert_eq!(c.diff_ids(), vec!["sha256:aa"]);
        assert_eq!(c.0["history"][1]["empty_layer"], true);
        assert!(c.0["history"][0].get("empty_layer").is_none());
    }
}
