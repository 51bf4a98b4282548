//! /proc and /sys as runc leaves them: a read-only /sys, kernel interfaces
//! that leak host state or reach the host's kernel masked, and /proc's
//! sysctl and trigger files read-only.
//!
//! Masking is by mount: /dev/null bound over a file, an empty read-only
//! tmpfs over a dir. The command has neither CAP_SYS_ADMIN nor the `mount`
//! and `umount2` calls (seccomp) to take them away again.

use nix::mount::{mount, MsFlags};
use std::path::Path;

/// Paths runc (and so Docker and podman) masks.
pub const MASKED: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Paths runc makes read-only.
pub const READ_ONLY: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Mount a read-only /sys at `root/sys`, then mask and protect the paths
/// above. `own_netns`: the sandbox has its own network namespace, the only
/// case in which the kernel lets a user namespace mount a fresh sysfs; with
/// the host's network the host's /sys is bound, recursively read-only.
pub fn apply(root: &Path, own_netns: bool) -> Result<(), (String, std::io::Error)> {
    mount_sys(root, own_netns)?;
    for rel in MASKED {
        mask(&root.join(rel))?;
    }
    for rel in READ_ONLY {
        read_only(&root.join(rel))?;
    }
    Ok(())
}

fn fail(what: &str, path: &Path) -> impl FnOnce(nix::errno::Errno) -> (String, std::io::Error) {
    let what = format!("{what} {}", path.display());
    move |e| (what, e.into())
}

fn mount_sys(root: &Path, own_netns: bool) -> Result<(), (String, std::io::Error)> {
    let sys = root.join("sys");
    if !sys.is_dir() {
        std::fs::create_dir_all(&sys).map_err(|e| (format!("creating {}", sys.display()), e))?;
    }
    let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if own_netns
        && mount(
            Some("sysfs"),
            &sys,
            Some("sysfs"),
            locked | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .is_ok()
    {
        return Ok(());
    }
    mount(
        Some("/sys"),
        &sys,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail("binding the host's /sys at", &sys))?;
    recursive_read_only(&sys).map_err(|e| (format!("making {} read-only", sys.display()), e))
}

/// mount_setattr(2) MOUNT_ATTR_RDONLY over a whole mount tree: a remount
/// reaches only the top mount, and /sys has many below it.
fn recursive_read_only(path: &Path) -> Result<(), std::io::Error> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid C string and a mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn mask(path: &Path) -> Result<(), (String, std::io::Error)> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // not on this kernel: nothing to hide
    };
    if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=0"),
        )
        .map_err(fail("masking", path))
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(fail("masking", path))
    }
}

fn read_only(path: &Path) -> Result<(), (String, std::io::Error)> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail("binding", path))?;
    // The flags proc was mounted with are locked in a user namespace: a
    // remount must repeat them.
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(fail("making read-only", path))
}
