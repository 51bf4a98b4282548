//! End-to-end sandbox runs over the busybox fixture image: real user, mount
//! and PID namespaces, real overlayfs. `harness = false` so that `main` can
//! call the init hook before anything else, as every host binary must.

use cairn_sandbox::idmap::IdMapping;
use cairn_sandbox::{
    init_hook, BindFile, CancelToken, Launcher, Network, ProcessSpec, RootfsSpec, RunControl,
    RunSpec, RunStdio, SandboxError, Task, UpperLayerWriter,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The busybox fixture, extracted once into a layer dir.
struct Fixture {
    _tmp: tempfile::TempDir,
    layer: PathBuf,
    scratch: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let layer = cairn_testsupport::busybox_layer_dir(tmp.path());
        // tar extracted it with the identity; root's sandboxes see their
        // layers through the subordinate range, as the store extracts them.
        shift_owners(&layer, &IdMapping::for_current_user());
        let scratch = tmp.path().join("sandboxes");
        std::fs::create_dir_all(&scratch).unwrap();
        Fixture {
            _tmp: tmp,
            layer,
            scratch,
        }
    }

    /// A fresh sandbox dir with upper/work/merged.
    fn rootfs(&self, name: &str) -> RootfsSpec {
        let dir = self.scratch.join(name);
        for sub in ["upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        RootfsSpec {
            layers: vec![self.layer.clone()],
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            volatile: false,
        }
    }

    fn spec(&self, name: &str, args: &[&str]) -> RunSpec {
        let hosts = self.scratch.join(format!("{name}.hosts"));
        std::fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n").unwrap();
        RunSpec {
            rootfs: self.rootfs(name),
            process: ProcessSpec {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec![
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
                    "HOME=/root".into(),
                ],
                cwd: "/".into(),
                user: String::new(),
            },
            network: Network::Host,
            hostname: "sandbox".into(),
            bind_files: vec![BindFile {
                source: hosts,
                target: "/etc/hosts".into(),
                read_only: false,
            }],
            mounts: vec![],
            id_mapping: IdMapping::for_current_user(),
            pids_limit: None,
            security: Default::default(),
        }
    }
}

/// As real root under a shifted mapping, move every owner under `dir` by
/// the mapping's base, as extraction through the mapping would have made them.
fn shift_owners(dir: &Path, mapping: &IdMapping) {
    if mapping.is_identity() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let (base_u, base_g) = (mapping.host_uid(0).unwrap(), mapping.host_gid(0).unwrap());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(&p).unwrap();
        std::os::unix::fs::lchown(&p, Some(m.uid() + base_u), Some(m.gid() + base_g)).unwrap();
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
}

fn run_capture(spec: &RunSpec, timeout: Option<Duration>) -> (i32, String, String) {
    let control = RunControl {
        timeout,
        ..RunControl::default()
    };
    let (outcome, out, err) = run_controlled(spec, &control);
    (outcome.exit_code, out, err)
}

fn run_controlled(
    spec: &RunSpec,
    control: &RunControl,
) -> (cairn_sandbox::RunOutcome, String, String) {
    let launcher = Launcher::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let stdio = RunStdio {
        stdin: Some(Stdio::null()),
        stdout: Some(std::fs::File::create(&out_path).unwrap().into()),
        stderr: Some(std::fs::File::create(&err_path).unwrap().into()),
        ..RunStdio::default()
    };
    let outcome = launcher.run_with(spec, stdio, control).unwrap();
    let out = std::fs::read_to_string(out_path).unwrap();
    let mut err = std::fs::read_to_string(err_path).unwrap();
    if let Some(f) = &outcome.failure {
        err.push_str(f.message());
    }
    (outcome, out, err)
}

