//! Long-lived sandboxes over a real store: create from the busybox fixture,
//! exec twice into the same state, commit, start a new sandbox from the
//! committed image, remove. Runs as root and again as the unprivileged test
//! user (harness = false: `main` calls the init hook first).

use cairn_layer::Compression;
use cairn_sandbox::cgroup::CgroupParent;
use cairn_sandbox::manager::{Argv, CreateOptions, ExecOptions, Resources, SandboxManager};
use cairn_sandbox::{init_hook, Launcher, RunStdio};
use cairn_store::transport::Transport;
use cairn_store::Digest;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

fn capture(manager: &SandboxManager, id: &str, argv: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let opts = ExecOptions {
        argv: Argv::Direct(argv.iter().map(|s| s.to_string()).collect()),
        stdio: RunStdio {
            stdin: Some(Stdio::null()),
            stdout: Some(std::fs::File::create(&out_path).unwrap().into()),
            stderr: None,
            ..RunStdio::default()
        },
        ..ExecOptions::default()
    };
    let outcome = manager.exec(id, opts).unwrap();
    (
        outcome.exit_code,
        std::fs::read_to_string(out_path).unwrap(),
    )
}

/// The config bytes of a commit are what the JSON-value code wrote: the
/// base's document with `created`, one diff id and one history entry more
/// (a changed byte is a changed digest for every committed sandbox).
fn committed_config_is_the_base_plus_the_commit(store: &cairn_store::Store, manifest: &Digest) {
    let config_of = |m: &Digest| {
        let (_, parsed) = store.manifest(m).unwrap();
        store
            .read_blob_bytes(&parsed.config.unwrap().digest)
            .unwrap()
    };
    let got = config_of(manifest);
    let doc: Value = serde_json::from_slice(&got).unwrap();
    let mut want: Value =
        serde_json::from_slice(&config_of(&store.resolve("busybox:fixture").unwrap())).unwrap();
    let created = doc["created"].clone();
    want["created"] = created.clone();
    let new_id = doc["rootfs"]["diff_ids"][1].clone();
    want["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(new_id);
    let entry = json!({"created": created, "created_by": "cairn sandbox commit"});
    match want["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => want["history"] = json!([entry]),
    }
    assert_eq!(
        String::from_utf8(got).unwrap(),
        serde_json::to_string(&want).unwrap()
    );
}

fn lifecycle(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap());
    let single = manager.id_mapping().single_id;

    let opts = CreateOptions {
        name: Some("first".into()),
        resources: Resources {
            cpu: Some(2.0),
            memory_gb: Some(1.0),
            pids: Some(200),
            ..Resources::default()
        },
        ..CreateOptions::default()
    };
    let sb = manager.create("busybox:fixture", opts).unwrap();
    // Applied through a cgroup (v2, or v1 as root), or each reported with its reason.
    if sb.cgroup.is_none() && sb.v1_cgroups.is_empty() {
        assert_eq!(
            sb.resources.not_applied.len(),
            3,
            "{:?}",
            sb.resources.not_applied
        );
    }
    assert!(
        store.has_layer_dir(&sb.layers[0]),
        "layer not extracted into the store"
    );

    // Two execs see one filesystem.
    let owner = if single { "0:0" } else { "1000:1000" };
    let script = format!(
        "echo hello > /greeting && mkdir /data && chown {owner} /data && rm /etc/nsswitch.conf"
    );
    assert_eq!(capture(&manager, "first", &["/bin/sh", "-c", &script]).0, 0);
    let (code, out) = capture(
        &manager,
        &sb.id,
        &[
            "/bin/sh",
            "-c",
            "cat /greeting; stat -c %u:%g /data; ls /etc",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("hello\n{owner}\n")), "{out}");
    assert!(
        !out.contains("nsswitch.conf"),
        "deletion lost between execs: {out}"
    );

    // Commit, and start a new sandbox from the committed image.
    let manifest = manager
        .commit("first", "localhost/committed:v1", Compression::Gzip)
        .unwrap();
    assert_eq!(store.resolve("localhost/committed:v1").unwrap(), manifest);
    committed_config_is_the_base_plus_the_commit(&store, &manifest);
    let second = manager
        .create("localhost/committed:v1", CreateOptions::default())
        .unwrap();
    assert_eq!(second.layers.len(), 2);
    let (code, out) = capture(
        &manager,
        &second.id,
        &[
            "/bin/sh",
            "-c",
            "cat /greeting; stat -c %u:%g /data; ls /etc; ls -a /",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("hello\n{owner}\n")), "{out}");
    assert!(
        !out.contains("nsswitch.conf"),
        "whiteout lost in the commit: {out}"
    );
    // The /etc/hosts and /etc/hostname mount stubs were not committed
    // (the fixture has neither; they are bind mounts again in this run).
    let layer = store.layer_dir(&second.layers[1]);
    assert!(
        !layer.join("etc/hosts").exists() && !layer.join("etc/hostname").exists(),
        "mount stubs committed"
    );

    // The first sandbox carries on from its commit.
    let (code, out) = capture(&manager, "first", &["cat", "/greeting"]);
    assert_eq!((code, out.as_str()), (0, "hello\n"));

    // The committed image is readable by a real peer.
    let export = tmp.path().join("export");
    store
        .export(
            "localhost/committed:v1",
            &Transport::parse(&format!("oci:{}:v1", export.display())).unwrap(),
        )
        .unwrap();
    let umoci = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", export.display()))
        .arg(tmp.path().join("bundle"))
        .output();
    if let Ok(out) = umoci {
        assert!(
            out.status.success(),
            "umoci: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let greeting = std::fs::read_to_string(tmp.path().join("bundle/rootfs/greeting")).unwrap();
        assert_eq!(greeting, "hello\n");
        assert!(!tmp.path().join("bundle/rootfs/etc/nsswitch.conf").exists());
    }

    // Listing and removal.
    let ids: Vec<String> = manager.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 2);
    manager.remove("first").unwrap();
    manager.remove(&second.id).unwrap();
    assert!(manager.list().unwrap().is_empty());
    assert!(
        std::fs::read_dir(store.layout().sandboxes())
            .unwrap()
            .next()
            .is_none(),
        "sandbox dirs left behind"
    );
    assert!(manager.get("first").is_err());
}

