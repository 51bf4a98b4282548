//! The probes behind `cairn info`: cgroup layout and delegation read from
//! /proc and /sys; user namespaces and overlay in them tried for real in a
//! child process (`cairn __probe DIR`), since only the kernel knows.

use crate::exit::CliError;
use clap::Args;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const CGROUP2_MAGIC: i64 = 0x6367_7270;
const TMPFS_MAGIC: i64 = 0x0102_1994;

fn fs_magic(path: &str) -> Option<i64> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs fills `s` for a NUL-terminated path.
    (unsafe { libc::statfs(c.as_ptr(), &mut s) } == 0).then_some(s.f_type as i64)
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// v2, hybrid (v1 controllers plus a v2 tree at /sys/fs/cgroup/unified) or
/// v1; our own v2 cgroup, its controllers and whether we may write there.
pub fn cgroups() -> Value {
    let version = match fs_magic("/sys/fs/cgroup") {
        Some(CGROUP2_MAGIC) => "v2",
        Some(TMPFS_MAGIC) if fs_magic("/sys/fs/cgroup/unified") == Some(CGROUP2_MAGIC) => "hybrid",
        Some(TMPFS_MAGIC) => "v1",
        _ => "none",
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let v1: Vec<&str> = own
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .flat_map(|c| c.split(','))
        .filter(|c| !c.is_empty() && !c.starts_with("name="))
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let parent = std::env::var_os("CAIRN_CGROUP_PARENT").map(PathBuf::from);
    let v2_dir = match &parent {
        Some(p) => Ok(p.clone()),
        None => cairn::sandbox::cgroup::own_cgroup_dir(&own, &mounts),
    };
    let (dir, controllers, writable, why) = match &v2_dir {
        Ok(d) => {
            let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap_or_default();
            // SAFETY: access on a NUL-terminated path.
            let w = unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0;
            (
                Some(d.display().to_string()),
                words(&d.join("cgroup.controllers")),
                w,
                None,
            )
        }
        Err(e) => (None, vec![], false, Some(e.clone())),
    };
    let usable: Vec<&str> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| writable && controllers.iter().any(|x| x == c))
        .collect();
    json!({
        "version": version,
        "v1_controllers": v1,
        "v2_dir": dir,
        "v2_controllers": controllers,
        "v2_writable": writable,
        "v2_problem": why,
        "limits_applicable": usable,
        "note": match usable.len() {
            3 => "--cpus, --memory and --pids-limit are enforced",
            0 => "resource limits are recorded but not enforced here (Cairn limits through a delegated cgroup v2 only)",
            _ => "some resource limits are not enforced here (see limits_applicable)",
        },
    })
}

/// Kernel knobs for unprivileged user namespaces, and a real try.
pub fn userns(root: Option<&Path>) -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let tried = try_probe(root);
    json!({
        "max_user_namespaces": read("/proc/sys/user/max_user_namespaces"),
        "unprivileged_userns_clone": read("/proc/sys/kernel/unprivileged_userns_clone"),
        "apparmor_restrict_unprivileged_userns": read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        "user_namespace": tried["userns"],
        "overlay_in_userns": tried["overlay"],
        "probed_in": tried["dir"],
        "problem": tried["error"],
    })
}

/// Where to try overlay: the store's filesystem when there is a store
/// (that is where sandboxes mount it), else the temp dir.
fn probe_dir(root: Option<&Path>) -> PathBuf {
    let store = cairn::store::layout::default_root(root);
    let base = if store.join("tmp").is_dir() {
        store.join("tmp")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("cairn-probe-{}", std::process::id()))
}

fn try_probe(root: Option<&Path>) -> Value {
    let dir = probe_dir(root);
    let out =
        std::env::current_exe().and_then(|exe| Command::new(exe).arg("__probe").arg(&dir).output());
    // The child cleans up; this catches what a killed child left.
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(o) => serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
            json!({"userns": null, "overlay": null, "error": String::from_utf8_lossy(&o.stderr)})
        }),
        Err(e) => json!({"userns": null, "overlay": null, "error": e.to_string()}),
    }
}

#[derive(Args)]
pub struct ProbeArgs {
    /// A directory to create and remove
    dir: PathBuf,
}

/// The child: enter a user namespace (own ID as root) and a mount
/// namespace, mount overlay in DIR, check a write reaches the upper dir.
pub fn probe_cmd(args: ProbeArgs) -> Result<(), CliError> {
    let report = |userns: bool, overlay: bool, error: Option<String>| {
        println!(
            "{}",
            json!({"userns": userns, "overlay": overlay, "error": error, "dir": args.dir.display().to_string()})
        );
        Ok(())
    };
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: this process is single-threaded here (a fresh helper exec).
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        let e = std::io::Error::last_os_error();
        return report(false, false, Some(format!("unshare(CLONE_NEWUSER): {e}")));
    }
    let maps = [
        ("/proc/self/setgroups", "deny".to_string()),
        ("/proc/self/uid_map", format!("0 {uid} 1")),
        ("/proc/self/gid_map", format!("0 {gid} 1")),
    ];
    for (file, text) in maps {
        if let Err(e) = std::fs::write(file, text) {
            return report(false, false, Some(format!("writing {file}: {e}")));
        }
    }
    let result = try_overlay(&args.dir);
    let _ = std::fs::remove_dir_all(&args.dir);
    match result {
        Ok(()) => report(true, true, None),
        Err(e) => report(true, false, Some(e)),
    }
}

fn try_overlay(dir: &Path) -> Result<(), String> {
    for sub in ["l", "u", "w", "m"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("l").display(),
        dir.join("u").display(),
        dir.join("w").display()
    );
    let (src, fstype) = (c(Path::new("overlay")), c(Path::new("overlay")));
    let (target, data) = (c(&dir.join("m")), c(Path::new(&opts)));
    // SAFETY: mount with NUL-terminated strings, in our own mount namespace.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mounting overlay: {}",
            std::io::Error::last_os_error()
        ));
    }
    let wrote = std::fs::write(dir.join("m/probe"), b"x");
    // SAFETY: unmounting what was just mounted.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    wrote.map_err(|e| format!("writing through overlay: {e}"))?;
    if !dir.join("u/probe").is_file() {
        return Err("a write through overlay did not reach the upper dir".into());
    }
    Ok(())
}

/// Kernel seccomp support (what a filter could use).
pub fn seccomp() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mode = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(|s| s.trim().to_string());
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .map(|s| s.split_whitespace().map(String::from).collect::<Vec<_>>())
        .unwrap_or_default();
    json!({
        "kernel_support": mode.is_some() && !actions.is_empty(),
        "filter_actions": actions,
        "this_process_mode": mode,
    })
}
