//! Snapshot states and the transitions between them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a snapshot is in its life (the seed's `SnapshotState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// Creation requested, build not started.
    Pending,
    /// Being built from a Dockerfile.
    Building,
    /// Its image is being pulled.
    Pulling,
    /// Ready for sandboxes.
    Active,
    /// Ready, but not used for a while.
    Inactive,
    /// Pulling or validation failed.
    Error,
    /// The build failed (its log is kept).
    BuildFailed,
    /// Being deleted; gone once that finishes.
    Removing,
}

impl SnapshotState {
    pub const ALL: [SnapshotState; 8] = [
        SnapshotState::Pending,
        SnapshotState::Building,
        SnapshotState::Pulling,
        SnapshotState::Active,
        SnapshotState::Inactive,
        SnapshotState::Error,
        SnapshotState::BuildFailed,
        SnapshotState::Removing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Pending => "pending",
            SnapshotState::Building => "building",
            SnapshotState::Pulling => "pulling",
            SnapshotState::Active => "active",
            SnapshotState::Inactive => "inactive",
            SnapshotState::Error => "error",
            SnapshotState::BuildFailed => "build_failed",
            SnapshotState::Removing => "removing",
        }
    }

    /// Is `self -> to` an edge of the state graph?
    ///
    /// pending -> building | pulling; building -> active | build_failed |
    /// error; pulling -> active | error; active <-> inactive; every state but
    /// removing -> removing. Work states (building, pulling) can end in
    /// error when their process dies.
    pub fn can_become(self, to: SnapshotState) -> bool {
        use SnapshotState::*;
        matches!(
            (self, to),
            (Pending, Building)
                | (Pending, Pulling)
                | (Building, Active)
                | (Building, BuildFailed)
                | (Building, Error)
                | (Pulling, Active)
                | (Pulling, Error)
                | (Active, Inactive)
                | (Inactive, Active)
        ) || (to == Removing && self != Removing)
    }

    /// States in which a process is working on the snapshot.
    pub fn is_work(self) -> bool {
        matches!(self, SnapshotState::Building | SnapshotState::Pulling)
    }

    /// States from which sandboxes may start.
    pub fn is_usable(self) -> bool {
        matches!(self, SnapshotState::Active | SnapshotState::Inactive)
    }
}

impl fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SnapshotState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SnapshotState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = SnapshotState::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state {s:?} (one of {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotState::{self, *};

    #[test]
    fn every_edge_and_every_refusal() {
        let allowed = [
            (Pending, Building),
            (Pending, Pulling),
            (Building, Active),
            (Building, BuildFailed),
            (Building, Error),
            (Pulling, Active),
            (Pulling, Error),
            (Active, Inactive),
            (Inactive, Active),
        ];
        for from in SnapshotState::ALL {
            for to in SnapshotState::ALL {
                let expected =
                    allowed.contains(&(from, to)) || (to == Removing && from != Removing);
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in SnapshotState::ALL {
            assert_eq!(s.as_str().parse::<SnapshotState>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("ready".parse::<SnapshotState>().is_err());
    }
}
