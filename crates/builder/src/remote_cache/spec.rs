//! `--cache-from` / `--cache-to` as BuildKit spells them:
//! `type=registry,ref=REG/REPO:TAG[,mode=min|max][,ignore-error=true|false]`,
//! or a bare `REG/REPO:TAG` meaning `type=registry,ref=...` (buildx's short form).

use cairn_store::reference::ImageRef;
use std::str::FromStr;

/// Where a build imports cache from (`--cache-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImport {
    /// The cache manifest's reference, `REG/REPO:TAG`.
    pub reference: String,
}

/// Where a build exports its cache to (`--cache-to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    /// The cache manifest's reference, `REG/REPO:TAG`.
    pub reference: String,
    pub mode: CacheMode,
    /// A failed export only warns (the default, see docs/scale-out.md);
    /// `ignore-error=false` makes it fail the build, as BuildKit's default does.
    pub ignore_error: bool,
}

/// Which steps an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps whose layers are in the final image (BuildKit's default).
    #[default]
    Min,
    /// Every step of every stage built, intermediate stages included.
    Max,
}

/// BuildKit attributes that only choose among formats Cairn has one of:
/// accepted and without effect (the cache is always an OCI image manifest).
const NO_OP_ATTRS: &[&str] = &[
    "image-manifest",
    "oci-mediatypes",
    "compression",
    "compression-level",
    "force-compression",
];

/// The attributes of one flag value, checked: type=registry and a valid ref.
fn attributes(flag: &str, value: &str, allowed: &[&str]) -> Result<Vec<(String, String)>, String> {
    if !value.contains('=') {
        return Ok(vec![
            ("type".into(), "registry".into()),
            ("ref".into(), value.into()),
        ]);
    }
    let mut attrs = Vec::new();
    for field in value.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("{flag} {value:?}: {field:?} is not KEY=VALUE"))?;
        let k = k.trim().to_ascii_lowercase();
        if !allowed.contains(&k.as_str()) && !NO_OP_ATTRS.contains(&k.as_str()) {
            return Err(format!(
                "{flag} {value:?}: unknown attribute {k:?} (expected {})",
                allowed.join(", ")
            ));
        }
        attrs.push((k, v.trim().to_string()));
    }
    match attrs
        .iter()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.as_str())
    {
        Some("registry") => {}
        Some(other) => {
            return Err(format!(
                "{flag} {value:?}: cache type {other:?} is not supported (only type=registry)"
            ))
        }
        None => return Err(format!("{flag} {value:?}: missing type=registry")),
    }
    let reference = attrs
        .iter()
        .find(|(k, _)| k == "ref")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| format!("{flag} {value:?}: missing ref=REGISTRY/REPOSITORY:TAG"))?;
    ImageRef::parse(&reference).map_err(|e| format!("{flag} {value:?}: ref {reference:?}: {e}"))?;
    Ok(attrs)
}

fn bool_attr(flag: &str, key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{flag}: {key}={v:?}: expected true or false")),
    }
}

fn find<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl FromStr for CacheImport {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        let attrs = attributes("--cache-from", value, &["type", "ref"])?;
        Ok(CacheImport {
            reference: find(&attrs, "ref").unwrap_or_default().to_string(),
        })
    }
}

impl FromStr for CacheExport {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        let flag = "--cache-to";
        let attrs = attributes(flag, value, &["type", "ref", "mode", "ignore-error"])?;
        let reference = find(&attrs, "ref").unwrap_or_default().to_string();
        if reference.contains('@') {
            return Err(format!("{flag} {value:?}: ref must be a tag, not a digest"));
        }
        let mode = match find(&attrs, "mode") {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(other) => return Err(format!("{flag}: mode={other:?}: expected min or max")),
        };
        let ignore_error = match find(&attrs, "ignore-error") {
            Some(v) => bool_attr(flag, "ignore-error", v)?,
            None => true,
        };
        Ok(CacheExport {
            reference,
            mode,
            ignore_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_syntax_and_the_short_form() {
        let e: CacheExport = "type=registry,ref=localhost:5000/c:t,mode=max"
            .parse()
            .unwrap();
        assert_eq!(
            (e.reference.as_str(), e.mode, e.ignore_error),
            ("localhost:5000/c:t", CacheMode::Max, true)
        );
        let e: CacheExport = "localhost:5000/c:t".parse().unwrap();
        assert_eq!(e.mode, CacheMode::Min);
        let e: CacheExport = "type=registry,ref=r/c:t,ignore-error=false,image-manifest=true"
            .parse()
            .unwrap();
        assert!(!e.ignore_error);
        let i: CacheImport = "type=registry,ref=r/c:t".parse().unwrap();
        assert_eq!(i.reference, "r/c:t");
    }

    #[test]
    fn bad_values_name_what_is_wrong() {
        for (bad, says) in [
            ("type=local,src=/tmp/x", "unknown attribute \"src\""),
            ("type=local", "\"local\" is not supported"),
            ("ref=r/c:t", "missing type=registry"),
            ("type=registry", "missing ref"),
            ("type=registry,ref=r/c:t,mode=all", "expected min or max"),
            ("type=registry,ref=", "ref \"\""),
            (
                "type=registry,ref=r/c:t,ignore-error=maybe",
                "true or false",
            ),
        ] {
            let err = bad.parse::<CacheExport>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = "type=registry,ref=r/c:t,mode=max"
            .parse::<CacheImport>()
            .unwrap_err();
        assert!(err.contains("unknown attribute \"mode\""), "{err}");
    }
}
