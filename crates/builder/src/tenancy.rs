//! Organizations (tenants) as a hard boundary in image names: the checked
//! form of an organization id, its injective encoding into one image path
//! component, and the rule that a build or snapshot of one organization
//! cannot name another organization's snapshot images.
//!
//! Snapshot images live in the store as `localhost/snapshots/<ns>/<name>`,
//! where `<ns>` is [`namespace`] of the organization, or [`GENERAL`] for
//! general (public) snapshots. The encoding never maps two ids onto one
//! component: an id that already is a valid lowercase component without
//! `__` is used as is (`acme`); any other id (`ACME`, `a__b`) becomes
//! `x__` + the hex of its bytes, which always holds `__`, so it can equal
//! neither a plain id nor another id's encoding. [`GENERAL`] holds `__` and
//! does not start with `x__`: no organization can take it.

use crate::BuildError;

/// Longest organization id accepted.
pub const MAX_ORG_LEN: usize = 64;

/// Registry and first path component of every snapshot image in the store.
pub const SNAPSHOT_PREFIX: &str = "localhost/snapshots";

/// The namespace component of general (public, read-only) snapshots.
pub const GENERAL: &str = "general__snapshots";

/// Why `org` is not a valid organization id, or None: 1 to 64 of ASCII
/// letters, digits, `_`, `.`, `-`, starting with a letter or digit.
pub fn org_problem(org: &str) -> Option<&'static str> {
    let first = org.chars().next()?;
    if org.len() > MAX_ORG_LEN {
        return Some("longer than 64 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return Some("must start with a letter or a digit");
    }
    org.chars()
        .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .then_some("only ASCII letters, digits and _ . - are allowed")
}

/// `org` checked (see [`org_problem`]; the empty id is refused too).
pub fn check_org(org: &str) -> Result<(), BuildError> {
    let problem = match org.is_empty() {
        true => Some("it is empty"),
        false => org_problem(org),
    };
    match problem {
        Some(p) => Err(BuildError::input(format!("organization id {org:?}: {p}"))),
        None => Ok(()),
    }
}

/// The image path component of organization `org` (injective; see above).
pub fn namespace(org: &str) -> String {
    if is_plain_component(org) && !org.contains("__") {
        org.to_string()
    } else {
        format!("x__{}", hex::encode(org.as_bytes()))
    }
}

/// One lowercase OCI path component, by the store's own reference rule.
fn is_plain_component(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && cairn_store::ImageRef::parse(&format!("localhost/n/{s}")).is_ok()
}

/// The snapshot namespace an image reference lies in (`acme` for
/// `localhost/snapshots/acme/web:1`), or None for any other image.
pub fn snapshot_namespace(reference: &str) -> Option<String> {
    let r = cairn_store::ImageRef::parse(reference).ok()?;
    // Host names are case-insensitive; repositories are lowercase already.
    let path = format!("{}/{}", r.registry().to_ascii_lowercase(), r.repository());
    let rest = path.strip_prefix(SNAPSHOT_PREFIX)?.strip_prefix('/')?;
    rest.split('/').next().map(str::to_string)
}

/// Refuse `reference` when it names a snapshot image of another
/// organization than `org` (None: the operator, who may read any). General
/// snapshots are everyone's to read. `what` names the use, for the error.
pub fn check_readable(org: Option<&str>, reference: &str, what: &str) -> Result<(), BuildError> {
    let (Some(org), Some(ns)) = (org, snapshot_namespace(reference)) else {
        return Ok(());
    };
    if ns == GENERAL || ns == namespace(org) {
        return Ok(());
    }
    Err(BuildError::input(format!(
        "{what} {reference}: a snapshot image of another organization; organization {org:?} can use only its own and general snapshots"
    )))
}

/// Refuse a build of `org` that would tag `tag`, a name in another
/// organization's snapshot namespace: organizations never share names, and
/// one may change only its own. Its own namespace and the general one (the
/// snapshot service decides who makes general snapshots) are fine, as is
/// any tag for the operator (None). A [`BuildError::Conflict`], found
/// before anything is built.
pub fn check_tag(org: Option<&str>, tag: &str) -> Result<(), BuildError> {
    let (Some(org), Some(ns)) = (org, snapshot_namespace(tag)) else {
        return Ok(());
    };
    if ns == GENERAL || ns == namespace(org) {
        return Ok(());
    }
    Err(BuildError::Conflict {
        message: format!(
            "-t {tag}: a name in another organization's snapshot namespace; organization {org:?} can tag only its own"
        ),
    })
}

/// For a reference pinned by digest (`sha256:...`, `name@sha256:...`) that
/// resolved to `manifest` in `store`: refuse it when every name the store
/// holds for that manifest is another organization's snapshot image, so
/// knowing a digest does not open another organization's image. (An
/// untagged manifest, or one also under a name `org` may read, is fine.)
pub fn check_pinned(
    store: &cairn_store::Store,
    org: Option<&str>,
    reference: &str,
    manifest: &cairn_store::Digest,
    what: &str,
) -> Result<(), BuildError> {
    let pinned = reference.parse::<cairn_store::Digest>().is_ok() || reference.contains('@');
    let Some(org) = org.filter(|_| pinned) else {
        return Ok(());
    };
    let names: Vec<String> = store
        .images()?
        .into_iter()
        .filter(|r| r.digest == *manifest)
        .flat_map(|r| r.names)
        .collect();
    let foreign = |n: &String| check_readable(Some(org), n, what).is_err();
    if !names.is_empty() && names.iter().all(foreign) {
        return Err(BuildError::input(format!(
            "{what} {reference}: the image of another organization's snapshot; organization {org:?} can use only its own and general snapshots"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids_are_checked() {
        for bad in ["", "-a", "a/b", "..", "a b", "ä", &"a".repeat(65)] {
            assert!(check_org(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "acme",
            "ACME",
            "org-1",
            "a.b_c",
            "550e8400-e29b-41d4-a716-446655440000",
        ] {
            assert!(check_org(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn namespaces_never_collide() {
        let ids = [
            "acme",
            "ACME",
            "Acme",
            "a__b",
            "a_b",
            "x__61636d65",
            "general__snapshots",
            "a-b",
            "a.-b",
            "a--b",
            "A-B",
        ];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let ns = namespace(id);
            assert!(seen.insert(ns.clone()), "{id} collides as {ns}");
            assert_ne!(ns, GENERAL, "{id}");
            let name = format!("{SNAPSHOT_PREFIX}/{ns}/web:latest");
            assert!(cairn_store::ImageRef::parse(&name).is_ok(), "{name}");
        }
        assert_eq!(namespace("acme"), "acme");
        assert_eq!(namespace("ACME"), "x__41434d45");
    }

    #[test]
    fn other_organizations_snapshots_are_refused() {
        let acme = "localhost/snapshots/acme/web:latest";
        assert!(check_readable(Some("evil"), acme, "FROM").is_err());
        assert!(check_readable(Some("ACME"), acme, "FROM").is_err());
        assert!(check_readable(Some("acme"), acme, "FROM").is_ok());
        assert!(check_readable(None, acme, "FROM").is_ok());
        let general = format!("{SNAPSHOT_PREFIX}/{GENERAL}/py:3");
        assert!(check_readable(Some("evil"), &general, "FROM").is_ok());
        assert!(check_readable(Some("evil"), "busybox", "FROM").is_ok());
        let pinned = format!("localhost/snapshots/acme/web@sha256:{}", "a".repeat(64));
        assert!(check_readable(Some("evil"), &pinned, "FROM").is_err());
    }
}
