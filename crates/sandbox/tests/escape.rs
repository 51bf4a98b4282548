//! The escape suite: what a hostile tenant tries from inside a sandbox, and
//! the defence that stops each attempt (docs/security.md lists them). Runs
//! as root and again as the unprivileged test user; each test fails if its
//! defence is removed. `harness = false`: `main` calls the init hook first,
//! and doubles as the syscall probe run inside the sandbox.

use cairn_sandbox::idmap::IdMapping;
use cairn_sandbox::manager::{Argv, CreateOptions, ExecOptions, SandboxManager};
use cairn_sandbox::{
    init_hook, ExtraMount, Launcher, MountSource, Network, ProcessSpec, RootfsSpec, RunSpec,
    RunStdio, Security,
};
use cairn_store::Store;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const PROBE_ENV: &str = "CAIRN_ESCAPE_PROBE";

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
}

fn manager(f: &Fixture) -> SandboxManager<'_> {
    SandboxManager::new(&f.store, Launcher::current_exe().unwrap())
}

/// Run `script` with busybox sh in a fresh sandbox with `security`, as
/// `user`; (exit code, stdout + stderr).
fn sh_with(f: &Fixture, security: Security, user: &str, script: &str) -> (i32, String) {
    let m = manager(f);
    let opts = CreateOptions {
        security,
        ..CreateOptions::default()
    };
    let record = m.create("busybox:fixture", opts).unwrap();
    let out = f.tmp.path().join(format!("out-{}", record.id));
    let file = std::fs::File::create(&out).unwrap();
    let exec = ExecOptions {
        argv: Argv::Direct(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        user: (!user.is_empty()).then(|| user.to_string()),
        stdio: RunStdio {
            stdin: Some(Stdio::null()),
            stdout: Some(file.try_clone().unwrap().into()),
            stderr: Some(file.into()),
            ..RunStdio::default()
        },
        ..ExecOptions::default()
    };
    let outcome = m.exec(&record.id, exec).unwrap();
    let mut text = std::fs::read_to_string(&out).unwrap();
    if let Some(f) = &outcome.failure {
        text.push_str(f.message());
    }
    m.remove(&record.id).unwrap();
    (outcome.exit_code, text)
}

fn sh(f: &Fixture, script: &str) -> (i32, String) {
    sh_with(f, Security::default(), "", script)
}

fn status_field(text: &str, field: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in {text}"))
}

fn core_pattern_and_sysrq_cannot_be_written(f: &Fixture) {
    let before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let (_, out) = sh(
        f,
        "echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern && echo CORE-WRITTEN; \
         echo c > /proc/sysrq-trigger && echo SYSRQ-WRITTEN; \
         echo 1 > /proc/sys/vm/drop_caches && echo SYSCTL-WRITTEN; \
         grep ' /proc/sys ' /proc/self/mounts",
    );
    assert!(!out.contains("-WRITTEN"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    // /proc/sys is a read-only mount of its own, as runc makes it.
    assert!(out.contains("/proc/sys proc ro,"), "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        before
    );
    if Path::new("/proc/sysrq-trigger").exists() {
        let (_, out) = sh(f, "grep ' /proc/sysrq-trigger ' /proc/self/mounts");
        assert!(out.contains(" ro,"), "{out}");
    }
}

fn mount_and_unshare_fail(f: &Fixture) {
    let (_, out) = sh(
        f,
        "mount -t tmpfs none /mnt && echo MOUNTED; \
         unshare -m true && echo UNSHARED-MNT; \
         unshare -n true && echo UNSHARED-NET; \
         umount -l /proc && echo UNMOUNTED; echo done",
    );
    assert!(out.contains("done"), "{out}");
    for bad in ["MOUNTED", "UNSHARED-MNT", "UNSHARED-NET", "UNMOUNTED"] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
}

fn kernel_files_are_masked(f: &Fixture) {
    let (_, out) = sh(
        f,
        "for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
           echo $p $(cat $p 2>/dev/null | wc -c); done; \
         echo firmware $(ls /sys/firmware | wc -l)",
    );
    for line in out.lines() {
        assert!(line.ends_with(" 0"), "readable: {line} (all: {out})");
    }
    assert!(out.contains("/proc/keys 0"), "{out}");
    // Not vacuous: the host shows what the sandbox must not.
    if Path::new("/proc/keys").exists() {
        let (_, out) = sh(f, "grep -c /proc/keys /proc/self/mounts");
        assert_eq!(out.trim(), "1", "/proc/keys is not masked");
    }
}

fn sys_is_read_only(f: &Fixture) {
    let (_, out) = sh(
        f,
        "grep ' /sys ' /proc/self/mounts; \
         echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null && echo SYS-WRITTEN; \
         mkdir /sys/fs/cgroup/pwn 2>/dev/null && echo CGROUP-MADE; echo done",
    );
    assert!(out.contains(" ro,") || out.contains(" ro "), "{out}");
    assert!(
        !out.contains("-WRITTEN") && !out.contains("CGROUP-MADE"),
        "{out}"
    );
}

/// Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
/// SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
const DOCKER_CAPS: &str = "00000000a80425fb";

fn capabilities_are_dockers_default(f: &Fixture) {
    let (_, out) = sh(f, "cat /proc/self/status");
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(&out, field), DOCKER_CAPS, "{field}");
    }
    assert_eq!(status_field(&out, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&out, "CapAmb"), "0000000000000000");
    // A non-root user has none, as in Docker; the bounding set still caps it.
    let (_, out) = sh_with(f, Security::default(), "1000", "cat /proc/self/status");
    assert_eq!(status_field(&out, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&out, "CapBnd"), DOCKER_CAPS);
    // --cap-drop / --cap-add.
    let sec = Security::default()
        .with_caps(&["NET_ADMIN".into()], &["CHOWN".into()])
        .unwrap();
    let (_, out) = sh_with(f, sec, "", "grep CapEff /proc/self/status; chown 5 /tmp");
    assert_eq!(status_field(&out, "CapEff"), "00000000a80435fa");
    assert!(out.contains("Operation not permitted"), "{out}");
}

fn seccomp_filter_is_on_unless_unconfined(f: &Fixture) {
    let (_, out) = sh(f, "cat /proc/self/status");
    assert_eq!(status_field(&out, "Seccomp"), "2");
    let mut sec = Security::default();
    sec.apply_opt("seccomp=unconfined").unwrap();
    let (_, out) = sh_with(f, sec, "", "cat /proc/self/status");
    assert_eq!(status_field(&out, "Seccomp"), "0");
}

fn no_new_privileges_on_request(f: &Fixture) {
    let (_, out) = sh(f, "cat /proc/self/status");
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");
    let mut sec = Security::default();
    sec.apply_opt("no-new-privileges").unwrap();
    let (_, out) = sh_with(f, sec, "", "cat /proc/self/status");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
}

fn container_root_is_not_host_root(f: &Fixture) {
    let m = manager(f);
    let record = m
        .create("busybox:fixture", CreateOptions::default())
        .unwrap();
    let exec = ExecOptions {
        argv: Argv::Direct(vec!["touch".into(), "/made-by-root".into()]),
        ..ExecOptions::default()
    };
    assert_eq!(m.exec(&record.id, exec).unwrap().exit_code, 0);
    let upper = f
        .store
        .layout()
        .sandboxes()
        .join(&record.id)
        .join("upper/made-by-root");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&upper).unwrap();
    let mapping = m.id_mapping();
    assert_ne!(
        meta.uid(),
        0,
        "container root made a file owned by host root"
    );
    assert_eq!(Some(meta.uid()), mapping.host_uid(0));
    assert_eq!(Some(meta.gid()), mapping.host_gid(0));
    if nix::unistd::geteuid().is_root() {
        // The dedicated range of /etc/subuid, not the caller's own ID.
        let owner = cairn_sandbox::subid::root_range_owner();
        let start =
            cairn_sandbox::idmap::read_sub_range(Path::new("/etc/subuid"), u32::MAX, Some(&owner))
                .expect("root's range is in /etc/subuid")
                .0;
        assert_eq!(meta.uid(), start);
    }
    m.remove(&record.id).unwrap();
}

