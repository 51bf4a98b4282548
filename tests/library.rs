//! The facade as a service links it: per-build cancel tokens, dropped
//! async builds, strict resources, GC while the handle is open. Runs as
//! root and again as the unprivileged test user (harness = false: `main`
//! calls `cairn::init` first).

use cairn::{BuildRequest, Cairn, CairnOptions, CancelToken, ErrorKind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn open(strict: bool) -> (tempfile::TempDir, Cairn) {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(cairn_testsupport::store_with_busybox(dir.path()));
    let opts = CairnOptions::new(dir.path().join("store")).with_strict_resources(strict);
    let cairn = Cairn::open(opts).expect("open");
    (dir, cairn)
}

fn sleeping(arg: &str) -> bool {
    let want = format!("sleep\0{arg}\0").into_bytes();
    std::fs::read_dir("/proc").is_ok_and(|d| {
        d.flatten()
            .any(|e| std::fs::read(e.path().join("cmdline")).ok() == Some(want.clone()))
    })
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cancelled build is the only one cancelled: the next build (same
/// handle, new token) runs; nothing of the cancelled one is tagged.
fn cancel_tokens_belong_to_one_build(_: &()) {
    let (_dir, cairn) = open(false);
    let req = BuildRequest::text("FROM busybox:fixture\nRUN sleep 3520\n").tag("localhost/c:1");
    let token = CancelToken::new();
    std::thread::scope(|s| {
        let build = s.spawn(|| cairn.build_with(&req, &token, &mut |_| {}));
        wait_for("the RUN", || sleeping("3520"));
        token.cancel();
        let err = build.join().expect("build thread").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    });
    assert!(!sleeping("3520"), "the RUN survived the cancel");
    assert!(
        cairn.store().resolve("localhost/c:1").is_err(),
        "tagged after cancel"
    );
    let next = BuildRequest::text("FROM busybox:fixture\nRUN echo again\n").tag("localhost/c:2");
    cairn.build(&next).expect("a later build is not refused");
}

/// Dropping an async build's future kills its RUN and tags nothing.
fn dropped_async_build_is_cancelled(_: &()) {
    let (_dir, cairn) = open(false);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let a = cairn.asynchronous();
        let req = BuildRequest::text("FROM busybox:fixture\nRUN sleep 3521\n").tag("localhost/d:1");
        let build = tokio::spawn(async move { a.build(req).await });
        while !sleeping("3521") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        build.abort(); // drops the future
    });
    wait_for("the RUN to die", || !sleeping("3521"));
    // The blocking half finishes once the RUN is gone; nothing was tagged.
    wait_for("the store to be free", || {
        std::process::Command::new("flock")
            .args(["-n", "-E", "9"])
            .arg(cairn.store().layout().lock())
            .arg("true")
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(cairn.store().resolve("localhost/d:1").is_err());
}

/// Between operations the open handle holds no store lock (another
/// process's `prune` can run), and an in-process GC runs while it is open.
fn gc_runs_while_the_handle_is_open(_: &()) {
    let (_dir, cairn) = open(false);
    cairn
        .build(&BuildRequest::text("FROM busybox:fixture\nRUN echo x > /x\n").tag("localhost/g:1"))
        .expect("build");
    let lock: PathBuf = cairn.store().layout().lock();
    let free = std::process::Command::new("flock")
        .args(["-n", "-E", "9"])
        .arg(&lock)
        .arg("true")
        .status()
        .expect("flock(1)");
    assert!(
        free.success(),
        "the open handle holds store.lock between operations"
    );
    cairn
        .store()
        .untag(&"localhost/g:1".parse().expect("ref"))
        .expect("untag");
    let report = cairn.gc(Some(0)).expect("gc with the handle open");
    assert!(report.layer_dirs_removed >= 1, "{report:?}");
    // The handle works on after GC.
    cairn
        .build(&BuildRequest::text("FROM busybox:fixture\nRUN echo y > /y\n").tag("localhost/g:2"))
        .expect("build after gc");
}

/// Snapshot resources become sandbox limits by default; with strict
/// resources a limit the machine cannot apply fails the call and leaves
/// no sandbox behind.
fn strict_resources_refuse_unapplied_limits(_: &()) {
    let (dir, lenient) = open(false);
    let ctx = tempfile::tempdir().expect("ctx");
    let req = cairn::SnapshotRequest::dockerfile("app:1", "FROM busybox:fixture\n", ctx.path());
    lenient
        .create_snapshot("acme", &req, &mut |_| {})
        .expect("snapshot");
    let sb = lenient
        .start_sandbox("acme", "app:1", &Default::default())
        .expect("lenient start");
    assert_eq!(
        sb.resources.cpu,
        Some(1.0),
        "the snapshot's cpu was not applied"
    );
    let unapplied = !sb.resources.not_applied.is_empty();
    lenient.remove_sandbox(&sb.id).expect("remove");

    let strict =
        Cairn::open(CairnOptions::new(dir.path().join("store")).with_strict_resources(true))
            .expect("open strict");
    match strict.start_sandbox("acme", "app:1", &Default::default()) {
        Ok(sb) => {
            assert!(
                !unapplied,
                "strict accepted unapplied limits: {:?}",
                sb.resources
            );
            strict.remove_sandbox(&sb.id).expect("remove");
        }
        Err(e) => {
            assert!(unapplied, "strict refused limits that apply: {e}");
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        }
    }
    assert!(
        strict.sandboxes().expect("list").is_empty(),
        "a refused sandbox was left"
    );
}

/// `with_snapshot_db` puts the records where the service says, not in the
/// store's `meta.db`: a second handle on another store sees them.
fn snapshot_records_follow_the_chosen_database(_: &()) {
    let records = tempfile::tempdir().expect("tempdir");
    let db = cairn::snapshot::SnapshotDb::Sqlite(records.path().join("records.db"));
    let (_a_dir, a) = open(false);
    let a = Cairn::open(a.options().clone().with_snapshot_db(db.clone())).expect("open a");
    let ctx = tempfile::tempdir().expect("ctx");
    let req = cairn::SnapshotRequest::dockerfile("shared:1", "FROM busybox:fixture\n", ctx.path());
    a.create_snapshot("acme", &req, &mut |_| {})
        .expect("create");
    assert!(records.path().join("records.db").exists());
    let (_b_dir, b) = open(false);
    let b = Cairn::open(b.options().clone().with_snapshot_db(db)).expect("open b");
    let seen = b.snapshot("acme", "shared:1").expect("b sees a's record");
    assert_eq!(seen.name, "shared:1");
}

/// The handle keeps its connection to the snapshot records across calls
/// (a pool) instead of connecting anew for each: the same server session
/// (its backend pid) serves every call, and it stays open between them.
fn the_handle_keeps_its_snapshot_connection_across_calls(_: &()) {
    let pg = cairn_testsupport::postgres_server::PostgresServer::start();
    let db = cairn::snapshot::SnapshotDb::parse(&pg.create_database("pool")).expect("url");
    let (_dir, c) = open(false);
    let c = Cairn::open(c.options().clone().with_snapshot_db(db)).expect("open");
    let sessions = || {
        pg.psql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE datname = 'pool' ORDER BY pid",
        )
    };
    let q = cairn::snapshot::repo::ListQuery::new("acme");
    assert_eq!(c.snapshots(&q).expect("list").total, 0);
    let first = sessions();
    assert_eq!(first.lines().count(), 1, "one pooled session: {first}");
    for _ in 0..3 {
        c.snapshots(&q).expect("list");
        let err = c.snapshot("acme", "nope").unwrap_err();
        assert_eq!(err.kind(), cairn::ErrorKind::NotFound);
    }
    assert_eq!(sessions(), first, "every call used the same session");
    drop(c);
}

fn main() {
    cairn::init();
    cairn_testsupport::run_suite(
        (),
        cairn_testsupport::test_cases![();
            cancel_tokens_belong_to_one_build,
            dropped_async_build_is_cancelled,
            gc_runs_while_the_handle_is_open,
            strict_resources_refuse_unapplied_limits,
            snapshot_records_follow_the_chosen_database,
            the_handle_keeps_its_snapshot_connection_across_calls,
        ],
    )
}
