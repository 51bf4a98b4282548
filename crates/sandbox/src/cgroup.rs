//! Resource limits through cgroup v2, where the caller has a delegated subtree.
//!
//! Each sandbox with cpu, memory or pids limits gets a child cgroup
//! `cairn-<id>` of a *parent* cgroup: the caller's own (from
//! `/proc/self/cgroup` and the cgroup2 mount in `/proc/self/mountinfo`), or
//! the one named by `CAIRN_CGROUP_PARENT` / [`CgroupParent::at`]. The parent
//! must offer the controllers (`cgroup.controllers`), be writable by the
//! caller (delegated), and be able to hand the controllers to its children
//! (`cgroup.subtree_control`; cgroup v2 refuses that to a non-root cgroup
//! that holds processes itself). Every exec's helper is moved into the child
//! before it forks the sandbox's PID 1 (see `Launcher::run_with`), so the
//! whole process tree is inside. Whatever cannot be applied is reported, per
//! limit, with the reason: never silently dropped.

use std::io;
use std::path::{Path, PathBuf};

/// Env var naming the cgroup v2 directory under which sandbox cgroups are made.
pub const PARENT_ENV: &str = "CAIRN_CGROUP_PARENT";

/// cpu.max period, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The limits of one sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// CPUs (fractions allowed): cpu.max = `cpu * 100000 100000`.
    pub cpu: Option<f64>,
    /// memory.max in bytes.
    pub memory_bytes: Option<u64>,
    /// pids.max.
    pub pids: Option<u64>,
}

impl Limits {
    /// Bytes of `gb` gigabytes, as the snapshot resources count them (2^30).
    pub fn gb_to_bytes(gb: f64) -> u64 {
        (gb * (1u64 << 30) as f64).round() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory_bytes.is_none() && self.pids.is_none()
    }

    /// (controller, file, value, label) for each limit asked for.
    fn settings(&self) -> Vec<Setting> {
        let mut out = Vec::new();
        if let Some(cpu) = self.cpu {
            // The kernel's smallest quota is 1 ms.
            let quota = ((cpu * CPU_PERIOD_US as f64).round() as u64).max(1000);
            out.push((
                "cpu",
                "cpu.max",
                format!("{quota} {CPU_PERIOD_US}"),
                format!("cpu={cpu}"),
            ));
        }
        if let Some(bytes) = self.memory_bytes {
            out.push((
                "memory",
                "memory.max",
                bytes.to_string(),
                format!("memory={}GB", bytes as f64 / (1u64 << 30) as f64),
            ));
        }
        if let Some(pids) = self.pids {
            out.push(("pids", "pids.max", pids.to_string(), format!("pids={pids}")));
        }
        out
    }
}

/// Where sandbox cgroups are created, or why they cannot be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupParent {
    Dir(PathBuf),
    Unavailable(String),
}

impl CgroupParent {
    /// `CAIRN_CGROUP_PARENT` when set, else the caller's own cgroup v2 cgroup.
    pub fn detect() -> CgroupParent {
        if let Some(dir) = std::env::var_os(PARENT_ENV) {
            return CgroupParent::at(PathBuf::from(dir));
        }
        let own = match std::fs::read_to_string("/proc/self/cgroup") {
            Ok(t) => t,
            Err(e) => return CgroupParent::Unavailable(format!("reading /proc/self/cgroup: {e}")),
        };
        let mounts = match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(t) => t,
            Err(e) => {
                return CgroupParent::Unavailable(format!("reading /proc/self/mountinfo: {e}"))
            }
        };
        match own_cgroup_dir(&own, &mounts) {
            Ok(dir) => CgroupParent::Dir(dir),
            Err(reason) => CgroupParent::Unavailable(reason),
        }
    }

    /// A cgroup v2 directory chosen by the caller (checked to be one).
    pub fn at(dir: PathBuf) -> CgroupParent {
        match is_cgroup2(&dir) {
            Ok(true) => CgroupParent::Dir(dir),
            Ok(false) => {
                CgroupParent::Unavailable(format!("{} is not a cgroup v2 directory", dir.display()))
            }
            Err(e) => CgroupParent::Unavailable(format!("{}: {e}", dir.display())),
        }
    }

    /// A directory taken on trust, for callers that manage their own tree
    /// (and tests, which use an imitation of cgroupfs).
    pub fn unchecked(dir: PathBuf) -> CgroupParent {
        CgroupParent::Dir(dir)
    }
}

