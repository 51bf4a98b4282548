//! One repository test suite, run against both backends: the embedded
//! SQLite file and a real PostgreSQL server (initdb + pg_ctl in a temp dir,
//! as the unprivileged test user when run as root). The same tests, the
//! same assertions; a fresh database per test.
//!
//! harness = false: `main` owns the PostgreSQL server and stops it at the
//! end, and re-runs this binary as a dying or frozen builder process.

use cairn_snapshot::{
    ListQuery, NewSnapshot, Resources, Snapshot, SnapshotDb, SnapshotError, SnapshotRepo,
    SnapshotState,
};
use cairn_testsupport::postgres_server::PostgresServer;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Which backend a run uses, and where its fresh databases come from.
struct Db {
    tmp: tempfile::TempDir,
    server: Option<PostgresServer>,
    next: AtomicU32,
}

impl Db {
    fn name(&self) -> &'static str {
        match self.server {
            Some(_) => "postgres",
            None => "sqlite",
        }
    }

    /// A new, empty database.
    fn fresh_db(&self) -> SnapshotDb {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        match &self.server {
            Some(server) => SnapshotDb::parse(&server.create_database(&format!("t{n}"))).unwrap(),
            None => SnapshotDb::Sqlite(self.tmp.path().join(format!("t{n}.db"))),
        }
    }

    /// A connection to `db` (a second one is what another runner has).
    fn open(&self, db: &SnapshotDb) -> SnapshotRepo {
        SnapshotRepo::connect(db, Path::new("/nonexistent/meta.db")).unwrap()
    }

    /// A repository over a new, empty database.
    fn fresh(&self) -> SnapshotRepo {
        self.open(&self.fresh_db())
    }

    /// Set the schema version of `db` as a later Cairn would.
    fn set_schema_version(&self, db: &SnapshotDb, version: i64) {
        let sql =
            format!("UPDATE cairn_schema SET version = {version} WHERE component = 'snapshots'");
        match db {
            SnapshotDb::Postgres(url) => {
                let name = url.rsplit('/').next().unwrap().split('?').next().unwrap();
                self.server.as_ref().unwrap().psql(name, &sql);
            }
            SnapshotDb::Sqlite(path) => {
                rusqlite::Connection::open(path)
                    .unwrap()
                    .execute(&sql, [])
                    .unwrap();
            }
            SnapshotDb::Embedded => unreachable!(),
        }
    }
}

fn new(name: &str, org: &str) -> NewSnapshot {
    NewSnapshot {
        name: name.into(),
        organization_id: org.into(),
        general: false,
        image_name: format!("registry.local/{name}"),
        entrypoint: vec![],
        resources: Resources::default(),
        build_info: None,
        region_ids: vec!["eu-1".into()],
    }
}

/// Poll `check` until it holds; a hang guard, not a timing assertion.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pagination_covers_everything_once(db: &Db) {
    let mut repo = db.fresh();
    for i in 0..250 {
        repo.create(
            new(&format!("env-{i:03}:1.0.0"), "org-a"),
            SnapshotState::Pending,
        )
        .unwrap();
    }
    repo.create(new("other:1.0.0", "org-b"), SnapshotState::Pending)
        .unwrap();
    let mut seen = HashSet::new();
    let mut q = ListQuery::new("org-a");
    q.limit = 40;
    for page in 1..=7 {
        q.page = page;
        let p = repo.list(&q).unwrap();
        assert_eq!(p.total, 250);
        assert_eq!(p.items.len(), if page == 7 { 10 } else { 40 });
        for s in p.items {
            assert!(seen.insert(s.id), "duplicate across pages");
        }
    }
    assert_eq!(seen.len(), 250, "gaps across pages");
    q.page = 8;
    assert!(repo.list(&q).unwrap().items.is_empty());
    let mut q = ListQuery::new("org-a");
    q.name_prefix = Some("env-1".into());
    assert_eq!(repo.list(&q).unwrap().total, 100);
    q.page = 0;
    assert!(repo.list(&q).is_err());
}

