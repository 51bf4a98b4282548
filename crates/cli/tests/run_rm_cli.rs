//! `run --rm` leaves nothing behind: the sandbox is gone from listings
//! when the command returns, its dir is reclaimed right after (a detached
//! reclaimer, `crates/sandbox/src/manager/trash.rs`), and removals cut
//! short (a killed `run --rm`, a crash between the move and the reclaim)
//! are reclaimed by the next sweep or GC. Root and rootless.

mod cli_env;

use cli_env::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Entries of the store's `tmp/` that are removed sandboxes' dirs.
fn trash(store: &Path) -> Vec<String> {
    std::fs::read_dir(store.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("trash-sandbox-"))
        .collect()
}

fn sandbox_dirs(store: &Path) -> usize {
    std::fs::read_dir(store.join("sandboxes")).unwrap().count()
}

/// Wait (bounded) until no removed sandbox's dir is left in `tmp/`.
fn wait_for_reclaim(store: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !trash(store).is_empty() {
        assert!(
            Instant::now() < deadline,
            "never reclaimed: {:?}",
            trash(store)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The GC roots the store holds for sandboxes. Opens the store as this
/// (root) process: call it last, when the test user is done with it.
fn sandbox_roots(store: &Path) -> Vec<String> {
    cairn_store::Store::open(store)
        .unwrap()
        .root_ids("sandbox")
        .unwrap()
}

fn ls_json(env: &Env) -> String {
    text(&env.cairn(&["sandbox", "ls", "--format", "json"]).stdout)
        .trim()
        .to_string()
}

#[test]
fn run_rm_leaves_no_dir_no_trash_and_no_root() {
    for user in users() {
        let env = Env::new(user);
        // Output and exit codes are the command's, as before.
        let out = env.cairn(&[
            "run",
            "--rm",
            "busybox:fixture",
            "sh",
            "-c",
            "echo hi; echo x > /f",
        ]);
        assert_eq!(ok(&out, "run --rm"), "hi\n");
        // Gone from the store's sandboxes when `run --rm` returns.
        assert_eq!(sandbox_dirs(&env.store), 0);
        assert_eq!(ls_json(&env), "[]");
        for (args, code) in [
            (&["sh", "-c", "exit 3"][..], 3),
            (&["no-such-command"][..], 127),
            (&["/etc"][..], 126),
            (&["sh", "-c", "kill -9 $$"][..], 137),
        ] {
            let mut all = vec!["run", "--rm", "busybox:fixture"];
            all.extend_from_slice(args);
            let out = env.cairn(&all);
            assert_eq!(
                out.status.code(),
                Some(code),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert_eq!(sandbox_dirs(&env.store), 0, "{args:?}");
        }
        // `$(cairn run --rm ...)` ends with the CLI: the reclaimer holds
        // none of its descriptors (Command::output waits for EOF).
        let out = env.cairn(&["run", "--rm", "busybox:fixture", "echo", "done"]);
        assert_eq!(ok(&out, "run --rm"), "done\n");
        // Its bytes are reclaimed right after, and nothing stays.
        wait_for_reclaim(&env.store);
        assert_eq!(sandbox_dirs(&env.store), 0);
        let out = env.cairn(&["fsck"]);
        assert!(out.status.success(), "{}", text(&out.stdout));
        assert_eq!(sandbox_roots(&env.store), Vec::<String>::new());
    }
}

#[test]
fn removals_cut_short_are_reclaimed_by_the_sweep_and_by_gc() {
    for user in users() {
        let env = Env::new(user);
        // Two sandboxes that ran once (an overlay work dir, mode 000 and
        // container root's, is what needs the user namespace to delete).
        let mut ids = Vec::new();
        for _ in 0..2 {
            let out = env.cairn(&["sandbox", "create", "busybox:fixture"]);
            let id = ok(&out, "create").lines().last().unwrap().to_string();
            let out = env.cairn(&["sandbox", "exec", &id, "--", "sh", "-c", "echo x > /f"]);
            ok(&out, "exec");
            ids.push(id);
        }
        // A removal that crashed after moving the dirs aside: the record
        // gone with the dir, the dir in tmp/, the GC root still there.
        for id in &ids {
            let dir = env.store.join("sandboxes").join(id);
            let aside = env.store.join("tmp").join(format!("trash-sandbox-{id}"));
            std::fs::rename(&dir, &aside).unwrap();
            std::fs::remove_file(aside.join("sandbox.json")).unwrap();
        }
        assert_eq!(trash(&env.store).len(), 2);
        // Trash is not corruption.
        let out = env.cairn(&["fsck"]);
        assert!(out.status.success(), "{}", text(&out.stdout));
        // The next listing hands it to a reclaimer and drops the roots of
        // the gone.
        assert_eq!(ls_json(&env), "[]");
        wait_for_reclaim(&env.store);
        // GC clears a leftover too (one made after that listing).
        let out = env.cairn(&["sandbox", "create", "busybox:fixture"]);
        let id = ok(&out, "create").lines().last().unwrap().to_string();
        ok(&env.cairn(&["sandbox", "exec", &id, "--", "true"]), "exec");
        let aside = env.store.join("tmp").join(format!("trash-sandbox-{id}"));
        std::fs::rename(env.store.join("sandboxes").join(&id), &aside).unwrap();
        let out = env.cairn(&["prune"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(trash(&env.store), Vec::<String>::new());
        assert_eq!(sandbox_dirs(&env.store), 0);
        assert_eq!(sandbox_roots(&env.store), Vec::<String>::new());
    }
}

#[test]
fn a_killed_run_rm_is_removed_and_reclaimed_by_the_next_listing() {
    for user in users() {
        let env = Env::new(user);
        let cairn = env!("CARGO_BIN_EXE_cairn");
        let mut cmd = match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", cairn]);
                c
            }
            None => Command::new(cairn),
        };
        let mut child = cmd
            .args([
                "run",
                "--rm",
                "busybox:fixture",
                "sh",
                "-c",
                "echo up; exec sleep 4323",
            ])
            .env("CAIRN_STORE", &env.store)
            .current_dir("/tmp")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Up once the command printed: the sandbox exists and runs.
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert_eq!(line, "up\n");
        let owner = std::fs::read_dir(env.store.join("sandboxes"))
            .unwrap()
            .flatten()
            .find_map(|e| {
                let bytes = std::fs::read(e.path().join("sandbox.json")).ok()?;
                let r: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
                r["owner"]["pid"].as_u64()
            })
            .expect("a running --rm sandbox has a record naming its owner");
        let st = Command::new("kill")
            .args(["-9", &owner.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let _ = child.wait();
        assert_eq!(sandbox_dirs(&env.store), 1);
        // The listing removes it (its owner is gone)...
        assert_eq!(ls_json(&env), "[]");
        assert_eq!(sandbox_dirs(&env.store), 0);
        // ...and its dir is reclaimed; nothing stays.
        wait_for_reclaim(&env.store);
        let out = env.cairn(&["fsck"]);
        assert!(out.status.success(), "{}", text(&out.stdout));
        assert_eq!(sandbox_roots(&env.store), Vec::<String>::new());
    }
}

/// `cairn` as the test's user, with the test's store, output piped.
fn spawn_cairn(env: &Env, args: &[&str]) -> std::process::Child {
    let cairn = env!("CARGO_BIN_EXE_cairn");
    let mut cmd = match env.user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", cairn]);
            c
        }
        None => Command::new(cairn),
    };
    cmd.args(args)
        .env("CAIRN_STORE", &env.store)
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A `run --rm` sandbox holds no GC root: the CLI's shared `store.lock`
/// keeps GC out while it runs. A `prune` started while it runs, with its
/// image untagged (only the sandbox still uses the layers), waits for it,
/// and the command sees every file of its image to the end; the prune
/// then frees the layers.
#[test]
fn a_prune_during_a_run_rm_waits_and_keeps_its_layers() {
    // Lines `ls -R` prints for the image's tree (fewer when its layer
    // files were deleted under the overlay).
    let listing = "ls -R /bin /etc /usr 2>&1 | wc -l";
    for user in users() {
        let env = Env::new(user);
        let out = env.cairn(&["run", "--rm", "busybox:fixture", "sh", "-c", listing]);
        let whole = ok(&out, "run --rm");
        let mut run = spawn_cairn(
            &env,
            &[
                "run",
                "--rm",
                "busybox:fixture",
                "sh",
                "-c",
                &format!("echo up; sleep 2; {listing}"),
            ],
        );
        let mut stdout = std::io::BufReader::new(run.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert_eq!(line, "up\n");
        // Only the running sandbox uses the image now, and it has no root.
        ok(&env.cairn(&["rmi", "busybox:fixture"]), "rmi");
        assert_eq!(sandbox_dirs(&env.store), 1);
        let prune = spawn_cairn(&env, &["prune"]);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        assert!(run.wait().unwrap().success());
        assert_eq!(rest, whole, "the layers changed under the running command");
        let pruned = prune.wait_with_output().unwrap();
        assert!(pruned.status.success(), "{}", text(&pruned.stderr));
        // The prune did run after it: the layers are gone now.
        let layers: Vec<_> = std::fs::read_dir(env.store.join("layers"))
            .unwrap()
            .flatten()
            .collect();
        assert!(layers.is_empty(), "{layers:?}");
        assert_eq!(sandbox_dirs(&env.store), 0);
        assert_eq!(sandbox_roots(&env.store), Vec::<String>::new());
    }
}

/// `cairn` stays a position-independent executable (`ET_DYN`): it runs as
/// root and parses hostile archives and registry replies with C libraries
/// linked in, so its own image keeps ASLR. Linking it `-no-pie` saves ~0.3
/// ms per start and was measured and refused (docs/performance.md, stop 19).
/// The binary must also start a sandbox root and rootless (the helper is a
/// fork of it, PID 1 shares the helper's memory).
#[test]
fn the_cli_is_a_pie_that_runs_for_every_user() {
    let elf = std::fs::read(env!("CARGO_BIN_EXE_cairn")).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let e_type = u16::from_le_bytes([elf[16], elf[17]]);
    assert_eq!(e_type, 3, "cairn is not a PIE (ET_DYN); ET_EXEC is 2");
    for user in users() {
        let env = Env::new(user);
        let out = env.cairn(&["run", "--rm", "busybox:fixture", "sh", "-c", "echo up"]);
        assert_eq!(ok(&out, "run --rm"), "up\n");
        assert_eq!(sandbox_dirs(&env.store), 0);
    }
}

/// A plain `run --rm` forks its helper before it opens the store
/// (`sandbox.helper_early`: unshared and mapped while the sandbox is
/// created). Its command sees the same ID maps and network as with a
/// helper exec'd at the run (`CAIRN_SANDBOX_SPAWN=exec`, no early start):
/// rootless, the subordinate range written by newuidmap/newgidmap. A run
/// whose create fails after the early start leaves no sandbox dir.
#[test]
fn an_early_helper_maps_the_run_as_a_late_one_does() {
    let script = "cat /proc/self/uid_map /proc/self/gid_map; echo --; \
                  awk -F: 'NR > 2 { gsub(/ /, \"\", $1); print $1 }' /proc/net/dev | sort";
    for user in users() {
        let env = Env::new(user);
        let cairn = env!("CARGO_BIN_EXE_cairn");
        for network in ["host", "none"] {
            let run = |spawn: &str| {
                env.command(
                    "env",
                    &[
                        "CAIRN_TRACE_TIMINGS=1",
                        &format!("CAIRN_SANDBOX_SPAWN={spawn}"),
                        cairn,
                        "run",
                        "--rm",
                        "--network",
                        network,
                        "busybox:fixture",
                        "sh",
                        "-c",
                        script,
                    ],
                )
            };
            let (early, late) = (run("fork"), run("exec"));
            let early_err = text(&early.stderr);
            assert!(early_err.contains("sandbox.helper_early"), "{early_err}");
            assert!(!text(&late.stderr).contains("sandbox.helper_early"));
            let got = ok(&early, "run --rm, early helper");
            assert_eq!(got, ok(&late, "run --rm, exec'd helper"), "{network}");
            let (maps, links) = got.split_once("--\n").unwrap();
            if network == "none" {
                assert_eq!(links, "lo\n");
            }
            if let Some(u) = user {
                let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
                let start = subuid
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{u}:")))
                    .and_then(|rest| rest.split(':').next())
                    .unwrap();
                let found = maps.lines().any(|l| {
                    let fields: Vec<&str> = l.split_whitespace().collect();
                    fields.len() == 3 && fields[0] == "1" && fields[1] == start
                });
                assert!(found, "{start} not mapped: {maps}");
            }
            assert_eq!(sandbox_dirs(&env.store), 0);
        }
        let out = env.cairn(&["run", "--rm", "no-such:image", "true"]);
        assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
        assert_eq!(sandbox_dirs(&env.store), 0);
    }
}

/// Rootless, a map tool that refuses (here a stand-in `newuidmap` first in
/// PATH) fails the run with the tool's own message, whether the early
/// helper ran the tools itself or the caller did (`CAIRN_SANDBOX_SPAWN=exec`),
/// and leaves no sandbox dir. (The early helper reports before it unshares:
/// the handshake once ate the report's first byte and printed raw JSON.)
#[test]
fn a_refusing_map_tool_fails_the_run_with_its_message() {
    let Some(user) = users().into_iter().flatten().next() else {
        return; // rootless only: root writes its maps itself
    };
    let env = Env::new(Some(user));
    // The image's layers are extracted first (that task's helper is mapped
    // by this process's tools): the failing runs then fail at the exec.
    ok(
        &env.cairn(&["run", "--rm", "busybox:fixture", "true"]),
        "warm-up run",
    );
    let bin = env.subdir("fakebin");
    let tool = bin.join("newuidmap");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho 'newuidmap: refused by the test' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("PATH={}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    for spawn in ["fork", "exec"] {
        let out = env.command(
            "env",
            &[
                &path,
                &format!("CAIRN_SANDBOX_SPAWN={spawn}"),
                env!("CARGO_BIN_EXE_cairn"),
                "run",
                "--rm",
                "busybox:fixture",
                "true",
            ],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{spawn}: {err}");
        assert!(
            err.contains("newuidmap: refused by the test"),
            "{spawn}: {err}"
        );
        assert!(!err.contains("\"Setup\""), "{spawn}: raw report: {err}");
        assert_eq!(sandbox_dirs(&env.store), 0, "{spawn}");
    }
}