/// Host processes whose command line contains `pattern`.
fn host_processes(pattern: &str) -> String {
    let ps = Command::new("pgrep")
        .args(["-a", "-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&ps.stdout).into_owned()
}

fn sh(f: &Fixture, name: &str, script: &str) -> (i32, String, String) {
    run_capture(&f.spec(name, &["/bin/sh", "-c", script]), None)
}

fn runs_a_command_with_pid_1_and_own_hostname(f: &Fixture) {
    let (code, out, err) = sh(
        f,
        "pid1",
        "echo pid=$$; hostname; cat /etc/hosts; ls /proc | grep -c '^[0-9]'",
    );
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    // The shell is the command; PID 1 is our init, so the shell is 2.
    assert_eq!(lines[0], "pid=2", "{out}");
    assert_eq!(lines[1], "sandbox");
    assert!(out.contains("127.0.0.1 localhost"));
    // Only our init, the shell, and ls/grep: no host processes.
    let visible: usize = lines.last().unwrap().trim().parse().unwrap();
    assert!(visible <= 4, "saw {visible} processes: host PIDs leak");
}

fn exit_codes_follow_docker(f: &Fixture) {
    assert_eq!(sh(f, "exit3", "exit 3").0, 3);
    let (code, _, err) = run_capture(&f.spec("missing", &["no-such-command"]), None);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("no-such-command"), "{err}");
    let (code, _, err) = run_capture(&f.spec("notexec", &["/etc/passwd"]), None);
    assert_eq!(code, 126, "{err}");
    assert_eq!(sh(f, "killed", "kill -9 $$").0, 137);
    let mut spec = f.spec("baduser", &["true"]);
    spec.process.user = "ghost".into();
    let (code, _, err) = run_capture(&spec, None);
    assert_eq!(code, 125);
    assert!(err.contains("unable to find user ghost"), "{err}");
    let mut spec = f.spec("cwdfile", &["true"]);
    spec.process.cwd = "/etc/passwd".into();
    let (code, _, err) = run_capture(&spec, None);
    assert_eq!(code, 125);
    assert!(err.contains("not a directory"), "{err}");
}

fn changes_land_in_the_upper_dir(f: &Fixture) {
    let script = "set -e; echo new > /new.txt; rm /etc/nsswitch.conf; rm -r /home/app; mkdir /home/app; \
                  touch /home/app/fresh; mkdir -p /owned; chown 1000:1000 /owned; cp /bin/busybox /suid; chmod 4755 /suid";
    let (code, _, err) = sh(f, "changes", script);
    assert_eq!(code, 0, "{err}");
    let upper = f.scratch.join("changes/upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("new.txt")).unwrap(),
        "new\n"
    );
    // A deleted lower file is a 0:0 character device (whiteout).
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(upper.join("etc/nsswitch.conf")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "no whiteout"
    );
    // A recreated lower dir is opaque (user xattr: we mount with userxattr).
    let opaque = xattr_get(&upper.join("home/app"), "user.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    // Owners: container 1000 is host 1000 as root, a subordinate ID rootless.
    let mapping = IdMapping::for_current_user();
    let owned = std::fs::metadata(upper.join("owned")).unwrap();
    assert_eq!(Some(owned.uid()), mapping.host_uid(1000));
    let suid = std::fs::metadata(upper.join("suid")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o4755);
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: buffers are valid for the given lengths.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

fn remove_tree_task_deletes_files_of_subordinate_ids(f: &Fixture) {
    let script = "mkdir -p /locked/deep && touch /locked/deep/f && chown -R 1000:1000 /locked && chmod 700 /locked /locked/deep";
    let (code, _, err) = sh(f, "locked", script);
    assert_eq!(code, 0, "{err}");
    let dir = f.scratch.join("locked");
    assert!(dir.join("upper/locked/deep/f").exists() || !nix::unistd::geteuid().is_root());
    let launcher = Launcher::current_exe().unwrap();
    launcher
        .run_task(
            &IdMapping::for_current_user(),
            Task::RemoveTree(dir.clone()),
        )
        .unwrap();
    assert!(!dir.exists(), "sandbox dir survived its removal");
}

fn users_resolve_inside_the_image(f: &Fixture) {
    let mut spec = f.spec("user", &["/bin/sh", "-c", "id -u; id -g; id -G; pwd"]);
    spec.process.user = "app".into();
    spec.process.cwd = "/home/app/work".into();
    let (code, out, err) = run_capture(&spec, None);
    if IdMapping::for_current_user().single_id {
        println!("  (skipped: no subordinate ID range for this user)");
        return;
    }
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1000\n1000\n1000 10 50\n/home/app/work\n");
}

fn network_none_has_only_loopback(f: &Fixture) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut spec = f.spec("netnone", &["/bin/sh", "-c", &format!("ls /sys/class/net 2>/dev/null; cat /proc/net/dev | tail -n +3 | cut -d: -f1; echo x | nc -w 1 127.0.0.1 {port} && echo reached")]);
    spec.network = Network::None;
    let (code, out, err) = run_capture(&spec, None);
    assert!(
        !out.contains("reached"),
        "reached the host port: {out} {err}"
    );
    assert!(out.contains("lo"), "{out}");
    assert!(!out.contains("eth"), "{out}");
    let _ = code;
}

fn timeout_kills_the_whole_tree(f: &Fixture) {
    let marker = f.scratch.join("timeout-marker");
    let spec = f.spec(
        "timeout",
        &[
            "/bin/sh",
            "-c",
            "(sleep 30; echo late) & (sleep 30) & sleep 30",
        ],
    );
    let started = Instant::now();
    let (code, _, _) = run_capture(&spec, Some(Duration::from_millis(500)));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(code, 137);
    // No sleeper may survive: every process of the namespace died with PID 1.
    std::thread::sleep(Duration::from_millis(200));
    // Anchored: only a process that is exactly `sleep 30` (not, say, a
    // shell running `sleep 300` elsewhere on the machine).
    let left = host_processes("^sleep 30$");
    assert!(left.is_empty(), "sleepers survived: {left}");
    let _ = marker;
}

fn cancel_from_another_thread_kills_the_whole_tree(f: &Fixture) {
    let spec = f.spec(
        "cancel",
        &[
            "/bin/sh",
            "-c",
            "(sleep 4321; echo late) & (sh -c 'sleep 4321') & echo started; sleep 4321",
        ],
    );
    let token = CancelToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            token.cancel();
        })
    };
    let control = RunControl {
        cancel: Some(token),
        timeout: Some(Duration::from_secs(60)),
        ..RunControl::default()
    };
    let started = Instant::now();
    let (outcome, out, _) = run_controlled(&spec, &control);
    canceller.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(outcome.cancelled && !outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.exit_code, 137);
    assert_eq!(
        out, "started\n",
        "the command did not run before the cancel"
    );
    std::thread::sleep(Duration::from_millis(200));
    let left = host_processes("sleep 4321");
    assert!(left.is_empty(), "processes survived the cancel: {left}");

    // A token cancelled before the run stops it from starting at all.
    let token = CancelToken::new();
    token.cancel();
    let control = RunControl {
        cancel: Some(token),
        ..RunControl::default()
    };
    let (outcome, out, _) = run_controlled(&f.spec("cancel-early", &["echo", "ran"]), &control);
    assert!(outcome.cancelled && out.is_empty(), "{outcome:?} {out}");
}

