//! Snapshot names: `name:version`, versions ordered as semver where they parse.

use std::cmp::Ordering;

/// Split `name[:version]`; a missing version is "latest".
pub fn split_name(full: &str) -> (&str, Option<&str>) {
    // A registry host may carry a port (`host:5000/x:1.0`): the version is
    // after the last ':' that follows the last '/'.
    let last_slash = full.rfind('/').map_or(0, |i| i + 1);
    match full[last_slash..].rfind(':') {
        Some(i) => (&full[..last_slash + i], Some(&full[last_slash + i + 1..])),
        None => (full, None),
    }
}

fn parse(v: &str) -> Option<semver::Version> {
    semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok()
}

/// Order two versions: semver ones by semver (a leading `v` allowed) and
/// above any that do not parse; the rest by their text.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split() {
        assert_eq!(split_name("api-env:1.2.0"), ("api-env", Some("1.2.0")));
        assert_eq!(split_name("api-env"), ("api-env", None));
        assert_eq!(split_name("localhost:5000/x"), ("localhost:5000/x", None));
        assert_eq!(
            split_name("localhost:5000/x:v2"),
            ("localhost:5000/x", Some("v2"))
        );
    }

    #[test]
    fn semver_beats_text_and_orders_numerically() {
        assert_eq!(compare("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(compare("v2.0.0", "1.99.99"), Ordering::Greater);
        assert_eq!(compare("1.0.0-rc.1", "1.0.0"), Ordering::Less);
        assert_eq!(compare("1.0.0", "nightly"), Ordering::Greater);
        assert_eq!(compare("a", "b"), Ordering::Less);
    }
}
