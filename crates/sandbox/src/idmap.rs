//! User-namespace ID mappings: who the sandbox's IDs are on the host.
//!
//! Rootless, we follow podman and buildah rather than a plain shift: container
//! root is the caller itself and container IDs 1..=N come from the caller's
//! subordinate range. Files container root creates (the overlay upper dir, the
//! layers it extracts) then belong to the caller, who can read, commit and
//! delete them without entering a namespace. As real root the mapping is the
//! identity, through the same code path.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// One contiguous range: container IDs `inside..inside+count` are host IDs
/// `outside..outside+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The uid and gid mappings of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
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
            let all = vec![IdRange {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            }];
            return IdMapping {
                uids: all.clone(),
                gids: all,
                single_id: false,
            };
        }
        let name = user_name(uid);
        let sub_u = read_sub_range(Path::new("/etc/subuid"), uid, name.as_deref());
        let sub_g = read_sub_range(Path::new("/etc/subgid"), uid, name.as_deref());
        match (sub_u, sub_g) {
            (Some((us, uc)), Some((gs, gc))) => {
                let uc = uc.min(WANTED_IDS - 1);
                let gc = gc.min(WANTED_IDS - 1);
                IdMapping {
                    uids: vec![
                        IdRange {
                            inside: 0,
                            outside: uid,
                            count: 1,
                        },
                        IdRange {
                            inside: 1,
                            outside: us,
                            count: uc,
                        },
                    ],
                    gids: vec![
                        IdRange {
                            inside: 0,
                            outside: gid,
                            count: 1,
                        },
                        IdRange {
                            inside: 1,
                            outside: gs,
                            count: gc,
                        },
                    ],
                    single_id: false,
                }
            }
            _ => IdMapping {
                uids: vec![IdRange {
                    inside: 0,
                    outside: uid,
                    count: 1,
                }],
                gids: vec![IdRange {
                    inside: 0,
                    outside: gid,
                    count: 1,
                }],
                single_id: true,
            },
        }
    }

    /// The host uid that container uid `id` is, if mapped.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        to_host(&self.uids, id)
    }

    /// The host gid that container gid `id` is, if mapped.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        to_host(&self.gids, id)
    }

    /// The container uid that host uid `id` is, if mapped.
    pub fn container_uid(&self, id: u32) -> Option<u32> {
        to_container(&self.uids, id)
    }

    /// The container gid that host gid `id` is, if mapped.
    pub fn container_gid(&self, id: u32) -> Option<u32> {
        to_container(&self.gids, id)
    }

    /// True for the identity mapping of real root.
    pub fn is_identity(&self) -> bool {
        self.uids
            .iter()
            .chain(&self.gids)
            .all(|r| r.inside == r.outside)
    }
}

fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.inside && id - r.inside < r.count)
        .map(|r| r.outside + (id - r.inside))
}

fn to_container(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.outside && id - r.outside < r.count)
        .map(|r| r.inside + (id - r.outside))
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
            uids: vec![
                IdRange {
                    inside: 0,
                    outside: 1000,
                    count: 1,
                },
                IdRange {
                    inside: 1,
                    outside: 200000,
                    count: 65535,
                },
            ],
            gids: vec![IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
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