fn limits(cpu: f64, memory_gb: f64, pids: u64) -> CreateOptions {
    CreateOptions {
        resources: Resources {
            cpu: Some(cpu),
            memory_gb: Some(memory_gb),
            pids: Some(pids),
            ..Resources::default()
        },
        ..CreateOptions::default()
    }
}

/// On this machine's own cgroups: limits apply when the caller's cgroup v2
/// subtree is delegated with the controllers, and are reported, each with
/// the reason, when not (a hybrid host, with cpu/memory/pids on cgroup v1,
/// cannot apply any).
fn limits_apply_or_say_why_not(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap());
    let sb = manager
        .create("busybox:fixture", limits(0.5, 0.25, 64))
        .unwrap();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let on_v1 = |ctrl: &str| {
        own.lines().any(|l| {
            let mut f = l.splitn(3, ':');
            f.next() != Some("0") && f.next().is_some_and(|c| c.split(',').any(|x| x == ctrl))
        })
    };
    if !sb.v1_cgroups.is_empty() {
        // Root on this hybrid host: the v1 memory, cpu and pids controllers.
        assert!(
            sb.resources.not_applied.is_empty(),
            "{:?}",
            sb.resources.not_applied
        );
        let file = |ctrl: &str, f: &str| {
            let dir = sb
                .v1_cgroups
                .iter()
                .find(|d| d.starts_with(format!("/sys/fs/cgroup/{ctrl}")));
            std::fs::read_to_string(dir.expect(ctrl).join(f)).unwrap_or_default()
        };
        assert_eq!(file("cpu", "cpu.cfs_quota_us").trim(), "50000");
        assert_eq!(file("memory", "memory.limit_in_bytes").trim(), "268435456");
        assert_eq!(file("pids", "pids.max").trim(), "64");
        let (code, out) = capture(&manager, &sb.id, &["cat", "/proc/self/cgroup"]);
        assert_eq!(code, 0);
        for ctrl in ["cpu", "memory", "pids"] {
            assert!(
                out.lines()
                    .any(|l| l.contains(ctrl) && l.contains("/cairn/cairn-")),
                "the sandbox is not in its {ctrl} cgroup: {out}"
            );
        }
        let dirs = sb.v1_cgroups.clone();
        manager.remove(&sb.id).unwrap();
        assert!(dirs.iter().all(|d| !d.exists()), "v1 cgroups left behind");
        return;
    }
    match &sb.cgroup {
        Some(dir) => {
            println!("  (limits applied in {})", dir.display());
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            for (file, want) in [
                ("cpu.max", "50000 100000"),
                ("memory.max", "268435456"),
                ("pids.max", "64"),
            ] {
                let listed = sb.resources.not_applied.iter().any(|n| n.contains(file));
                assert!(
                    read(file).trim() == want || listed,
                    "{file}: {:?}",
                    read(file)
                );
            }
            let (code, out) = capture(&manager, &sb.id, &["cat", "/proc/self/cgroup"]);
            assert_eq!(code, 0);
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                out.contains(&name),
                "the sandbox is not in its cgroup: {out}"
            );
            manager.remove(&sb.id).unwrap();
            assert!(!dir.exists(), "cgroup left behind");
        }
        None => {
            let notes = &sb.resources.not_applied;
            println!("  (limits not applied here: {})", notes.join(" | "));
            assert_eq!(notes.len(), 3, "{notes:?}");
            for (label, ctrl) in [
                ("cpu=0.5: ", "cpu"),
                ("memory=", "memory"),
                ("pids=64: ", "pids"),
            ] {
                let note = notes
                    .iter()
                    .find(|n| n.starts_with(label))
                    .unwrap_or_else(|| panic!("{ctrl} not reported: {notes:?}"));
                assert!(note.len() > label.len() + 20, "no reason given: {note}");
                if on_v1(ctrl) {
                    assert!(note.contains("cgroup v1"), "{note}");
                }
            }
            // The sandbox works all the same.
            assert_eq!(capture(&manager, &sb.id, &["true"]).0, 0);
            manager.remove(&sb.id).unwrap();
        }
    }
}