fn organizations_see_their_own_and_general_only(db: &Db) {
    let mut repo = db.fresh();
    let mine = repo
        .create(new("mine:1", "org-a"), SnapshotState::Pending)
        .unwrap();
    let theirs = repo
        .create(new("theirs:1", "org-b"), SnapshotState::Pending)
        .unwrap();
    let mut general = new("python:3.11", "platform");
    general.general = true;
    let general = repo.create(general, SnapshotState::Pending).unwrap();

    let names: Vec<String> = repo
        .list(&ListQuery::new("org-a"))
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["mine:1", "python:3.11"]);
    assert!(matches!(
        repo.get("org-a", &theirs.id),
        Err(SnapshotError::NotFound(_))
    ));
    assert!(repo.get("org-a", &general.id).is_ok());
    assert!(matches!(
        repo.begin_delete("org-a", &theirs.id),
        Err(SnapshotError::NotFound(_))
    ));
    assert!(matches!(
        repo.begin_delete("org-a", &general.id),
        Err(SnapshotError::General(_))
    ));
    assert!(repo.begin_delete("org-a", &mine.id).is_ok());
    repo.remove_record(&mine.id).unwrap();
    assert!(repo.get("org-a", &mine.id).is_err());
}

fn versions_and_latest(db: &Db) {
    let mut repo = db.fresh();
    for v in ["1.9.0", "1.10.0", "v1.2.0", "nightly"] {
        repo.create(new(&format!("api-env:{v}"), "o"), SnapshotState::Pending)
            .unwrap();
    }
    assert_eq!(repo.get("o", "api-env").unwrap().name, "api-env:1.10.0");
    assert_eq!(
        repo.get("o", "api-env:nightly").unwrap().name,
        "api-env:nightly"
    );
    let dup = repo.create(new("api-env:1.9.0", "o"), SnapshotState::Pending);
    assert!(matches!(dup, Err(SnapshotError::Duplicate { .. })));
    // The same name in another organization is fine.
    assert!(repo
        .create(new("api-env:1.9.0", "p"), SnapshotState::Pending)
        .is_ok());
    let bad = NewSnapshot {
        resources: Resources {
            cpu: 0,
            ..Resources::default()
        },
        ..new("x:1", "o")
    };
    assert!(matches!(
        repo.create(bad, SnapshotState::Pending),
        Err(SnapshotError::Invalid(_))
    ));
}

fn transitions_are_checked_and_durable(db: &Db) {
    let url = db.fresh_db();
    let mut repo = db.open(&url);
    let s = repo
        .create(new("app:1", "o"), SnapshotState::Pending)
        .unwrap();
    assert!(matches!(
        repo.transition("o", &s.id, SnapshotState::Active),
        Err(SnapshotError::BadTransition { .. })
    ));
    repo.transition("o", &s.id, SnapshotState::Building)
        .unwrap();
    repo.transition("o", &s.id, SnapshotState::Active).unwrap();
    drop(repo);
    let mut repo = db.open(&url);
    assert_eq!(repo.get("o", &s.id).unwrap().state, SnapshotState::Active);
    repo.mark_idle(std::time::Duration::ZERO).unwrap();
    assert_eq!(repo.get("o", &s.id).unwrap().state, SnapshotState::Inactive);
    let used: Snapshot = repo.touch("o", &s.id).unwrap();
    assert_eq!(used.state, SnapshotState::Active);
    assert!(used.last_used_at.is_some());
}

fn json_and_yaml_round_trip(db: &Db) {
    let mut repo = db.fresh();
    repo.create(new("app:1", "o"), SnapshotState::Pending)
        .unwrap();
    let page = repo.list(&ListQuery::new("o")).unwrap();
    let json = serde_json::to_value(&page).unwrap();
    for key in ["items", "total", "page", "limit"] {
        assert!(json.get(key).is_some(), "listing lacks {key}");
    }
    let yaml = cairn_snapshot::to_yaml(&page.items[0]).unwrap();
    let back: Snapshot = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(back, page.items[0]);
}

