//! Container <-> host ID mapping, in the shape of `/proc/PID/uid_map`.
//!
//! Writing a layer from a host directory whose files are owned by subordinate
//! IDs maps host -> container; extracting maps container -> host.

use crate::error::LayerError;

/// One line of a `uid_map`: container IDs `container..container+len` are host
/// IDs `host..host+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// UID and GID mappings. The default is the identity (every ID maps to itself).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    /// Empty means identity.
    pub uids: Vec<IdRange>,
    /// Empty means identity.
    pub gids: Vec<IdRange>,
}

impl IdMap {
    /// Every ID maps to itself.
    pub fn identity() -> Self {
        IdMap::default()
    }

    /// Whether this is the identity mapping.
    pub fn is_identity(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// The usual rootless mapping: container 0 -> `host_id`, container 1..=len ->
    /// the subordinate range starting at `sub_start`.
    pub fn rootless(
        host_uid: u32,
        host_gid: u32,
        sub_uid: u32,
        sub_gid: u32,
        sub_len: u32,
    ) -> Self {
        let ranges = |host, sub| {
            vec![
                IdRange {
                    container: 0,
                    host,
                    len: 1,
                },
                IdRange {
                    container: 1,
                    host: sub,
                    len: sub_len,
                },
            ]
        };
        IdMap {
            uids: ranges(host_uid, sub_uid),
            gids: ranges(host_gid, sub_gid),
        }
    }

    /// Parse the text of `/proc/PID/uid_map` and `/proc/PID/gid_map`
    /// ("container host len" per line).
    pub fn from_proc_maps(uid_map: &str, gid_map: &str) -> Result<Self, LayerError> {
        Ok(IdMap {
            uids: parse_map(uid_map)?,
            gids: parse_map(gid_map)?,
        })
    }

    /// Host UID of a container UID.
    pub fn uid_to_host(&self, id: u32) -> Option<u32> {
        to_host(&self.uids, id)
    }
    /// Host GID of a container GID.
    pub fn gid_to_host(&self, id: u32) -> Option<u32> {
        to_host(&self.gids, id)
    }
    /// Container UID of a host UID.
    pub fn uid_to_container(&self, id: u32) -> Option<u32> {
        to_container(&self.uids, id)
    }
    /// Container GID of a host GID.
    pub fn gid_to_container(&self, id: u32) -> Option<u32> {
        to_container(&self.gids, id)
    }
}

fn parse_map(text: &str) -> Result<Vec<IdRange>, LayerError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || LayerError::Parse {
                what: "ID map line (expected \"container host length\")",
                value: line.to_string(),
            };
            let mut it = line.split_whitespace().map(|f| f.parse::<u32>());
            match (it.next(), it.next(), it.next(), it.next()) {
                (Some(Ok(container)), Some(Ok(host)), Some(Ok(len)), None) => Ok(IdRange {
                    container,
                    host,
                    len,
                }),
                _ => Err(bad()),
            }
        })
        .collect()
}

fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
    if ranges.is_empty() {
        return Some(id);
    }
    ranges.iter().find_map(|r| {
        let off = id.checked_sub(r.container)?;
        (off < r.len).then(|| r.host.checked_add(off)).flatten()
    })
}

fn to_container(ranges: &[IdRange], id: u32) -> Option<u32> {
    if ranges.is_empty() {
        return Some(id);
    }
    ranges.iter().find_map(|r| {
        let off = id.checked_sub(r.host)?;
        (off < r.len)
            .then(|| r.container.checked_add(off))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_maps_everything() {
        let m = IdMap::identity();
        assert_eq!(m.uid_to_host(12345), Some(12345));
        assert_eq!(m.gid_to_container(u32::MAX), Some(u32::MAX));
    }

    #[test]
    fn rootless_both_ways() {
        let m = IdMap::rootless(1000, 1001, 100000, 200000, 65536);
        assert_eq!(m.uid_to_host(0), Some(1000));
        assert_eq!(m.uid_to_host(1), Some(100000));
        assert_eq!(m.uid_to_host(65536), Some(165535));
        assert_eq!(m.uid_to_host(65537), None);
        assert_eq!(m.gid_to_host(0), Some(1001));
        assert_eq!(m.uid_to_container(100999), Some(1000));
        assert_eq!(m.uid_to_container(5), None);
    }

    #[test]
    fn parses_proc_format() {
        let m = IdMap::from_proc_maps("0 1000 1\n1 100000 65536\n", "0 0 4294967295\n").unwrap();
        assert_eq!(m.uid_to_host(2), Some(100001));
        assert_eq!(m.gid_to_host(7), Some(7));
        assert!(IdMap::from_proc_maps("0 1000", "").is_err());
        // Overflowing ranges never wrap.
        let m = IdMap::from_proc_maps("0 4294967290 100", "").unwrap();
        assert_eq!(m.uid_to_host(10), None);
    }
}