/// The apply path end to end over an imitation of cgroupfs (plain files):
/// controllers enabled in the parent, one child per sandbox with its limit
/// files, every exec's helper moved into it, the child removed with the
/// sandbox. Kernel enforcement is what a real delegated cgroup adds.
fn limits_land_in_a_delegated_cgroup(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let parent = tmp.path().join("cgroup");
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::write(
        parent.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    std::fs::write(parent.join("cgroup.subtree_control"), "cpu\n").unwrap();
    std::fs::write(parent.join("cgroup.procs"), "").unwrap();
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap())
        .with_cgroup_parent(CgroupParent::unchecked(parent.clone()));
    let sb = manager
        .create("busybox:fixture", limits(2.0, 1.5, 100))
        .unwrap();
    assert!(
        sb.resources.not_applied.is_empty(),
        "{:?}",
        sb.resources.not_applied
    );
    let dir = parent.join(format!("cairn-{}", sb.id));
    assert_eq!(sb.cgroup.as_deref(), Some(dir.as_path()));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(read("cpu.max"), "200000 100000");
    assert_eq!(read("memory.max"), (3u64 << 29).to_string());
    assert_eq!(read("pids.max"), "100");
    // cpu was enabled already; memory and pids were added (a real
    // subtree_control accumulates the writes; the imitation keeps the last).
    assert_eq!(
        std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap(),
        "+pids"
    );
    assert_eq!(capture(&manager, &sb.id, &["true"]).0, 0);
    let moved: u32 = read("cgroup.procs")
        .trim()
        .parse()
        .expect("a pid in cgroup.procs");
    assert!(moved > 1);
    // The record says where the cgroup is, for exec and removal.
    assert_eq!(manager.get(&sb.id).unwrap().cgroup, Some(dir.clone()));
    // A real cgroup's files vanish with it; the imitation's must go first.
    for f in ["cpu.max", "memory.max", "pids.max", "cgroup.procs"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    manager.remove(&sb.id).unwrap();
    assert!(!dir.exists(), "cgroup left behind");

    // A parent that is not delegated: everything reported, nothing made.
    let other = tmp.path().join("not-a-cgroup");
    std::fs::create_dir_all(&other).unwrap();
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap())
        .with_cgroup_parent(CgroupParent::at(other.clone()));
    let sb = manager
        .create("busybox:fixture", limits(1.0, 1.0, 10))
        .unwrap();
    assert_eq!(sb.cgroup, None);
    if sb.v1_cgroups.is_empty() {
        assert_eq!(sb.resources.not_applied.len(), 3);
        assert!(
            sb.resources.not_applied[0].contains("is not a cgroup v2 directory"),
            "{:?}",
            sb.resources.not_applied
        );
    } else {
        // Root on this hybrid host falls back to the v1 controllers.
        assert_eq!(sb.v1_cgroups.len(), 3);
        assert!(
            sb.resources.not_applied.is_empty(),
            "{:?}",
            sb.resources.not_applied
        );
    }
    manager.remove(&sb.id).unwrap();
}