fn own_snapshots_win_over_general_ones_and_the_operator_finishes_general(db: &Db) {
    let mut repo = db.fresh();
    let mut general = new("py:3.12", "platform");
    general.general = true;
    let general = repo.create(general, SnapshotState::Building).unwrap();
    // Only the operator moves a general snapshot: its creation can finish.
    assert!(matches!(
        repo.update("platform", &general.id, |_| Ok(())),
        Err(SnapshotError::General(_))
    ));
    let done = repo
        .update_as(None, &general.id, |s| {
            s.state = SnapshotState::Active;
            Ok(())
        })
        .unwrap();
    assert_eq!(done.state, SnapshotState::Active);
    // Another general `py:3.12` is a duplicate, whoever makes it.
    let mut again = new("py:3.12", "other-operator-org");
    again.general = true;
    assert!(matches!(
        repo.create(again, SnapshotState::Pending),
        Err(SnapshotError::Duplicate { .. })
    ));
    let own = repo
        .create(new("py:3.11", "acme"), SnapshotState::Pending)
        .unwrap();
    // By name alone the organization's own wins, though the general one's
    // version is higher; by the general one's full name it is still found.
    assert_eq!(repo.get("acme", "py").unwrap().id, own.id);
    assert_eq!(repo.get("acme", "py:3.12").unwrap().id, general.id);
    assert_eq!(repo.get("ACME", "py").unwrap().id, general.id);
    let mut same = new("py:3.12", "acme");
    same.image_name = "x".into();
    let same = repo.create(same, SnapshotState::Pending).unwrap();
    assert_eq!(repo.get("acme", "py:3.12").unwrap().id, same.id);
    assert_eq!(repo.get("acme", "py").unwrap().id, same.id);
    assert_eq!(repo.get_general("py:3.12").unwrap().id, general.id);
    repo.begin_delete_as_operator(&general.id).unwrap();
    repo.remove_record(&general.id).unwrap();
    assert!(repo.get("other", "py").is_err());
}