fn is_cgroup2(dir: &Path) -> io::Result<bool> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    statfs(dir)
        .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
        .map_err(io::Error::from)
}

/// The caller's cgroup v2 directory, from the texts of /proc/self/cgroup and
/// /proc/self/mountinfo.
pub fn own_cgroup_dir(proc_cgroup: &str, mountinfo: &str) -> Result<PathBuf, String> {
    let Some(path) = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Err("this host has no cgroup v2 hierarchy (cgroup v1 only)".into());
    };
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPER
    let mount = mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut f = pre.split(' ');
        let root = unescape(f.nth(3)?);
        let point = unescape(f.next()?);
        Some((root, point))
    });
    let Some((root, point)) = mount else {
        return Err("no cgroup2 filesystem is mounted".into());
    };
    let rel = Path::new(path)
        .strip_prefix(&root)
        .map_err(|_| format!("our cgroup {path} is outside the mounted cgroup2 root {root}"))?;
    Ok(Path::new(&point).join(rel))
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let code = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = code {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Controllers bound to a cgroup v1 hierarchy, from /proc/self/cgroup
/// (lines `N:ctrl,ctrl:/path` with N > 0).
fn v1_controllers(proc_cgroup: &str) -> Vec<String> {
    proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let id = f.next()?;
            let ctrls = f.next()?;
            (id != "0").then_some(ctrls)
        })
        .flat_map(|c| c.split(',').map(String::from))
        .collect()
}

/// The outcome of [`create`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The sandbox's cgroup, when at least one limit is applied through it.
    pub dir: Option<PathBuf>,
    /// `LIMIT: reason` for each limit that is not applied.
    pub not_applied: Vec<String>,
    /// cgroup v1 dirs (one per controller) holding the limits whose
    /// controllers are bound to v1 hierarchies; root only. See [`create_v1`].
    #[doc(hidden)]
    pub v1_dirs: Vec<PathBuf>,
}

impl Applied {
    /// Every cgroup dir a sandbox's helper must join.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dir.iter().chain(&self.v1_dirs).cloned().collect()
    }
}

/// Where root's v1 sandbox cgroups go: `/sys/fs/cgroup/<controller>/cairn/<name>`.
pub const V1_ROOT: &str = "/sys/fs/cgroup";

/// Apply `settings` through cgroup v1 controllers, as root on hybrid or
/// legacy hosts: a cgroup `cairn/<name>` in each controller's hierarchy,
/// with the v1 form of each limit.
fn create_v1(name: &str, settings: &[Setting], applied: &mut Applied) {
    for (ctrl, _, value, label) in settings {
        let dir = Path::new(V1_ROOT).join(ctrl).join("cairn").join(name);
        let files: Vec<(&str, String)> = match *ctrl {
            "cpu" => {
                let quota = value.split(' ').next().unwrap_or("max").to_string();
                vec![
                    ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota),
                ]
            }
            "memory" => vec![("memory.limit_in_bytes", value.clone())],
            _ => vec![("pids.max", value.clone())],
        };
        let result = std::fs::create_dir_all(&dir).and_then(|()| {
            files
                .iter()
                .try_for_each(|(file, v)| std::fs::write(dir.join(file), v))
        });
        match result {
            Ok(()) => {
                if *ctrl == "memory" {
                    // Swap too, where the kernel accounts it: a hog must not
                    // escape the limit into swap.
                    let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), value);
                }
                applied.v1_dirs.push(dir)
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                applied.not_applied.push(format!(
                    "{label}: cgroup v1 {ctrl} at {}: {e}",
                    dir.display()
                ));
            }
        }
    }
}