/// `remove_dead` (what `sandbox ls` and `cairn prune` run) removes
/// ephemeral sandboxes whose owner process is gone, and nothing else.
fn dead_owners_sandboxes_are_removed(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap());
    let kept = manager
        .create("busybox:fixture", CreateOptions::default())
        .unwrap();
    let mine = manager
        .create(
            "busybox:fixture",
            CreateOptions {
                ephemeral: true,
                ..CreateOptions::default()
            },
        )
        .unwrap();
    let dead = manager
        .create(
            "busybox:fixture",
            CreateOptions {
                ephemeral: true,
                ..CreateOptions::default()
            },
        )
        .unwrap();
    // Pretend the third one's owner died: same pid, another start time.
    let record_path = store
        .layout()
        .sandboxes()
        .join(&dead.id)
        .join("sandbox.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    let ticks = record["owner"]["start_ticks"].as_u64().unwrap();
    record["owner"]["start_ticks"] = (ticks + 1).into();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();

    assert_eq!(manager.remove_dead().unwrap(), vec![dead.id.clone()]);
    assert!(!store.layout().sandboxes().join(&dead.id).exists());
    let left: Vec<String> = manager.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&kept.id) && left.contains(&mine.id));
    manager.remove(&kept.id).unwrap();
    manager.remove(&mine.id).unwrap();
}

/// `run --rm`'s path: an ephemeral sandbox's exec returns on the command's
/// report, its removal leaves no directory and no GC root (removed without
/// an fsync), and a root a power loss would bring back (a root of a
/// sandbox whose dir is gone) is dropped by `remove_dead`, so it cannot
/// pin the image. A long-lived sandbox's execs run one after the other
/// over the same upper dir, each seeing the last one's changes.
fn run_rm_leaves_nothing_and_lost_removals_are_swept(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap());
    let ephemeral = CreateOptions {
        ephemeral: true,
        ..CreateOptions::default()
    };
    for _ in 0..2 {
        let sb = manager
            .create("busybox:fixture", ephemeral.clone())
            .unwrap();
        for expected in [0, 7] {
            let script = format!("echo ran; exit {expected}");
            let got = capture(&manager, &sb.id, &["sh", "-c", &script]);
            assert_eq!(got, (expected, "ran\n".to_string()));
        }
        manager.remove(&sb.id).unwrap();
        assert!(!store.layout().sandboxes().join(&sb.id).exists());
    }
    assert_eq!(store.root_ids("sandbox").unwrap(), Vec::<String>::new());

    let kept = manager
        .create("busybox:fixture", CreateOptions::default())
        .unwrap();
    for (step, seen) in [
        ("echo 1 >> /n", ""),
        ("echo 2 >> /n", ""),
        ("cat /n", "1\n2\n"),
    ] {
        let got = capture(&manager, &kept.id, &["sh", "-c", step]);
        assert_eq!(got, (0, seen.to_string()), "{step}");
    }
    let lost = "0123456789abcdef01234567";
    let image = store.resolve("busybox:fixture").unwrap();
    store.add_root("sandbox", lost, &image).unwrap();
    manager.remove_dead().unwrap();
    assert_eq!(store.root_ids("sandbox").unwrap(), vec![kept.id.clone()]);
    manager.remove(&kept.id).unwrap();
}