fn writes_outside_the_rootfs_fail(f: &Fixture) {
    // A host directory with a secret, by its host path.
    let host = f.scratch.join("host-dir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("secret"), "host secret\n").unwrap();
    let h = host.display().to_string();
    let script = format!(
        "cat {h}/secret 2>/dev/null && echo READ-HOST; \
         mkdir -p {h} && echo pwned > {h}/escaped && echo wrote-inside; \
         cat /proc/1/root{h}/secret 2>/dev/null && echo READ-VIA-PROC1; \
         echo pwned > /proc/1/root{h}/escaped2; echo pwned > /proc/self/root{h}/escaped3; \
         ln -s {h} /hostlink && echo pwned > /hostlink/escaped4; \
         ln -s ../../../../../../../../{h} /rel && echo pwned > /rel/escaped5; \
         cd / && cd ../../.. && echo pwned > escaped6; \
         grep -c . /proc/1/mountinfo"
    );
    let (code, out, err) = sh(f, "escape", &script);
    assert_eq!(code, 0, "{out} {err}");
    assert!(!out.contains("READ-"), "read a host file: {out}");
    assert!(out.contains("wrote-inside"), "{out} {err}");
    let mut names: Vec<String> = std::fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["secret"], "the sandbox wrote into a host directory");
    assert_eq!(
        std::fs::read_to_string(host.join("secret")).unwrap(),
        "host secret\n"
    );
    // Every write landed in the sandbox's own upper dir instead (or, for
    // /proc/1/root, was refused: PID 1 holds capabilities the command lacks,
    // so the command may not look into it).
    let upper = f.scratch.join("escape/upper");
    let inside = upper.join(h.trim_start_matches('/'));
    for name in ["escaped", "escaped3", "escaped4", "escaped5"] {
        assert!(inside.join(name).is_file(), "{name} not in the upper dir");
    }
    assert!(upper.join("escaped6").is_file());

    // An image whose /etc/hosts is a symlink to a host path: the generated
    // hosts file is mounted where the link points *inside* the rootfs, and
    // nothing is created at the host path.
    let mut spec = f.spec("symlinked-hosts", &["cat", "/etc/hosts"]);
    std::fs::create_dir_all(spec.rootfs.upper.join("etc")).unwrap();
    let target = host.join("via-bind");
    std::os::unix::fs::symlink(&target, spec.rootfs.upper.join("etc/hosts")).unwrap();
    shift_owners(&spec.rootfs.upper.join("etc"), &spec.id_mapping);
    spec.process.args = vec!["cat".into(), "/etc/hosts".into()];
    let (code, out, err) = run_capture(&spec, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("127.0.0.1 localhost"), "{out}");
    assert!(
        !target.exists(),
        "setting up the sandbox created a file at a host path"
    );
    assert!(spec
        .rootfs
        .upper
        .join(target.strip_prefix("/").unwrap())
        .exists());
}