/// Make cgroup `name` under `parent` with `limits`. Never fails: what cannot
/// be applied is listed with the reason.
pub fn create(parent: &CgroupParent, name: &str, limits: &Limits) -> Applied {
    let settings = limits.settings();
    let mut applied = Applied::default();
    if settings.is_empty() {
        return applied;
    }
    let v1 = std::fs::read_to_string("/proc/self/cgroup")
        .map(|t| v1_controllers(&t))
        .unwrap_or_default();
    let dir = match parent {
        CgroupParent::Dir(d) => d,
        CgroupParent::Unavailable(reason) => {
            let (on_v1, rest): (Vec<Setting>, Vec<Setting>) = settings
                .into_iter()
                .partition(|s| nix::unistd::geteuid().is_root() && v1.iter().any(|c| c == s.0));
            create_v1(name, &on_v1, &mut applied);
            fail_all(&mut applied, &rest, reason);
            return applied;
        }
    };
    let available = read_words(&dir.join("cgroup.controllers"));
    let mut wanted = Vec::new();
    let mut on_v1 = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    for s in settings {
        let ctrl = s.0;
        if available.iter().any(|c| c == ctrl) {
            wanted.push(s);
        } else if root && v1.iter().any(|c| c == ctrl) {
            on_v1.push(s);
        } else if v1.iter().any(|c| c == ctrl) {
            applied.not_applied.push(format!(
                "{}: the {ctrl} controller is bound to a cgroup v1 hierarchy on this host \
                 (hybrid or legacy cgroups), which only root may use",
                s.3
            ));
        } else {
            applied.not_applied.push(format!(
                "{}: cgroup v2 at {} does not offer the {ctrl} controller (cgroup.controllers: {:?})",
                s.3,
                dir.display(),
                available.join(" ")
            ));
        }
    }
    create_v1(name, &on_v1, &mut applied);
    if wanted.is_empty() {
        return applied;
    }
    if let Err(e) = writable(dir) {
        let uid = nix::unistd::geteuid();
        fail_all(
            &mut applied,
            &wanted,
            &format!(
                "cgroup {} is not writable by uid {uid} ({e}): no delegated cgroup subtree \
                 (run the caller with a delegated cgroup, e.g. systemd's Delegate=yes, \
                 or set {PARENT_ENV} to one)",
                dir.display()
            ),
        );
        return applied;
    }
    let enabled = read_words(&dir.join("cgroup.subtree_control"));
    let mut usable = Vec::new();
    for s in wanted {
        let ctrl = s.0;
        if enabled.iter().any(|c| c == ctrl) {
            usable.push(s);
            continue;
        }
        let control = dir.join("cgroup.subtree_control");
        match std::fs::write(&control, format!("+{ctrl}")) {
            Ok(()) => usable.push(s),
            Err(e) => {
                let why = if e.raw_os_error() == Some(libc::EBUSY) {
                    format!(
                        " ({} holds processes itself, and cgroup v2 lets only a cgroup without \
                         processes hand controllers to its children: run the caller in a leaf \
                         cgroup and set {PARENT_ENV} to a delegated cgroup without processes)",
                        dir.display()
                    )
                } else {
                    String::new()
                };
                applied.not_applied.push(format!(
                    "{}: enabling the {ctrl} controller in {}: {e}{why}",
                    s.3,
                    control.display()
                ));
            }
        }
    }
    if usable.is_empty() {
        return applied;
    }
    let child = dir.join(name);
    if let Err(e) = std::fs::create_dir(&child) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            let reason = format!("creating cgroup {}: {e}", child.display());
            fail_all(&mut applied, &usable, &reason);
            return applied;
        }
    }
    let mut any = false;
    for (_, file, value, label) in usable {
        let path = child.join(file);
        match std::fs::write(&path, &value) {
            Ok(()) => any = true,
            Err(e) => applied.not_applied.push(format!(
                "{label}: writing {value:?} to {}: {e}",
                path.display()
            )),
        }
    }
    if any {
        applied.dir = Some(child);
    } else {
        let _ = std::fs::remove_dir(&child);
    }
    applied
}

type Setting = (&'static str, &'static str, String, String);

fn fail_all(applied: &mut Applied, settings: &[Setting], reason: &str) {
    for s in settings {
        applied.not_applied.push(format!("{}: {reason}", s.3));
    }
}