/// An ephemeral sandbox of a manager that relies on `store.lock`
/// (`ephemeral_kept_by_store_lock`, as `cairn run --rm` does) has no GC
/// root while it lives when the handle holds the lock for its life, and
/// its removal writes none; a per-operation handle (a service, which lets
/// GC in between operations) keeps the root all the same.
fn ephemeral_roots_follow_the_store_lock(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let ephemeral = CreateOptions {
        ephemeral: true,
        ..CreateOptions::default()
    };
    let held = SandboxManager::new(&store, Launcher::current_exe().unwrap())
        .ephemeral_kept_by_store_lock();
    let sb = held.create("busybox:fixture", ephemeral.clone()).unwrap();
    assert_eq!(store.root_ids("sandbox").unwrap(), Vec::<String>::new());
    assert_eq!(capture(&held, &sb.id, &["true"]).0, 0);
    held.remove(&sb.id).unwrap();
    // A long-lived sandbox keeps its root whatever the handle.
    let kept = held
        .create("busybox:fixture", CreateOptions::default())
        .unwrap();
    assert_eq!(store.root_ids("sandbox").unwrap(), vec![kept.id.clone()]);
    held.remove(&kept.id).unwrap();
    drop(held);
    drop(store);

    let service = cairn_store::Store::open_per_operation(tmp.path().join("store")).unwrap();
    let manager = SandboxManager::new(&service, Launcher::current_exe().unwrap())
        .ephemeral_kept_by_store_lock();
    let sb = manager.create("busybox:fixture", ephemeral).unwrap();
    assert_eq!(service.root_ids("sandbox").unwrap(), vec![sb.id.clone()]);
    manager.remove(&sb.id).unwrap();
    assert_eq!(service.root_ids("sandbox").unwrap(), Vec::<String>::new());
}

/// A sandbox of one organization is not another's: get, exec, commit and
/// remove refuse it, listings hide it; names and ids are never paths.
fn organizations_and_names_are_boundaries(_: &()) {
    use cairn_sandbox::manager::ManagerError;
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let launcher = Launcher::current_exe().unwrap();
    let acme = SandboxManager::new(&store, launcher.clone()).for_organization("acme");
    let evil = SandboxManager::new(&store, launcher.clone()).for_organization("evil");
    let upper = SandboxManager::new(&store, launcher.clone()).for_organization("ACME");
    let opts = CreateOptions {
        name: Some("dev".into()),
        ..CreateOptions::default()
    };
    let sb = acme.create("busybox:fixture", opts).unwrap();
    assert_eq!(sb.organization.as_deref(), Some("acme"));
    for other in [&evil, &upper] {
        assert!(matches!(
            other.get(&sb.id),
            Err(ManagerError::OtherOrganization { .. })
        ));
        assert!(
            other.get("dev").is_err(),
            "a name reached another org's sandbox"
        );
        assert!(other.get(&sb.id[..6]).is_err());
        match other.exec(&sb.id, ExecOptions::default()) {
            Err(err) => assert!(err.is_bad_input(), "{err}"),
            Ok(_) => panic!("exec across organizations"),
        }
        assert!(other
            .commit(&sb.id, "localhost/stolen:1", Compression::Gzip)
            .is_err());
        assert!(matches!(
            other.remove(&sb.id),
            Err(ManagerError::OtherOrganization { .. })
        ));
        assert!(other.list().unwrap().is_empty());
    }
    // Another organization may use the same sandbox name for its own.
    let opts = CreateOptions {
        name: Some("dev".into()),
        ..CreateOptions::default()
    };
    let theirs = evil.create("busybox:fixture", opts).unwrap();
    assert_eq!(capture(&acme, "dev", &["true"]).0, 0);
    for bad in ["..", "/tmp", ".", "", "../layers"] {
        assert!(
            matches!(acme.remove(bad), Err(ManagerError::BadName { .. })),
            "{bad:?}"
        );
    }
    assert!(store
        .layout()
        .sandboxes()
        .join(&sb.id)
        .join("sandbox.json")
        .is_file());
    acme.remove("dev").unwrap();
    evil.remove("dev").unwrap();
    assert!(!store.layout().sandboxes().join(&theirs.id).exists());
}

/// The stdio of a run whose output goes to `path`.
fn to_file(path: &std::path::Path) -> RunStdio {
    RunStdio {
        stdin: Some(Stdio::null()),
        stdout: Some(std::fs::File::create(path).unwrap().into()),
        stderr: None,
        ..RunStdio::default()
    }
}