/// Runs as root: the same binary again as a user with no subordinate range.
fn single_id_fallback_without_a_range(_: &Fixture) {
    if std::env::var_os("CAIRN_TEST_ROOTLESS").is_some() {
        println!("  (covered by the root run)");
        return;
    }
    let Some(user) = cairn_testsupport::norange_user() else {
        println!("  (skipped: needs root to run as a user without a range)");
        return;
    };
    let out = Command::new("runuser")
        .args(["-u", &user, "--"])
        .arg(std::env::current_exe().unwrap())
        .env("CAIRN_TEST_SINGLE_ID", "1")
        .current_dir("/tmp")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("single-id: ok"),
        "as {user}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The body of the single-ID test, as the user without a range.
fn single_id_checks() {
    let f = Fixture::new();
    let mapping = IdMapping::for_current_user();
    assert!(mapping.single_id, "this user has a subordinate range");
    let warning = mapping.single_id_warning().unwrap();
    assert!(
        warning.contains("usermod --add-subuids") && warning.contains("only your own ID"),
        "{warning}"
    );
    // The sandbox works as container root...
    let (code, out, err) = sh(&f, "single", "echo hi > /f && cat /f && id -u");
    assert_eq!((code, out.as_str()), (0, "hi\n0\n"), "{err}");
    // ...but other IDs do not exist in it.
    let (code, _, err) = sh(&f, "single-chown", "touch /x && chown 1000 /x");
    assert_ne!(code, 0);
    assert!(err.contains("Invalid argument"), "{err}");
    let mut spec = f.spec("single-user", &["id"]);
    spec.process.user = "app".into();
    let (code, _, err) = run_capture(&spec, None);
    assert_eq!(code, 125);
    assert!(err.contains("usermod --add-subuids"), "{err}");
    println!("single-id: ok");
}

fn background_processes_are_killed_when_the_command_exits(f: &Fixture) {
    let (code, _, _) = sh(f, "daemons", "(sleep 31 &) ; sleep 31 & exit 0");
    assert_eq!(code, 0);
    std::thread::sleep(Duration::from_millis(200));
    let left = host_processes("^sleep 31$");
    assert!(left.is_empty(), "leftover processes: {left}");
}

/// The helper is a fork of this (single-threaded) test process by default,
/// an exec of it with `CAIRN_SANDBOX_SPAWN=exec`: the command must get the
/// same sandbox either way. None of the caller's descriptors may reach it
/// (a fork inherits all of them, an exec those without close-on-exec: here
/// one is planted without it), no signal may be ignored or blocked (Rust's
/// runtime ignores SIGPIPE, and ignoring survives exec), and exit codes come
/// through PID 1's report.
fn both_helper_spawns_give_the_same_sandbox(f: &Fixture) {
    let planted = std::fs::File::open("/etc/hostname").unwrap();
    // SAFETY: dup of an open descriptor; the copy has no close-on-exec.
    let leaked = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&planted)) };
    assert!(leaked > 2);
    let script =
        "ls /proc/self/fd | tr '\\n' ' '; echo; grep -E '^Sig(Ign|Blk)' /proc/self/status; exit 3";
    for mode in ["exec", "fork"] {
        std::env::set_var(cairn_sandbox::spawn::SPAWN_ENV, mode);
        let (code, out, err) = sh(f, &format!("spawn-{mode}"), script);
        std::env::remove_var(cairn_sandbox::spawn::SPAWN_ENV);
        assert_eq!(code, 3, "{mode}: stderr: {err}");
        let mut lines = out.lines();
        // 0-2, and the descriptor ls reads /proc/self/fd through.
        assert_eq!(lines.next(), Some("0 1 2 3 "), "{mode}: descriptors: {out}");
        for line in lines {
            assert!(line.ends_with("0000000000000000"), "{mode}: {line}");
        }
    }
    // SAFETY: closing the descriptor dup gave us.
    unsafe { libc::close(leaked) };
}

