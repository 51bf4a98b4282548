//! Regions: ids that name registry prefixes, read from a small TOML file.
//!
//! ```toml
//! default = "eu"                       # optional
//! [regions.eu]
//! registry = "registry.eu.example.com/snapshots"
//! [regions.us]
//! registry = "registry.us.example.com/snapshots"
//! ```
//!
//! The file is, first found: the path given, `$CAIRN_REGIONS`,
//! `$XDG_CONFIG_HOME/cairn/regions.toml` (else `~/.config/cairn/regions.toml`),
//! `/etc/cairn/regions.toml`.

use crate::error::{RegistryError, Result};
use cairn_store::ImageRef;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionsFile {
    default: Option<String>,
    #[serde(default)]
    regions: BTreeMap<String, RegionEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionEntry {
    registry: String,
}

/// The regions a machine knows.
#[derive(Clone, Debug, Default)]
pub struct Regions {
    file: Option<PathBuf>,
    default: Option<String>,
    prefixes: BTreeMap<String, String>,
}

impl Regions {
    /// Where the regions file is looked for, in order.
    pub fn search_path() -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(p) = std::env::var_os("CAIRN_REGIONS") {
            out.push(PathBuf::from(p));
        }
        match std::env::var_os("XDG_CONFIG_HOME") {
            Some(x) => out.push(PathBuf::from(x).join("cairn/regions.toml")),
            None => {
                if let Some(h) = std::env::var_os("HOME") {
                    out.push(PathBuf::from(h).join(".config/cairn/regions.toml"));
                }
            }
        }
        out.push("/etc/cairn/regions.toml".into());
        out
    }

    /// Load `explicit`, else the first file of [`Regions::search_path`];
    /// no file at all means no regions.
    pub fn load(explicit: Option<&Path>) -> Result<Regions> {
        if let Some(p) = explicit {
            return Regions::from_file(p);
        }
        for p in Regions::search_path() {
            if p.exists() {
                return Regions::from_file(&p);
            }
        }
        Ok(Regions::default())
    }

    pub fn from_file(path: &Path) -> Result<Regions> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError::BadRegions {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Regions::parse(&text, Some(path))
    }

    pub fn parse(text: &str, path: Option<&Path>) -> Result<Regions> {
        let file = path.map_or_else(|| "(inline)".to_string(), |p| p.display().to_string());
        let bad = |reason: String| RegistryError::BadRegions {
            file: file.clone(),
            reason,
        };
        let parsed: RegionsFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut prefixes = BTreeMap::new();
        for (id, entry) in parsed.regions {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(bad(format!(
                    "region id {id:?} must be letters, digits, '-', '_' or '.'"
                )));
            }
            let prefix = entry.registry.trim_end_matches('/').to_string();
            // The prefix must make a valid reference once a name is added.
            ImageRef::parse(&format!("{prefix}/x:y"))
                .map_err(|e| bad(format!("region {id}: registry {:?}: {e}", entry.registry)))?;
            if !prefix.contains('/')
                && !prefix.contains('.')
                && !prefix.contains(':')
                && prefix != "localhost"
            {
                return Err(bad(format!(
                    "region {id}: registry {:?} must start with a registry host (e.g. host:5000/snapshots)",
                    entry.registry
                )));
            }
            prefixes.insert(id, prefix);
        }
        if let Some(d) = &parsed.default {
            if !prefixes.contains_key(d) {
                return Err(bad(format!(
                    "default region {d:?} is not one of the regions"
                )));
            }
        }
        Ok(Regions {
            file: path.map(Path::to_path_buf),
            default: parsed.default,
            prefixes,
        })
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.prefixes.keys().map(String::as_str)
    }

    pub fn default_region(&self) -> Option<&str> {
        self.default.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The registry prefix of a region.
    pub fn prefix(&self, region: &str) -> Result<&str> {
        self.prefixes
            .get(region)
            .map(String::as_str)
            .ok_or_else(|| RegistryError::UnknownRegion {
                region: region.to_string(),
                file: self
                    .file
                    .as_ref()
                    .map_or_else(|| "none found".to_string(), |p| p.display().to_string()),
                known: if self.prefixes.is_empty() {
                    "it defines no regions".into()
                } else {
                    format!(
                        "known regions: {}",
                        self.ids().collect::<Vec<_>>().join(", ")
                    )
                },
            })
    }

    /// Where `name` (`repo[:tag]`, no registry) goes in `region`.
    pub fn destination(&self, region: &str, name: &str) -> Result<ImageRef> {
        let full = format!("{}/{}", self.prefix(region)?, name);
        ImageRef::parse(&full).map_err(|e| RegistryError::BadReference {
            input: full,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        let r = Regions::parse(
            "default = \"eu\"\n[regions.eu]\nregistry = \"127.0.0.1:5000/snap/\"\n[regions.us]\nregistry = \"reg.us.example.com/snap\"\n",
            None,
        )
        .unwrap();
        assert_eq!(r.default_region(), Some("eu"));
        assert_eq!(r.ids().collect::<Vec<_>>(), ["eu", "us"]);
        let d = r.destination("eu", "app:v1").unwrap();
        assert_eq!(d.to_string(), "127.0.0.1:5000/snap/app:v1");
        let err = r.destination("ap", "app:v1").unwrap_err().to_string();
        assert!(err.contains("\"ap\"") && err.contains("eu, us"), "{err}");
    }

    #[test]
    fn rejects_bad_files() {
        for (text, needle) in [
            ("[regions.eu]\nregistery = \"x\"\n", "unknown field"),
            (
                "default = \"x\"\n[regions.eu]\nregistry = \"r.io/s\"\n",
                "default region",
            ),
            ("[regions.eu]\nregistry = \"UPPER.io/S\"\n", "region eu"),
            ("[regions.eu]\nregistry = \"snapshots\"\n", "registry host"),
            ("[regions.\"a b\"]\nregistry = \"r.io/s\"\n", "region id"),
            ("regions = 3", "invalid type"),
        ] {
            let err = Regions::parse(text, Some(Path::new("/etc/cairn/regions.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(needle) && err.contains("regions.toml"),
                "{text}: {err}"
            );
        }
    }
}
