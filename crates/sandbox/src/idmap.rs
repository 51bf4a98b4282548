//! User-namespace ID mappings: who the sandbox's IDs are on the host.
//!
//! Rootless, we follow podman and buildah rather than a plain shift: container
//! root is the caller itself and container IDs 1..=N come from the caller's
//! subordinate range. Files container root creates (the overlay upper dir, the
//! layers it extracts) then belong to the caller, who can read, commit and
//! delete them without entering a namespace. As real root, container
//! 0..=65535 is a dedicated subordinate range ([`crate::subid`]), so that
//! container root is nobody on the host; the identity only on explicit
//! request ([`IdMapping::host_identity`], `--userns=host`). The ranges themselves are the layer
//! crate's [`IdMap`]: one mapping type for the whole project.

pub use cairn_layer::idmap::{IdMap, IdRange};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The mapping of a sandbox, and whether it is a degraded one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    /// Container -> host ranges; empty means the identity (real root).
    pub map: IdMap,
    /// True when the caller has no subordinate range and only its own ID is
    /// mapped: chown to any other ID will fail inside.
    pub single_id: bool,
}

/// How many IDs a sandbox wants: container 0..=65535.
pub const WANTED_IDS: u32 = 65536;

impl IdMapping {
    /// The mapping for the calling user, read from `/etc/subuid` and `/etc/subgid`.
    pub fn for_current_user() -> IdMapping {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        if uid == 0 {
            return root_mapping();
        }
        let name = user_name(uid);
        let sub_u = read_sub_range(Path::new("/etc/subuid"), uid, name.as_deref());
        let sub_g = read_sub_range(Path::new("/etc/subgid"), uid, name.as_deref());
        match (sub_u, sub_g) {
            (Some((us, uc)), Some((gs, gc))) => {
                let range = |own, start, count: u32| {
                    vec![
                        IdRange {
                            container: 0,
                            host: own,
                            len: 1,
                        },
                        IdRange {
                            container: 1,
                            host: start,
                            len: count.min(WANTED_IDS - 1),
                        },
                    ]
                };
                IdMapping {
                    map: IdMap {
                        uids: range(uid, us, uc),
                        gids: range(gid, gs, gc),
                    },
                    single_id: false,
                }
            }
            _ => IdMapping {
                map: IdMap {
                    uids: vec![IdRange {
                        container: 0,
                        host: uid,
                        len: 1,
                    }],
                    gids: vec![IdRange {
                        container: 0,
                        host: gid,
                        len: 1,
                    }],
                },
                single_id: true,
            },
        }
    }

    /// Container IDs are the same host IDs: as root, container root is host
    /// root (`--userns=host`). Unsafe for untrusted code: see docs/security.md.
    pub fn host_identity() -> IdMapping {
        IdMapping {
            map: IdMap::identity(),
            single_id: false,
        }
    }

    /// Real root's mapping onto the subordinate range of `owner` in
    /// /etc/subuid and /etc/subgid, added to both files when missing.
    pub fn for_root_range(owner: &str) -> Result<IdMapping, String> {
        let uid = crate::subid::ensure_range(Path::new("/etc/subuid"), owner)?;
        let gid = crate::subid::ensure_range(Path::new("/etc/subgid"), owner)?;
        let range = |host| {
            vec![IdRange {
                container: 0,
                host,
                len: WANTED_IDS,
            }]
        };
        Ok(IdMapping {
            map: IdMap {
                uids: range(uid),
                gids: range(gid),
            },
            single_id: false,
        })
    }

    /// A short stable name of the mapping, for markers on disk.
    pub fn key(&self) -> String {
        if self.is_identity() {
            return "identity".into();
        }
        let part = |ranges: &[IdRange]| {
            ranges
                .iter()
                .map(|r| format!("{}:{}:{}", r.container, r.host, r.len))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!("uid={} gid={}", part(&self.map.uids), part(&self.map.gids))
    }

    /// The host uid that container uid `id` is, if mapped.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        self.map.uid_to_host(id)
    }