/// A run returns on PID 1's report, before the helper has gone (its exit
/// waits for the namespaces' teardown); the helper is then reaped in the
/// background: no child of ours may stay a zombie.
fn helpers_are_reaped_after_the_run_returns(f: &Fixture) {
    for i in 0..3 {
        let (code, _, err) = sh(f, &format!("reap-{i}"), "exit 0");
        assert_eq!(code, 0, "stderr: {err}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let children = own_children();
        if children.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "children left (pid, state): {children:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A layer writer that, as its helper starts, checks that the store's
/// early-sync thread is alive and counted quiet, and that the helper is
/// still a fork of this process beside it.
struct ForkCheck<'a>(UpperLayerWriter<'a>);

impl cairn_store::LayerWriter for ForkCheck<'_> {
    type Error = SandboxError;

    fn write_layer(
        &self,
        dir: &Path,
        out: &mut cairn_store::BlobWriter,
    ) -> Result<cairn_store::LayerReport, SandboxError> {
        assert_eq!(
            cairn_layer::quiet::quiet_threads(),
            1,
            "the early-sync thread runs beside the write, quiet"
        );
        let before = cairn_sandbox::spawn::forked_helpers();
        let report = self.0.write_layer(dir, out);
        assert_eq!(
            cairn_sandbox::spawn::forked_helpers(),
            before + 1,
            "the helper is forked beside the sync thread, not exec'd"
        );
        report
    }
}

/// Every commit starts the store's early `syncfs` thread; its helper must
/// still be forked (the thread holds no lock, `cairn_layer::quiet`), and a
/// fork beside it must never deadlock: 200 small commits in a row.
fn commits_fork_their_helper_beside_the_early_sync(f: &Fixture) {
    let store = cairn_store::Store::open(f.scratch.join("fork-store")).unwrap();
    let launcher = Launcher::current_exe().unwrap();
    let mapping = IdMapping::for_current_user();
    // As root the task's container root is a subordinate ID: it must reach
    // the store's tmp/ and own the upper dirs, as a sandbox's would be.
    for dir in [store.layout().tmp(), f.scratch.join("fork-store")] {
        let mode: std::fs::Permissions = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&dir, mode).unwrap();
    }
    let writer = || UpperLayerWriter {
        launcher: &launcher,
        mapping: &mapping,
        compression: cairn_layer::Compression::Gzip,
        timestamp: None,
    };
    let upper = |i: usize| {
        let dir = store.layout().tmp().join(format!("fork-{i}"));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/n"), i.to_string()).unwrap();
        shift_owners(&dir, &mapping);
        dir
    };
    let layer = store
        .commit_layer(&ForkCheck(writer()), &upper(0), None)
        .unwrap();
    assert!(layer.adopted);
    let before = cairn_sandbox::spawn::forked_helpers();
    for i in 1..=200 {
        let layer = store.commit_layer(&writer(), &upper(i), None).unwrap();
        assert!(layer.adopted, "commit {i}");
    }
    assert_eq!(cairn_sandbox::spawn::forked_helpers() - before, 200);
    assert_eq!(cairn_layer::quiet::quiet_threads(), 0);
}