fn writable(dir: &Path) -> Result<(), nix::errno::Errno> {
    use nix::unistd::{access, AccessFlags};
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK)?;
    access(&dir.join("cgroup.subtree_control"), AccessFlags::W_OK)?;
    access(&dir.join("cgroup.procs"), AccessFlags::W_OK)
}

fn read_words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Move process `pid` (with its future children) into cgroup `dir`.
pub fn add_process(dir: &Path, pid: u32) -> io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// Kill whatever is left in cgroup `dir` and remove it. Missing is fine.
pub fn remove(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // cgroup.kill (Linux 5.14) SIGKILLs every process inside at once.
    if let Ok(mut kill) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
    {
        let _ = io::Write::write_all(&mut kill, b"1");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Processes that are still dying keep the cgroup busy for a moment.
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/a/b\n1:cpu:/\n0::/\n";

    #[test]
    fn own_cgroup_in_unified_and_hybrid_modes() {
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_dir("0::/user.slice/app.scope\n", unified).unwrap(),
            PathBuf::from("/sys/fs/cgroup/user.slice/app.scope")
        );
        let hybrid = "40 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      41 30 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_dir(HYBRID, hybrid).unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        // Inside a container the mount's root is our own cgroup.
        let nested = "50 40 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_dir("0::/kubepods/pod1/c\n", nested).unwrap(),
            PathBuf::from("/sys/fs/cgroup/c")
        );
        let spaced = "30 23 0:26 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_dir("0::/x\n", spaced).unwrap(),
            PathBuf::from("/mnt/my cg/x")
        );
        assert!(own_cgroup_dir("4:memory:/\n", unified)
            .unwrap_err()
            .contains("no cgroup v2"));
        assert!(own_cgroup_dir("0::/\n", "")
            .unwrap_err()
            .contains("no cgroup2"));
    }

    #[test]
    fn v1_controllers_are_named() {
        let v1 = v1_controllers(HYBRID);
        assert!(v1.contains(&"memory".to_string()) && v1.contains(&"pids".to_string()));
        assert!(!v1.iter().any(|c| c.is_empty()));
    }

    #[test]
    fn limits_become_cgroup_files() {
        let l = Limits {
            cpu: Some(1.5),
            memory_bytes: Some(Limits::gb_to_bytes(0.5)),
            pids: Some(64),
        };
        let s = l.settings();
        assert_eq!(s[0].2, "150000 100000");
        assert_eq!(s[1].2, "536870912");
        assert_eq!(s[2].2, "64");
        let tiny = Limits {
            cpu: Some(0.001),
            ..Limits::default()
        };
        assert_eq!(tiny.settings()[0].2, "1000 100000");
    }

    #[test]
    fn unavailable_parent_reports_every_limit() {
        let l = Limits {
            cpu: Some(2.0),
            pids: Some(10),
            ..Limits::default()
        };
        let a = create(
            &CgroupParent::Unavailable("why".into()),
            "cairn-unit-test",
            &l,
        );
        for d in &a.v1_dirs {
            let _ = remove(d);
        }
        assert_eq!(a.dir, None);
        // Root on a hybrid or v1 host applies them through v1; otherwise
        // each is reported with the reason.
        assert_eq!(a.not_applied.len() + a.v1_dirs.len(), 2, "{a:?}");
        if a.v1_dirs.is_empty() {
            assert_eq!(a.not_applied, vec!["cpu=2: why", "pids=10: why"]);
        }
    }

    #[test]
    fn imitation_cgroupfs_gets_the_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        std::fs::write(p.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        std::fs::write(p.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(p.join("cgroup.procs"), "").unwrap();
        let l = Limits {
            cpu: Some(2.0),
            memory_bytes: Some(1 << 30),
            pids: None,
        };
        let a = create(&CgroupParent::unchecked(p.to_path_buf()), "cairn-t", &l);
        assert!(a.not_applied.is_empty(), "{:?}", a.not_applied);
        let child = p.join("cairn-t");
        assert_eq!(a.dir.as_deref(), Some(child.as_path()));
        let read = |f: &str| std::fs::read_to_string(child.join(f)).unwrap();
        assert_eq!(read("cpu.max"), "200000 100000");
        assert_eq!(read("memory.max"), "1073741824");
        assert!(!child.join("pids.max").exists());
    }
}