    /// The host gid that container gid `id` is, if mapped.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        self.map.gid_to_host(id)
    }

    /// The container uid that host uid `id` is, if mapped.
    pub fn container_uid(&self, id: u32) -> Option<u32> {
        self.map.uid_to_container(id)
    }

    /// The container gid that host gid `id` is, if mapped.
    pub fn container_gid(&self, id: u32) -> Option<u32> {
        self.map.gid_to_container(id)
    }

    /// True for the identity mapping of real root.
    pub fn is_identity(&self) -> bool {
        self.map.is_identity()
    }

    /// The warning due when only the caller's own ID is mapped, naming the
    /// user and saying how to add a range; None with a full mapping.
    pub fn single_id_warning(&self) -> Option<String> {
        if !self.single_id {
            return None;
        }
        let uid = nix::unistd::getuid().as_raw();
        let user = user_name(uid).unwrap_or_else(|| uid.to_string());
        Some(format!(
            "no subordinate ID range for {user} in /etc/subuid and /etc/subgid: only your own ID \
             is mapped into sandboxes, so chown to any other ID and switching to another user \
             fail inside them; {}",
            add_range_hint(&user)
        ))
    }
}

/// Real root's default mapping, worked out once per process: the range of
/// [`crate::subid::root_range_owner`]. Should /etc refuse the new entry, the
/// identity is used and an error logged: there is no other mapping to give.
fn root_mapping() -> IdMapping {
    static ROOT: std::sync::OnceLock<IdMapping> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let owner = crate::subid::root_range_owner();
        IdMapping::for_root_range(&owner).unwrap_or_else(|e| {
            tracing::error!(
                "no subordinate ID range for root's sandboxes ({e}): container root is host root"
            );
            IdMapping::host_identity()
        })
    })
    .clone()
}

/// How to give `user` a subordinate range.
pub fn add_range_hint(user: &str) -> String {
    format!(
        "add a range as root with `usermod --add-subuids 100000-165535 \
         --add-subgids 100000-165535 {user}`"
    )
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The first `start:count` range of `/etc/subuid`-format `file` for the user,
/// matched by name or by numeric uid as shadow-utils does.
pub fn read_sub_range(file: &Path, uid: u32, name: Option<&str>) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_sub_range(&text, uid, name)
}

fn parse_sub_range(text: &str, uid: u32, name: Option<&str>) -> Option<(u32, u32)> {
    let uid_text = uid.to_string();
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let owner = parts.next()?;
        let start = parts.next()?.parse::<u32>().ok()?;
        let count = parts.next()?.parse::<u32>().ok()?;
        let ours = owner == uid_text || Some(owner) == name;
        (ours && count > 0).then_some((start, count))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_range_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:300000:1000\n# junk\nbad:line\n";
        assert_eq!(
            parse_sub_range(text, 1000, Some("alice")),
            Some((100000, 65536))
        );
        assert_eq!(
            parse_sub_range(text, 1001, Some("bob")),
            Some((300000, 1000))
        );
        assert_eq!(parse_sub_range(text, 1002, Some("carol")), None);
    }

    #[test]
    fn podman_style_mapping_round_trips() {
        let m = IdMapping {
            map: IdMap {
                uids: vec![
                    IdRange {
                        container: 0,
                        host: 1000,
                        len: 1,
                    },
                    IdRange {
                        container: 1,
                        host: 200000,
                        len: 65535,
                    },
                ],
                gids: vec![IdRange {
                    container: 0,
                    host: 1000,
                    len: 1,
                }],
            },
            single_id: false,
        };
        assert_eq!(m.host_uid(0), Some(1000));
        assert_eq!(m.host_uid(1000), Some(200999));
        assert_eq!(m.container_uid(200999), Some(1000));
        assert_eq!(m.host_uid(65536), None);
        assert_eq!(m.host_gid(5), None);
        assert!(!m.is_identity());
    }
}