fn fork_bomb_meets_the_default_pids_limit(f: &Fixture) {
    if IdMapping::for_current_user().single_id {
        println!("  (skipped: no subordinate ID range for this user)");
        return;
    }
    let (_, out) = sh(
        f,
        "i=0; while [ $i -lt 3000 ]; do sleep 20 & i=$((i+1)); done; echo all-started",
    );
    assert!(!out.contains("all-started"), "3000 processes started");
    assert!(out.contains("fork"), "{out}");
}

/// The syscalls Docker's profile refuses, tried by this very binary inside
/// the sandbox (see [`probe`]).
fn syscalls_are_filtered(f: &Fixture) {
    let m = manager(f);
    let record = m
        .create("busybox:fixture", CreateOptions::default())
        .unwrap();
    let layers: Vec<PathBuf> = record.layers.iter().map(|d| f.store.layer_dir(d)).collect();
    m.remove(&record.id).unwrap();
    let dir = f.tmp.path().join("probe");
    for sub in ["upper", "work", "merged"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let bind = |host: &str, target: &str| ExtraMount {
        target: target.into(),
        source: MountSource::Host {
            path: PathBuf::from(host),
            owner: None,
        },
        read_only: true,
    };
    let exe = std::env::current_exe().unwrap();
    let spec = RunSpec {
        rootfs: RootfsSpec {
            layers,
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            volatile: false,
        },
        process: ProcessSpec {
            args: vec!["/probe".into()],
            env: vec![format!("{PROBE_ENV}=1")],
            cwd: "/".into(),
            user: String::new(),
        },
        network: Network::Host,
        hostname: "probe".into(),
        bind_files: vec![],
        mounts: vec![
            bind("/usr", "/usr"),
            bind("/lib", "/lib"),
            bind("/lib64", "/lib64"),
            bind(&exe.display().to_string(), "/probe"),
        ],
        id_mapping: m.id_mapping().clone(),
        pids_limit: None,
        security: Security::default(),
    };
    let out_path = f.tmp.path().join("probe.out");
    let file = std::fs::File::create(&out_path).unwrap();
    let stdio = RunStdio {
        stdin: Some(Stdio::null()),
        stdout: Some(file.try_clone().unwrap().into()),
        stderr: Some(file.into()),
        ..RunStdio::default()
    };
    let outcome = Launcher::current_exe()
        .unwrap()
        .run(&spec, stdio, None)
        .unwrap();
    let out = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(outcome.exit_code, 0, "{out} {:?}", outcome.failure);
    let eperm = libc::EPERM.to_string();
    for call in [
        "keyctl",
        "add_key",
        "request_key",
        "unshare_mnt",
        "unshare_net",
        "clone_newpid",
        "setns",
        "mount",
        "umount2",
        "bpf",
        "perf_event_open",
        "init_module",
        "finit_module",
        "kexec_load",
        "open_by_handle_at",
        "userfaultfd",
        "clock_settime",
        "swapon",
        "reboot",
    ] {
        let got = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{call} ")))
            .unwrap_or_else(|| panic!("{call} not probed: {out}"));
        assert_eq!(got, eperm, "{call} was not refused with EPERM: {out}");
    }
    assert!(out.contains(&format!("clone3 {}", libc::ENOSYS)), "{out}");
    assert!(
        out.contains("thread ok") && out.contains("fork ok"),
        "{out}"
    );
}

/// Inside the sandbox: try each call and print `name errno` (0: it worked).
fn probe() -> i32 {
    // The errno is read at once: the next call overwrites it.
    macro_rules! try_call {
        ($name:expr, $($arg:expr),+) => {{
            // SAFETY: valid or null pointers; the call fails or does nothing
            // harmful, inside the test's own sandbox.
            let rc = unsafe { libc::syscall($($arg),+) };
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
            println!("{} {}", $name, if rc < 0 { errno } else { 0 });
            rc
        }};
    }
    let null = std::ptr::null::<libc::c_char>();
    let (user, key) = (c"user".as_ptr(), c"k".as_ptr());
    let (tmpfs, tmp) = (c"tmpfs".as_ptr(), c"/tmp".as_ptr());
    try_call!("keyctl", libc::SYS_keyctl, 1, null); // KEYCTL_JOIN_SESSION_KEYRING
    try_call!("add_key", libc::SYS_add_key, user, key, null, 0, -3);
    try_call!("request_key", libc::SYS_request_key, user, key, null, -3);
    try_call!("unshare_mnt", libc::SYS_unshare, libc::CLONE_NEWNS);
    try_call!("unshare_net", libc::SYS_unshare, libc::CLONE_NEWNET);
    let flags = libc::CLONE_NEWPID | libc::SIGCHLD;
    if try_call!("clone_newpid", libc::SYS_clone, flags, 0, 0, 0, 0) == 0 {
        // SAFETY: the child of a clone that should not have worked leaves.
        unsafe { libc::_exit(0) };
    }
    try_call!("setns", libc::SYS_setns, 0, 0);
    try_call!("mount", libc::SYS_mount, tmpfs, tmp, tmpfs, 0, null);
    try_call!(
        "umount2",
        libc::SYS_umount2,
        c"/proc".as_ptr(),
        libc::MNT_DETACH
    );
    try_call!("bpf", libc::SYS_bpf, 0, null, 0);
    try_call!(
        "perf_event_open",
        libc::SYS_perf_event_open,
        null,
        0,
        -1,
        -1,
        0
    );
    try_call!("init_module", libc::SYS_init_module, null, 0, c"".as_ptr());
    try_call!("finit_module", libc::SYS_finit_module, -1, c"".as_ptr(), 0);
    try_call!("kexec_load", libc::SYS_kexec_load, 0, 0, null, 0);
    try_call!(
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        -1,
        null,
        0
    );
    try_call!("userfaultfd", libc::SYS_userfaultfd, 0);
    let realtime = libc::CLOCK_REALTIME;
    try_call!("clock_settime", libc::SYS_clock_settime, realtime, null);
    try_call!("swapon", libc::SYS_swapon, c"/x".as_ptr(), 0);
    try_call!("reboot", libc::SYS_reboot, 0, 0, 0, null);
    try_call!("clone3", libc::SYS_clone3, null, 0);
    if std::thread::spawn(|| 1).join().ok() == Some(1) {
        println!("thread ok");
    }
    let child = std::process::Command::new("/probe")
        .env_remove(PROBE_ENV)
        .env("CAIRN_ESCAPE_CHILD", "1")
        .status();
    if child.is_ok_and(|s| s.success()) {
        println!("fork ok");
    }
    0
}

fn main() {
    if std::env::var_os("CAIRN_ESCAPE_CHILD").is_some() {
        std::process::exit(0);
    }
    if std::env::var_os(PROBE_ENV).is_some() {
        std::process::exit(probe());
    }
    init_hook();
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let fixture = Fixture { tmp, store };
    cairn_testsupport::run_suite(
        fixture,
        cairn_testsupport::test_cases![Fixture;
            core_pattern_and_sysrq_cannot_be_written,
            mount_and_unshare_fail,
            kernel_files_are_masked,
            sys_is_read_only,
            capabilities_are_dockers_default,
            seccomp_filter_is_on_unless_unconfined,
            no_new_privileges_on_request,
            container_root_is_not_host_root,
            fork_bomb_meets_the_default_pids_limit,
            syscalls_are_filtered,
        ],
    )
}
