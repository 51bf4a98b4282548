//! Two runners — two `cairn` processes with two stores — sharing snapshot
//! records in one real PostgreSQL and blobs in one real registry: a
//! snapshot created on A is listed, read and started on B (pulled into B's
//! store); deleting it on A refuses it on B; concurrent creates of one
//! name from A and B give one snapshot; a builder frozen on A is reported
//! build_failed on B once its lease expires; each runner shows its own
//! state of a snapshot next to the shared one, and drops its copy of a
//! snapshot deleted on the other the next time it touches it. As root and (the first two)
//! as the unprivileged test user.
//!
//! harness = false: `main` owns the two servers and stops them at the end.

mod cli_env;

use cairn_testsupport::postgres_server::PostgresServer;
use cairn_testsupport::registry_server::RegistryServer;
use cli_env::*;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The shared engines of the runners; each test takes its own database.
struct Servers {
    pg: PostgresServer,
    registry: RegistryServer,
}

/// A runner: its own store, the shared database and registry.
struct Runner {
    env: Env,
    db: String,
    regions: String,
}

impl Runner {
    fn new(f: &Servers, user: Option<&'static str>, db: &str) -> Runner {
        let env = Env::new(user);
        let regions = write_regions(&env, Some("eu"), &[("eu", f.registry.host())]);
        Runner {
            env,
            db: db.to_string(),
            regions: regions.display().to_string(),
        }
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec![
            "snapshot",
            "--snapshot-db",
            &self.db,
            "--regions-file",
            &self.regions,
        ];
        all.extend_from_slice(args);
        all
    }

    fn snapshot(&self, args: &[&str]) -> Output {
        self.env.cairn(&self.args(args))
    }

    /// `cairn snapshot ARGS` started, not awaited, in its own process group.
    fn spawn(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Child {
        use std::os::unix::process::CommandExt;
        let cairn = env!("CARGO_BIN_EXE_cairn");
        let mut cmd = match self.env.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", cairn]);
                c
            }
            None => Command::new(cairn),
        };
        cmd.args(self.args(args))
            .env("CAIRN_STORE", &self.env.store)
            .envs(extra_env.iter().copied())
            .current_dir("/tmp")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd.spawn().unwrap()
    }

    fn get(&self, key: &str) -> serde_json::Value {
        let out = self.snapshot(&["get", key, "--format", "json"]);
        serde_json::from_str(&ok(&out, "snapshot get")).unwrap()
    }
}

/// Poll until `check` holds; a hang guard, not a timing assertion.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn database(f: &Servers, name: &str, user: Option<&str>) -> String {
    f.pg.create_database(&format!("{name}_{}", user.unwrap_or("root")))
}