fn concurrent_creates_of_one_name_make_one_snapshot(db: &Db) {
    let url = db.fresh_db();
    let _schema = db.open(&url);
    // Eight connections (as eight runners) race for the same name:version.
    let results: Vec<Result<Snapshot, SnapshotError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                s.spawn(move || {
                    let mut repo = db.open(&url);
                    repo.create(new("race:1.0.0", "o"), SnapshotState::Building)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(matches!(r, Err(SnapshotError::Duplicate { .. })), "{r:?}");
    }
    assert_eq!(db.open(&url).list(&ListQuery::new("o")).unwrap().total, 1);
}

fn a_transition_sees_the_other_runners_change(db: &Db) {
    let url = db.fresh_db();
    let (mut a, mut b) = (db.open(&url), db.open(&url));
    let s = a.create(new("app:1", "o"), SnapshotState::Pending).unwrap();
    b.transition("o", &s.id, SnapshotState::Pulling).unwrap();
    // A's view is not cached: its transition checks the row as B left it.
    assert!(matches!(
        a.transition("o", &s.id, SnapshotState::Building),
        Err(SnapshotError::BadTransition {
            from: SnapshotState::Pulling,
            ..
        })
    ));
    a.transition("o", &s.id, SnapshotState::Active).unwrap();
    // Deleted on A: B can neither use nor see it.
    a.begin_delete("o", &s.id).unwrap();
    assert!(b.touch("o", &s.id).is_err());
    a.remove_record(&s.id).unwrap();
    assert!(matches!(
        b.get("o", "app:1"),
        Err(SnapshotError::NotFound(_))
    ));
    assert!(matches!(
        b.touch("o", &s.id),
        Err(SnapshotError::NotFound(_))
    ));
}

fn a_lease_not_renewed_expires_into_build_failed(db: &Db) {
    let url = db.fresh_db();
    let mut worker = db.open(&url).with_lease(Duration::from_millis(300));
    let mut other = db.open(&url);
    let built = worker
        .create(new("built:1", "o"), SnapshotState::Building)
        .unwrap();
    let pulled = worker
        .create(new("pulled:1", "o"), SnapshotState::Pending)
        .unwrap();
    worker
        .transition("o", &pulled.id, SnapshotState::Pulling)
        .unwrap();
    // This process is alive: only the lease's expiry can fail them.
    eventually("the leases to expire", || {
        other.get("o", "built:1").unwrap().state != SnapshotState::Building
            && other.get("o", "pulled:1").unwrap().state != SnapshotState::Pulling
    });
    assert_eq!(
        other.get("o", "built:1").unwrap().state,
        SnapshotState::BuildFailed
    );
    assert_eq!(
        other.get("o", "pulled:1").unwrap().state,
        SnapshotState::Error
    );
    // The stalled worker has lost its lease and cannot finish.
    assert!(!worker.renew_lease(&built.id).unwrap());
    assert!(worker
        .transition("o", &built.id, SnapshotState::Active)
        .is_err());
}

fn a_renewed_lease_keeps_the_work_alive(db: &Db) {
    let url = db.fresh_db();
    let mut worker = db.open(&url).with_lease(Duration::from_secs(600));
    let mut other = db.open(&url);
    let s = worker
        .create(new("long:1", "o"), SnapshotState::Building)
        .unwrap();
    assert!(worker.renew_lease(&s.id).unwrap());
    assert_eq!(other.expire_leases().unwrap(), 0);
    assert_eq!(
        other.get("o", "long:1").unwrap().state,
        SnapshotState::Building
    );
    worker
        .transition("o", &s.id, SnapshotState::Active)
        .unwrap();
    // The work ended: there is no lease left to renew.
    assert!(!worker.renew_lease(&s.id).unwrap());
}

/// The builder runs in another process (this binary, re-run) and dies or
/// freezes mid-build.
fn builder_process(db: &SnapshotDb, how: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .env("CAIRN_SNAPSHOT_TEST_BUILDER", how)
        .env("CAIRN_SNAPSHOT_TEST_DB", db.to_url())
        .spawn()
        .unwrap()
}

fn a_killed_builder_leaves_build_failed(db: &Db) {
    let url = db.fresh_db();
    let mut child = builder_process(&url, "abort");
    assert!(
        !child.wait().unwrap().success(),
        "the builder should have died"
    );
    let mut repo = db.open(&url);
    eventually("the dead builder's snapshot to fail", || {
        repo.get("o", "dying:1").unwrap().state == SnapshotState::BuildFailed
    });
}

fn a_frozen_builder_loses_its_lease(db: &Db) {
    let url = db.fresh_db();
    let mut child = builder_process(&url, "stop");
    let mut repo = db.open(&url);
    eventually("the builder's record", || repo.get("o", "frozen:1").is_ok());
    eventually("the frozen builder's lease to expire", || {
        repo.get("o", "frozen:1").unwrap().state == SnapshotState::BuildFailed
    });
    // The builder still exists (stopped): the lease, not its PID, decided.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the builder is still there"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

fn schema_is_versioned_and_a_newer_one_refused(db: &Db) {
    let url = db.fresh_db();
    let mut repo = db.open(&url);
    repo.create(new("kept:1", "o"), SnapshotState::Pending)
        .unwrap();
    drop(repo);
    // Opening again migrates nothing and keeps the records.
    assert_eq!(db.open(&url).get("o", "kept:1").unwrap().name, "kept:1");
    db.set_schema_version(&url, 999);
    let err = SnapshotRepo::connect(&url, Path::new("/nonexistent/meta.db"))
        .err()
        .unwrap();
    assert!(
        matches!(err, SnapshotError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
    assert!(!err.is_bad_input());
}

fn runners_record_what_they_hold(db: &Db) {
    let url = db.fresh_db();
    let (mut a, mut b) = (db.open(&url), db.open(&url));
    let s = a
        .create(new("shared:1", "o"), SnapshotState::Pending)
        .unwrap();
    assert_eq!(b.runner_state(&s.id, "runner-b").unwrap(), None);
    b.set_runner_state(&s.id, "runner-b", SnapshotState::Pulling)
        .unwrap();
    assert_eq!(
        a.runner_state(&s.id, "runner-b").unwrap(),
        Some(SnapshotState::Pulling)
    );
    b.set_runner_state(&s.id, "runner-b", SnapshotState::Active)
        .unwrap();
    assert_eq!(
        a.runner_state(&s.id, "runner-b").unwrap(),
        Some(SnapshotState::Active)
    );
    assert_eq!(a.runner_state(&s.id, "runner-a").unwrap(), None);
    a.begin_delete("o", &s.id).unwrap();
    assert!(b
        .set_runner_state(&s.id, "runner-c", SnapshotState::Pulling)
        .is_err());
    a.remove_record(&s.id).unwrap();
    assert_eq!(a.runner_state(&s.id, "runner-b").unwrap(), None);
}

fn filters_and_pages_are_exact(db: &Db) {
    let mut repo = db.fresh();
    for i in 0..30 {
        let s = repo
            .create(
                new(&format!("svc_{}:1.{i}", i % 3), "o"),
                SnapshotState::Pending,
            )
            .unwrap();
        if i % 2 == 0 {
            repo.transition("o", &s.id, SnapshotState::Pulling).unwrap();
            repo.transition("o", &s.id, SnapshotState::Active).unwrap();
        }
    }
    repo.create(new("svcX0:1", "o"), SnapshotState::Pending)
        .unwrap();
    let mut q = ListQuery::new("o");
    q.state = Some(SnapshotState::Active);
    q.name_prefix = Some("svc_0".into());
    q.limit = 3;
    q.page = 2;
    let p = repo.list(&q).unwrap();
    // i in 0..30 with i%3==0 and i%2==0: 0, 6, 12, 18, 24; page 2 of 3.
    assert_eq!(p.total, 5);
    let names: Vec<_> = p.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["svc_0:1.18", "svc_0:1.24"]);
    // `_` is a literal in a prefix, not LIKE's wildcard.
    let mut q = ListQuery::new("o");
    q.name_prefix = Some("svc_".into());
    assert_eq!(repo.list(&q).unwrap().total, 30);
}

/// A store's `meta.db` as the first schema (PID-tracked work) left it opens
/// migrated: records kept, leases and the runner table added.
fn a_schema_1_sqlite_file_is_migrated(db: &Db) {
    let path = db.tmp.path().join("v1.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE cairn_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
         INSERT INTO cairn_schema VALUES ('snapshots', 1);
         CREATE TABLE snapshots (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, org TEXT NOT NULL,
             general INTEGER NOT NULL, base_name TEXT NOT NULL, version TEXT NOT NULL,
             state TEXT NOT NULL, worker_pid INTEGER, worker_start INTEGER, record TEXT NOT NULL);
         CREATE UNIQUE INDEX snapshots_name ON snapshots(org, base_name, version);
         CREATE INDEX snapshots_order ON snapshots(seq);
         CREATE INDEX snapshots_state ON snapshots(state, seq);",
    )
    .unwrap();
    let old = Snapshot {
        id: "old-1".into(),
        name: "old:1".into(),
        organization_id: "o".into(),
        general: false,
        state: SnapshotState::Active,
        image_name: "registry.local/old:1".into(),
        size: 1,
        entrypoint: vec![],
        cpu: 1,
        gpu: 0,
        mem: 1,
        disk: 3,
        build_info: None,
        region_ids: vec![],
        created_at: "2026-01-01T00:00:00.000000Z".into(),
        updated_at: "2026-01-01T00:00:00.000000Z".into(),
        last_used_at: None,
    };
    conn.execute(
        "INSERT INTO snapshots VALUES ('old-1', 1, 'o', 0, 'old', '1', 'active', 0, 0, ?1)",
        [serde_json::to_string(&old).unwrap()],
    )
    .unwrap();
    drop(conn);
    let url = SnapshotDb::Sqlite(path.clone());
    let mut repo = db.open(&url);
    assert_eq!(repo.get("o", "old").unwrap(), old);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT version FROM cairn_schema WHERE component = 'snapshots'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(version >= 2, "schema {version}");
    // What schema 2 brought works on the old file: leases, runner state,
    // idle marking by the new column.
    let s = repo
        .create(new("new:1", "o"), SnapshotState::Building)
        .unwrap();
    assert!(repo.renew_lease(&s.id).unwrap());
    repo.set_runner_state("old-1", "r", SnapshotState::Active)
        .unwrap();
    assert_eq!(repo.mark_idle(Duration::from_secs(3600)).unwrap(), 1);
    assert_eq!(
        repo.get("o", "old:1").unwrap().state,
        SnapshotState::Inactive
    );
}

type Test = (&'static str, fn(&Db));

const TESTS: &[Test] = &[
    (
        "pagination_covers_everything_once",
        pagination_covers_everything_once,
    ),
    (
        "organizations_see_their_own_and_general_only",
        organizations_see_their_own_and_general_only,
    ),
    ("versions_and_latest", versions_and_latest),
    (
        "transitions_are_checked_and_durable",
        transitions_are_checked_and_durable,
    ),
    ("json_and_yaml_round_trip", json_and_yaml_round_trip),
    (
        "own_snapshots_win_over_general_ones_and_the_operator_finishes_general",
        own_snapshots_win_over_general_ones_and_the_operator_finishes_general,
    ),
    (
        "concurrent_creates_of_one_name_make_one_snapshot",
        concurrent_creates_of_one_name_make_one_snapshot,
    ),
    (
        "a_transition_sees_the_other_runners_change",
        a_transition_sees_the_other_runners_change,
    ),
    (
        "a_lease_not_renewed_expires_into_build_failed",
        a_lease_not_renewed_expires_into_build_failed,
    ),
    (
        "a_renewed_lease_keeps_the_work_alive",
        a_renewed_lease_keeps_the_work_alive,
    ),
    (
        "a_killed_builder_leaves_build_failed",
        a_killed_builder_leaves_build_failed,
    ),
    (
        "a_frozen_builder_loses_its_lease",
        a_frozen_builder_loses_its_lease,
    ),
    (
        "schema_is_versioned_and_a_newer_one_refused",
        schema_is_versioned_and_a_newer_one_refused,
    ),
    (
        "runners_record_what_they_hold",
        runners_record_what_they_hold,
    ),
    ("filters_and_pages_are_exact", filters_and_pages_are_exact),
];

/// SQLite only: PostgreSQL records began at the current schema.
const SQLITE_ONLY: &[Test] = &[(
    "a_schema_1_sqlite_file_is_migrated",
    a_schema_1_sqlite_file_is_migrated,
)];

/// The re-run as a builder: create a snapshot in `building`, then die
/// (`abort`) or freeze (`stop`, a lease of 1 s that is never renewed).
fn builder(how: &str) -> ! {
    let db = SnapshotDb::parse(&std::env::var("CAIRN_SNAPSHOT_TEST_DB").unwrap()).unwrap();
    let repo = SnapshotRepo::connect(&db, Path::new("/nonexistent/meta.db")).unwrap();
    let mut repo = repo.with_lease(Duration::from_secs(1));
    match how {
        "abort" => {
            repo.create(new("dying:1", "o"), SnapshotState::Building)
                .unwrap();
            std::process::abort()
        }
        _ => {
            repo.create(new("frozen:1", "o"), SnapshotState::Building)
                .unwrap();
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP).unwrap();
            std::process::exit(0)
        }
    }
}

fn main() {
    if let Ok(how) = std::env::var("CAIRN_SNAPSHOT_TEST_BUILDER") {
        builder(&how);
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let backends = [
        Db {
            tmp: tempfile::tempdir().unwrap(),
            server: None,
            next: AtomicU32::new(0),
        },
        Db {
            tmp: tempfile::tempdir().unwrap(),
            server: Some(PostgresServer::start()),
            next: AtomicU32::new(0),
        },
    ];
    let (mut passed, mut failed) = (0, 0);
    for db in &backends {
        let only: &[Test] = match db.server {
            Some(_) => &[],
            None => SQLITE_ONLY,
        };
        for (name, test) in TESTS.iter().chain(only) {
            let full = format!("{}::{name}", db.name());
            if filter.as_ref().is_some_and(|f| !full.contains(f.as_str())) {
                continue;
            }
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(db))).is_ok();
            println!("test {full} ... {}", if ok { "ok" } else { "FAILED" });
            if ok {
                passed += 1
            } else {
                failed += 1
            }
        }
    }
    drop(backends);
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed > 0 { 1 } else { 0 })
}