fn is_running(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A helper started before its sandbox (`Launcher::start_early`, as `cairn
/// run` does: forked, unshared and mapped while the sandbox is created)
/// runs the command with the manager's ID mapping and the sandbox's
/// network, as a helper started at the exec does, and no second helper is
/// forked. One dropped unused (a create that failed after it started) is
/// killed and reaped and leaves no sandbox dir; one of another mapping is
/// not used.
fn early_helpers_map_and_clean_up(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let launcher = Launcher::current_exe().unwrap();
    let manager = SandboxManager::new(&store, launcher.clone()).ephemeral_kept_by_store_lock();
    let mapping = manager.id_mapping().clone();
    let sandboxes = || match std::fs::read_dir(store.layout().sandboxes()) {
        Ok(entries) => entries.count(),
        Err(_) => 0,
    };

    // A create that fails after the early start: nothing is left.
    let early = launcher
        .start_early(&mapping, to_file(&out))
        .expect("a single-threaded caller forks its helper early");
    let pid = early.pid().unwrap();
    assert!(is_running(pid));
    let ephemeral = CreateOptions {
        ephemeral: true,
        ..CreateOptions::default()
    };
    assert!(manager.create("no-such:image", ephemeral.clone()).is_err());
    drop(early);
    assert!(!is_running(pid), "the early helper {pid} outlived its drop");
    assert_eq!(sandboxes(), 0);

    let script = r#"cat /proc/self/uid_map /proc/self/gid_map; echo --;
                    awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }' /proc/net/dev | sort"#;
    let argv = || Argv::Direct(["sh", "-c", script].map(String::from).to_vec());
    for network in [cairn_sandbox::Network::Host, cairn_sandbox::Network::None] {
        let opts = CreateOptions {
            network,
            ..ephemeral.clone()
        };
        let sb = manager.create("busybox:fixture", opts).unwrap();
        let (code, usual) = capture(&manager, &sb.id, &["sh", "-c", script]);
        assert_eq!(code, 0);
        let early = launcher.start_early(&mapping, to_file(&out)).unwrap();
        let forks = cairn_sandbox::spawn::forked_helpers();
        let opts = ExecOptions {
            argv: argv(),
            ..ExecOptions::default()
        };
        let outcome = manager.exec_with(&sb.id, opts, Some(early)).unwrap();
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(
            cairn_sandbox::spawn::forked_helpers(),
            forks,
            "a second helper"
        );
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, usual, "{network:?}");
        let (maps, links) = got.split_once("--\n").unwrap();
        if let Some(range) = mapping.map.uids.iter().find(|r| r.len > 1) {
            // The subordinate range (newuidmap's, rootless) is in place.
            let want = [range.container, range.host, range.len].map(|n| n.to_string());
            let found = maps
                .lines()
                .any(|l| l.split_whitespace().eq(want.iter().map(String::as_str)));
            assert!(found, "{range:?} not in {maps}");
        }
        if network == cairn_sandbox::Network::None {
            assert_eq!(links, "lo\n");
        } else {
            assert_ne!(links, "lo\n", "the host's network has more than lo");
        }
        manager.remove(&sb.id).unwrap();
    }
    assert_eq!(sandboxes(), 0);

    if nix::unistd::geteuid().is_root() {
        // Started for another mapping: dropped, and the run starts its own.
        let other = cairn_sandbox::idmap::IdMapping::host_identity();
        assert_ne!(other, mapping);
        let sb = manager.create("busybox:fixture", ephemeral).unwrap();
        let early = launcher.start_early(&other, to_file(&out)).unwrap();
        let pid = early.pid().unwrap();
        let opts = ExecOptions {
            argv: argv(),
            stdio: to_file(&out),
            ..ExecOptions::default()
        };
        let forks = cairn_sandbox::spawn::forked_helpers();
        let outcome = manager.exec_with(&sb.id, opts, Some(early)).unwrap();
        assert_eq!(outcome.exit_code, 0);
        assert!(!is_running(pid));
        assert_eq!(cairn_sandbox::spawn::forked_helpers(), forks + 1);
        manager.remove(&sb.id).unwrap();
    }
}

fn main() {
    init_hook();
    cairn_testsupport::run_suite(
        (),
        cairn_testsupport::test_cases![();
            lifecycle,
            limits_apply_or_say_why_not,
            limits_land_in_a_delegated_cgroup,
            dead_owners_sandboxes_are_removed,
            organizations_and_names_are_boundaries,
            run_rm_leaves_nothing_and_lost_removals_are_swept,
            ephemeral_roots_follow_the_store_lock,
            early_helpers_map_and_clean_up,
        ],
    )
}
