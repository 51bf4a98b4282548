//! The snapshot record, with the field names of the platform's snapshot
//! structure (`../shared/seeds/000_*.txt`), so JSON and YAML output match it.

use crate::state::SnapshotState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a snapshot's image came from and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// `dockerfile`, `image`, `local_image` or `sandbox`.
    pub source_kind: String,
    /// The Dockerfile's text, for Dockerfile builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// Digest of the build context, for Dockerfile builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_digest: Option<String>,
    /// The context the build used: the directory given with the Dockerfile's
    /// text, or the files and dirs taken for a Dockerfile path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// The image reference, for image snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub id: String,
    /// `name:version`.
    pub name: String,
    pub organization_id: String,
    /// Public and read-only, visible to every organization.
    pub general: bool,
    pub state: SnapshotState,
    /// The image reference the snapshot lives at.
    pub image_name: String,
    /// Bytes of compressed layers.
    pub size: u64,
    pub entrypoint: Vec<String>,
    pub cpu: u32,
    pub gpu: u32,
    /// GB.
    pub mem: u32,
    /// GB.
    pub disk: u32,
    pub build_info: Option<BuildInfo>,
    pub region_ids: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
}

/// Resource defaults of sandboxes started from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu: u32,
    pub gpu: u32,
    pub mem: u32,
    pub disk: u32,
}

impl Default for Resources {
    /// The seed CLI's defaults: 1 CPU, 1 GB memory, 3 GB disk, no GPU.
    fn default() -> Self {
        Resources {
            cpu: 1,
            gpu: 0,
            mem: 1,
            disk: 3,
        }
    }
}

/// Upper bounds a platform allows (configurable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_cpu: u32,
    pub max_gpu: u32,
    pub max_mem: u32,
    pub max_disk: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cpu: 64,
            max_gpu: 8,
            max_mem: 512,
            max_disk: 2048,
        }
    }
}

impl Resources {
    /// Positive (gpu may be 0) and within `limits`; the error names the value.
    pub fn validate(&self, limits: &Limits) -> Result<(), String> {
        let checks = [
            ("cpu", self.cpu, 1, limits.max_cpu),
            ("gpu", self.gpu, 0, limits.max_gpu),
            ("memory", self.mem, 1, limits.max_mem),
            ("disk", self.disk, 1, limits.max_disk),
        ];
        for (name, value, min, max) in checks {
            if value < min || value > max {
                return Err(format!("{name}={value} is out of range ({min}..={max})"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_the_seed() {
        let s = Snapshot {
            id: "i".into(),
            name: "n:1".into(),
            organization_id: "o".into(),
            general: false,
            state: SnapshotState::Active,
            image_name: "r/n:1".into(),
            size: 1,
            entrypoint: vec![],
            cpu: 1,
            gpu: 0,
            mem: 1,
            disk: 3,
            build_info: None,
            region_ids: vec!["eu".into()],
            created_at: "t".into(),
            updated_at: "t".into(),
            last_used_at: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        let mut want = vec![
            "id",
            "name",
            "organizationId",
            "general",
            "state",
            "imageName",
            "size",
            "entrypoint",
            "cpu",
            "gpu",
            "mem",
            "disk",
            "buildInfo",
            "regionIds",
            "createdAt",
            "updatedAt",
            "lastUsedAt",
        ];
        want.sort();
        assert_eq!(keys, want);
    }

    #[test]
    fn resource_validation_names_the_value() {
        assert!(Resources::default().validate(&Limits::default()).is_ok());
        let err = Resources {
            cpu: 0,
            ..Resources::default()
        }
        .validate(&Limits::default())
        .unwrap_err();
        assert!(err.contains("cpu=0"), "{err}");
        let err = Resources {
            mem: 1000,
            ..Resources::default()
        }
        .validate(&Limits::default())
        .unwrap_err();
        assert!(err.contains("memory=1000"), "{err}");
    }
}