/// (pid, state) of every child of this process.
fn own_children() -> Vec<(String, String)> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(list.split_whitespace().map(str::to_string));
    }
    pids.into_iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim()
                .chars()
                .take(1)
                .collect();
            (pid, state)
        })
        .collect()
}

/// A volatile overlay (what `run --rm` and build steps mount) keeps the
/// command's changes in the upper dir, and the same dirs mount again (the
/// marker a volatile mount leaves in the work dir is cleared first).
fn a_volatile_rootfs_keeps_changes_and_mounts_again(f: &Fixture) {
    let mut spec = f.spec("volatile", &["/bin/sh", "-c", "echo one > /made"]);
    spec.rootfs.volatile = true;
    let (code, _, err) = run_capture(&spec, None);
    assert_eq!(code, 0, "stderr: {err}");
    let made = spec.rootfs.upper.join("made");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "one\n");
    spec.process.args = vec!["/bin/cat".into(), "/made".into()];
    let (code, out, err) = run_capture(&spec, None);
    assert_eq!((code, out.as_str()), (0, "one\n"), "stderr: {err}");
}

fn pids_limit_stops_a_fork_bomb(f: &Fixture) {
    if IdMapping::for_current_user().single_id {
        println!("  (skipped: no subordinate ID range for this user)");
        return;
    }
    // busybox sh gives up on the first fork that fails.
    let script = "for i in $(seq 200); do sleep 5 & done; echo all-started";
    let mut spec = f.spec("forkbomb", &["/bin/sh", "-c", script]);
    spec.process.user = "app".into();
    spec.pids_limit = Some(20);
    let (_, out, err) = run_capture(&spec, Some(Duration::from_secs(20)));
    assert!(
        !out.contains("all-started"),
        "200 processes started despite a limit of 20"
    );
    assert!(err.contains("fork"), "no fork failure reported: {err}");
}

fn main() {
    init_hook();
    if std::env::var_os("CAIRN_TEST_SINGLE_ID").is_some() {
        single_id_checks();
        return;
    }
    let fixture = Fixture::new();
    cairn_testsupport::run_suite(
        fixture,
        cairn_testsupport::test_cases![Fixture;
            runs_a_command_with_pid_1_and_own_hostname,
            exit_codes_follow_docker,
            changes_land_in_the_upper_dir,
            remove_tree_task_deletes_files_of_subordinate_ids,
            users_resolve_inside_the_image,
            network_none_has_only_loopback,
            timeout_kills_the_whole_tree,
            pids_limit_stops_a_fork_bomb,
            background_processes_are_killed_when_the_command_exits,
            cancel_from_another_thread_kills_the_whole_tree,
            writes_outside_the_rootfs_fail,
            single_id_fallback_without_a_range,
            both_helper_spawns_give_the_same_sandbox,
            helpers_are_reaped_after_the_run_returns,
            commits_fork_their_helper_beside_the_early_sync,
            a_volatile_rootfs_keeps_changes_and_mounts_again,
        ],
    )
}
