//! Work leases: who is building or pulling a snapshot, and until when.
//!
//! A worker takes a lease when it moves a snapshot into a work state and
//! renews it while it works; expiry is judged by the database's clock
//! (PostgreSQL's `now()`, SQLite's machine clock), so runners' clocks do not
//! have to agree. The holder is named by boot id, PID namespace, PID and
//! process start time: a reader on the *same* machine and PID namespace
//! that sees the holder gone need not wait for expiry (a local PID alone
//! would be wrong across machines and containers, where the same PID is
//! another process).

use std::time::Duration;

/// Default lease: a worker that stops renewing is reported failed this
/// long after its last renewal (renewals come every third of it).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Who holds a lease and for how long each grant lasts.
#[derive(Debug, Clone)]
pub struct LeaseTerms {
    /// `BOOT_ID/PIDNS/PID/START` of the holding process.
    pub owner: String,
    pub duration: Duration,
}

impl LeaseTerms {
    /// Terms for the calling process.
    pub fn for_this_process(duration: Duration) -> Self {
        LeaseTerms {
            owner: this_process(),
            duration,
        }
    }

    /// The grant in whole milliseconds (at least 1).
    pub fn millis(&self) -> i64 {
        i64::try_from(self.duration.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(19)?.parse().ok()
}

fn this_process() -> String {
    let pid = std::process::id();
    format!(
        "{}/{}/{pid}/{}",
        boot_id(),
        pid_namespace(),
        start_ticks(pid).unwrap_or(0)
    )
}

/// True only when `owner` names a process of this boot and PID namespace
/// that no longer runs (its PID is gone or now another process). Owners
/// elsewhere are never judged here: their lease's expiry decides.
pub fn holder_is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, '/');
    let (Some(start), Some(pid), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let here = format!("{}/{}", boot_id(), pid_namespace());
    if rest != here || here == "/" {
        return false;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    start_ticks(pid) != Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_others_are_not_judged() {
        let me = LeaseTerms::for_this_process(DEFAULT_LEASE);
        assert!(!holder_is_dead(&me.owner));
        // Another machine's holder: only expiry decides.
        assert!(!holder_is_dead("other-boot/pid:[1]/1/1"));
        assert!(!holder_is_dead("garbage"));
        // This machine, a start time that is not the process's: dead.
        let pid = std::process::id();
        let fake = format!("{}/{}/{pid}/1", boot_id(), pid_namespace());
        assert!(holder_is_dead(&fake));
    }
}