fn a_snapshot_made_on_one_runner_is_used_and_deleted_from_another(f: &Servers) {
    for user in users() {
        let url = database(f, "share", user);
        let (a, b) = (Runner::new(f, user, &url), Runner::new(f, user, &url));
        ok(
            &a.snapshot(&["create", "app:1.0.0", "--image", "busybox:fixture"]),
            "create on A",
        );
        // B lists and reads it: the record is shared, the image at the registry.
        let list: serde_json::Value =
            serde_json::from_str(&ok(&b.snapshot(&["list", "--format", "json"]), "list on B"))
                .unwrap();
        assert_eq!(list["total"], 1, "{list}");
        assert_eq!(list["items"][0]["name"], "app:1.0.0");
        let on_b = b.get("app:1.0.0");
        assert_eq!(on_b["state"], "active");
        assert!(
            on_b["imageName"]
                .as_str()
                .unwrap()
                .starts_with(&f.registry.host()),
            "{on_b}"
        );
        assert!(on_b["lastUsedAt"].is_null());
        let images_b = ok(&b.env.cairn(&["images"]), "images on B");
        assert!(!images_b.contains("snapshots/default/app"), "{images_b}");

        // A sandbox on B pulls the image into B's store first.
        let out = b.snapshot(&["sandbox", "app:1.0.0"]);
        let sandbox = ok(&out, "sandbox on B")
            .trim()
            .lines()
            .last()
            .unwrap()
            .to_string();
        let images_b = ok(&b.env.cairn(&["images"]), "images on B");
        assert!(images_b.contains("snapshots/default/app"), "{images_b}");
        let runners = f.pg.psql(
            &format!("share_{}", user.unwrap_or("root")),
            "SELECT runner || ' ' || state FROM cairn_snapshot_runners ORDER BY runner",
        );
        let b_store = b.env.store.display().to_string();
        let a_store = a.env.store.display().to_string();
        assert!(
            runners
                .lines()
                .any(|l| l.ends_with(&format!("{b_store} active"))),
            "B's copy recorded active: {runners}"
        );
        assert!(
            runners
                .lines()
                .any(|l| l.ends_with(&format!("{a_store} active"))),
            "A's copy recorded active: {runners}"
        );
        // Last use is shared: A sees B's.
        assert!(a.get("app:1.0.0")["lastUsedAt"].is_string());

        // Deleted on A: B refuses new sandboxes, and its running one stays.
        ok(&a.snapshot(&["delete", "app:1.0.0"]), "delete on A");
        let out = b.snapshot(&["sandbox", "app:1.0.0"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("not found"),
            "{}",
            text(&out.stderr)
        );
        let out = b.env.cairn(&["sandbox", "exec", &sandbox, "--", "true"]);
        ok(&out, "the sandbox started before the delete still runs");
        ok(&b.env.cairn(&["sandbox", "rm", &sandbox]), "sandbox rm");
    }
}

fn concurrent_creates_of_one_name_from_two_runners_make_one(f: &Servers) {
    for user in users() {
        let url = database(f, "race", user);
        let (a, b) = (Runner::new(f, user, &url), Runner::new(f, user, &url));
        for name in ["race:1", "race:2"] {
            let args = ["create", name, "--image", "busybox:fixture"];
            let (ca, cb) = (a.spawn(&args, &[]), b.spawn(&args, &[]));
            let outs = [
                ca.wait_with_output().unwrap(),
                cb.wait_with_output().unwrap(),
            ];
            let won: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
            assert_eq!(won.len(), 1, "exactly one create of {name} wins");
            let lost = outs.iter().find(|o| !o.status.success()).unwrap();
            assert_eq!(lost.status.code(), Some(2), "{}", text(&lost.stderr));
            assert!(
                text(&lost.stderr).contains("already exists"),
                "{}",
                text(&lost.stderr)
            );
            assert_eq!(a.get(name)["state"], "active");
        }
        let list: serde_json::Value =
            serde_json::from_str(&ok(&b.snapshot(&["list", "--format", "json"]), "list")).unwrap();
        assert_eq!(list["total"], 2, "{list}");
    }
}

fn a_frozen_builder_is_reported_build_failed_by_another_runner(f: &Servers) {
    let url = database(f, "lease", None);
    let (a, b) = (Runner::new(f, None, &url), Runner::new(f, None, &url));
    let ctx = a.env.context_dir(
        "slow",
        &[("Dockerfile", "FROM busybox:fixture\nRUN sleep 20\n")],
    );
    let df = ctx.join("Dockerfile");
    let mut builder = a.spawn(
        &["create", "slow:1", "-f", df.to_str().unwrap()],
        &[("CAIRN_SNAPSHOT_LEASE", "2s")],
    );
    eventually("B to see the build", || {
        let out = b.snapshot(&["get", "slow:1", "--format", "json"]);
        text(&out.stdout).contains("\"building\"")
    });
    // Freeze A's builder: alive, but no longer renewing its lease.
    let group = -(builder.id() as i32);
    // SAFETY: signals to the process group this test started.
    assert_eq!(unsafe { libc::kill(group, libc::SIGSTOP) }, 0);
    eventually("the lease to expire", || {
        b.get("slow:1")["state"] == "build_failed"
    });
    assert!(
        builder.try_wait().unwrap().is_none(),
        "the builder still exists"
    );
    let out = b.snapshot(&["sandbox", "slow:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(group, libc::SIGKILL) }, 0);
    builder.wait().unwrap();
}

/// The manifest digest B's store tags `name` with, if any.
fn tagged(env: &Env, name: &str) -> Option<String> {
    let out = env.cairn(&["images", "--format", "json"]);
    let images: serde_json::Value = serde_json::from_str(&ok(&out, "images")).unwrap();
    images.as_array().unwrap().iter().find_map(|i| {
        let names = i["names"].as_array()?;
        names
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains(name)))
            .then(|| i["digest"].as_str().unwrap().to_string())
    })
}

fn a_runner_shows_its_state_and_drops_copies_deleted_elsewhere(f: &Servers) {
    for user in users() {
        let url = database(f, "copies", user);
        let (a, b) = (Runner::new(f, user, &url), Runner::new(f, user, &url));
        let ctx = a.env.context_dir(
            "own",
            &[("Dockerfile", "FROM busybox:fixture\nRUN echo own > /own\n")],
        );
        let df = ctx.join("Dockerfile");
        ok(
            &a.snapshot(&["create", "own:1", "-f", df.to_str().unwrap()]),
            "create own on A",
        );
        ok(
            &a.snapshot(&["create", "keep:1", "--image", "busybox:fixture"]),
            "create keep on A",
        );
        // The shared state is active everywhere; only A holds the image.
        assert_eq!(a.get("own:1")["localState"], "active");
        let on_b = b.get("own:1");
        assert_eq!(on_b["state"], "active");
        assert!(on_b["localState"].is_null(), "{on_b}");
        assert!(on_b["runner"]
            .as_str()
            .unwrap()
            .contains(&b.env.store.display().to_string()));
        let table = ok(&b.snapshot(&["get", "own:1"]), "get as a table");
        assert!(table.lines().next().unwrap().contains("LOCAL"), "{table}");

        for name in ["own:1", "keep:1"] {
            let out = b.snapshot(&["sandbox", name]);
            let id = ok(&out, "sandbox on B")
                .trim()
                .lines()
                .last()
                .unwrap()
                .to_string();
            ok(&b.env.cairn(&["sandbox", "rm", &id]), "sandbox rm");
        }
        assert_eq!(b.get("own:1")["localState"], "active");
        let list: serde_json::Value =
            serde_json::from_str(&ok(&b.snapshot(&["list", "--format", "json"]), "list on B"))
                .unwrap();
        for item in list["items"].as_array().unwrap() {
            assert_eq!(item["localState"], "active", "{list}");
        }
        let own = tagged(&b.env, "snapshots/default/own:1").expect("B holds own:1");
        assert!(tagged(&b.env, "snapshots/default/keep:1").is_some());

        // Deleted on A: B's next `get` of it drops B's tag and GC root, so
        // B's prune frees the image (nothing else of B's holds it).
        ok(&a.snapshot(&["delete", "own:1"]), "delete own on A");
        let out = b.snapshot(&["get", "own:1"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(tagged(&b.env, "snapshots/default/own:1").is_none());
        assert!(tagged(&b.env, "snapshots/default/keep:1").is_some());
        ok(&b.env.cairn(&["prune"]), "prune on B");
        let blob = b
            .env
            .store
            .join("blobs/sha256")
            .join(own.trim_start_matches("sha256:"));
        assert!(
            !blob.exists(),
            "B's copy of a deleted snapshot is still rooted"
        );

        // Deleted on A: B's next `list` drops it too.
        ok(&a.snapshot(&["delete", "keep:1"]), "delete keep on A");
        let list: serde_json::Value =
            serde_json::from_str(&ok(&b.snapshot(&["list", "--format", "json"]), "list on B"))
                .unwrap();
        assert_eq!(list["total"], 0, "{list}");
        assert!(tagged(&b.env, "snapshots/default/keep:1").is_none());
    }
}

type Test = (&'static str, fn(&Servers));

const TESTS: &[Test] = &[
    (
        "a_snapshot_made_on_one_runner_is_used_and_deleted_from_another",
        a_snapshot_made_on_one_runner_is_used_and_deleted_from_another,
    ),
    (
        "concurrent_creates_of_one_name_from_two_runners_make_one",
        concurrent_creates_of_one_name_from_two_runners_make_one,
    ),
    (
        "a_runner_shows_its_state_and_drops_copies_deleted_elsewhere",
        a_runner_shows_its_state_and_drops_copies_deleted_elsewhere,
    ),
    (
        "a_frozen_builder_is_reported_build_failed_by_another_runner",
        a_frozen_builder_is_reported_build_failed_by_another_runner,
    ),
];

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let servers = Servers {
        pg: PostgresServer::start(),
        registry: RegistryServer::start(),
    };
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in TESTS {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&servers))).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        match ok {
            true => passed += 1,
            false => failed += 1,
        }
    }
    drop(servers);
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed > 0 { 1 } else { 0 })
}
