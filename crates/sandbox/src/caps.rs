//! Capabilities of the sandboxed command: Docker's default set, with
//! `--cap-add` / `--cap-drop` on top.
//!
//! Applied in the command's process just before exec: every capability not
//! in the set leaves the bounding set, the inheritable and ambient sets are
//! emptied and, for container root, permitted and effective become the set.
//! Exec then gives container root exactly the set (root's exec rule takes
//! the bounding set) and a non-root user none, as in Docker.

/// Docker's default capabilities, by number.
pub const DOCKER_DEFAULT: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// Capability names, indexed by number (without the `CAP_` prefix).
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default set as a bit mask.
pub fn default_mask() -> u64 {
    DOCKER_DEFAULT.iter().fold(0, |m, c| m | 1 << c)
}

/// Every capability this kernel knows, as a bit mask.
fn all_mask() -> u64 {
    (1u64 << NAMES.len()) - 1
}

/// The capability called `name` (`NET_ADMIN`, `CAP_NET_ADMIN`, any case), as
/// a mask; `ALL` is every one.
pub fn parse(name: &str) -> Result<u64, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(all_mask());
    }
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| 1u64 << i)
        .ok_or_else(|| format!("unknown capability {name:?}"))
}

/// Docker's default set with `add` and `drop` applied as Docker does: a
/// named capability in both lists is dropped, except that `--cap-drop ALL`
/// empties the set before the adds go in.
pub fn resolve(add: &[String], drop: &[String]) -> Result<u64, String> {
    let drops: Vec<u64> = drop.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    let adds: Vec<u64> = add.iter().map(|a| parse(a)).collect::<Result<_, _>>()?;
    let add_mask = adds.iter().fold(0, |m, a| m | a);
    if drops.contains(&all_mask()) {
        return Ok(add_mask);
    }
    let drop_mask = drops.iter().fold(0, |m, d| m | d);
    Ok((default_mask() | add_mask) & !drop_mask)
}

/// Names of the capabilities in `mask`, for messages and docs.
pub fn names(mask: u64) -> Vec<&'static str> {
    (0..NAMES.len())
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| NAMES[i])
        .collect()
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Limit the bounding set to `mask` and empty the ambient set. Needs
/// CAP_SETPCAP; call before giving up root.
pub fn limit_bounding(mask: u64) -> Result<(), String> {
    let last = last_cap();
    for cap in 0..=last {
        if mask & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                continue; // a capability this kernel does not have
            }
            return Err(format!(
                "dropping capability {cap} from the bounding set: {e}"
            ));
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// Set permitted and effective to `mask` and inheritable to nothing.
pub fn set_process_caps(mask: u64) -> Result<(), String> {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask as u32,
            permitted: mask as u32,
            inheritable: 0,
        },
        CapData {
            effective: (mask >> 32) as u32,
            permitted: (mask >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and two data structs, as the ABI wants.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "setting capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The highest capability number of the running kernel.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
        .min(63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_dockers() {
        // Docker's CapEff for root in a default container.
        assert_eq!(default_mask(), 0xa80425fb);
        assert_eq!(names(default_mask()).len(), 14);
    }

    #[test]
    fn add_and_drop() {
        let m = resolve(&["NET_ADMIN".into()], &["cap_chown".into()]).unwrap();
        assert_eq!(m, (default_mask() | 1 << 12) & !1);
        assert_eq!(
            resolve(&["SYS_ADMIN".into()], &["ALL".into()]).unwrap(),
            1 << 21
        );
        assert!(resolve(&[], &["NOPE".into()]).is_err());
    }
}
