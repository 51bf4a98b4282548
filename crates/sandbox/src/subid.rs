//! The subordinate ID range sandboxes get when the caller is real root.
//!
//! Root's sandboxes map container 0..=65535 onto a dedicated range, so that
//! container root is an unprivileged ID on the host (podman's
//! `--userns=auto`, Docker's userns-remap). The range is the entry of user
//! [`ROOT_RANGE_OWNER`] (or of `$CAIRN_SUBID_USER`) in /etc/subuid and
//! /etc/subgid. When that entry is missing, root adds one of 65536 IDs to
//! each file, under a lock, at the lowest start from 100000 that overlaps no
//! entry of the file (as useradd picks ranges): a fresh machine works
//! without a setup step.

use crate::idmap::WANTED_IDS;
use std::io::Write;
use std::path::Path;

/// The /etc/subuid owner whose range root's sandboxes use.
pub const ROOT_RANGE_OWNER: &str = "cairn";

/// Environment variable naming another owner for root's range.
pub const ROOT_RANGE_ENV: &str = "CAIRN_SUBID_USER";

/// Where allocation starts, as in shadow-utils' SUB_UID_MIN.
const FIRST_START: u64 = 100_000;

/// The owner whose range root uses: `$CAIRN_SUBID_USER` or `cairn`.
pub fn root_range_owner() -> String {
    std::env::var(ROOT_RANGE_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| ROOT_RANGE_OWNER.to_string())
}

/// The start of `owner`'s range of at least 65536 IDs in `file`, added
/// to the file when there is none.
pub fn ensure_range(file: &Path, owner: &str) -> Result<u32, String> {
    if let Some(start) = find(file, owner)? {
        return Ok(start);
    }
    // The lock is an flock on the file itself: no lock file is left in
    // /etc, and shadow-utils' own `.lock` files are not touched.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .append(true)
        .open(file)
        .map_err(|e| format!("opening {}: {e}", file.display()))?;
    let mut locked = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking {}: {e}", file.display()))?;
    // Another process may have added it while we waited.
    if let Some(start) = find(file, owner)? {
        return Ok(start);
    }
    let text = read(file)?;
    let start = free_start(&text).ok_or_else(|| {
        format!(
            "no free range of {WANTED_IDS} IDs left in {}",
            file.display()
        )
    })?;
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    writeln!(locked, "{sep}{owner}:{start}:{WANTED_IDS}")
        .and_then(|()| locked.sync_all())
        .map_err(|e| format!("adding a range to {}: {e}", file.display()))?;
    Ok(start)
}

fn read(file: &Path) -> Result<String, String> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("reading {}: {e}", file.display())),
    }
}

fn find(file: &Path, owner: &str) -> Result<Option<u32>, String> {
    let text = read(file)?;
    let found = entries(&text)
        .find(|(o, _, count)| *o == owner && *count >= u64::from(WANTED_IDS))
        .map(|(_, start, _)| start as u32);
    Ok(found)
}

/// `owner:start:count` entries of a subuid file; junk lines skipped.
fn entries(text: &str) -> impl Iterator<Item = (&str, u64, u64)> {
    text.lines().filter_map(|line| {
        let mut parts = line.trim().split(':');
        let owner = parts.next()?;
        let start = parts.next()?.parse().ok()?;
        let count = parts.next()?.parse().ok()?;
        Some((owner, start, count))
    })
}

/// The lowest start >= 100000 whose 65536 IDs overlap no entry of `text`.
fn free_start(text: &str) -> Option<u32> {
    let mut taken: Vec<(u64, u64)> = entries(text).map(|(_, s, c)| (s, s + c)).collect();
    taken.sort_unstable();
    let want = u64::from(WANTED_IDS);
    let mut start = FIRST_START;
    for (s, e) in taken {
        if start + want <= s {
            break;
        }
        start = start.max(e);
    }
    (start + want <= u64::from(u32::MAX)).then_some(start as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_range_skips_every_entry() {
        assert_eq!(free_start(""), Some(100_000));
        let text = "a:100000:65536\nb:165536:1000\nc:300000:65536\n";
        assert_eq!(free_start(text), Some(166_536));
        let text = "a:100000:200000\nb:120000:10\n";
        assert_eq!(free_start(text), Some(300_000));
        assert_eq!(free_start("a:50000:10\n"), Some(100_000));
    }

    #[test]
    fn adds_an_entry_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subuid");
        std::fs::write(&file, "alice:100000:65536").unwrap();
        let start = ensure_range(&file, "cairn").unwrap();
        assert_eq!(start, 165_536);
        assert_eq!(ensure_range(&file, "cairn").unwrap(), start);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, "alice:100000:65536\ncairn:165536:65536\n");
    }
}
