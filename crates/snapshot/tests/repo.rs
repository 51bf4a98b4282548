//! The snapshot repository over a real SQLite file.

use cairn_snapshot::{
    ListQuery, NewSnapshot, Resources, Snapshot, SnapshotError, SnapshotRepo, SnapshotState,
};
use std::collections::HashSet;

fn repo() -> (tempfile::TempDir, SnapshotRepo) {
    let dir = tempfile::tempdir().unwrap();
    let repo = SnapshotRepo::open(&dir.path().join("meta.db")).unwrap();
    (dir, repo)
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

#[test]
fn pagination_covers_everything_once() {
    let (_d, mut repo) = repo();
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

#[test]
fn organizations_see_their_own_and_general_only() {
    let (_d, mut repo) = repo();
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

#[test]
fn versions_and_latest() {
    let (_d, mut repo) = repo();
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

#[test]
fn transitions_are_checked_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("meta.db");
    let mut repo = SnapshotRepo::open(&db).unwrap();
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
    let mut repo = SnapshotRepo::open(&db).unwrap();
    assert_eq!(repo.get("o", &s.id).unwrap().state, SnapshotState::Active);
    repo.mark_idle(std::time::Duration::ZERO).unwrap();
    assert_eq!(repo.get("o", &s.id).unwrap().state, SnapshotState::Inactive);
    let used: Snapshot = repo.touch("o", &s.id).unwrap();
    assert_eq!(used.state, SnapshotState::Active);
    assert!(used.last_used_at.is_some());
}

#[test]
fn a_dead_builder_leaves_build_failed_not_building() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("meta.db");
    // A real process creates the snapshot in `building` and dies mid-build.
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .args([
            "--exact",
            "helper_builder_process",
            "--nocapture",
            "--ignored",
        ])
        .env("CAIRN_SNAPSHOT_TEST_DB", &db)
        .status()
        .unwrap();
    assert!(!status.success(), "the helper should have been killed");
    let mut repo = SnapshotRepo::open(&db).unwrap();
    let snap = repo.get("o", "dying:1").unwrap();
    assert_eq!(snap.state, SnapshotState::BuildFailed);
}

/// Runs only as the child of the test above: starts a build and is killed.
#[test]
#[ignore]
fn helper_builder_process() {
    let Some(db) = std::env::var_os("CAIRN_SNAPSHOT_TEST_DB") else {
        return;
    };
    let mut repo = SnapshotRepo::open(std::path::Path::new(&db)).unwrap();
    repo.create(new("dying:1", "o"), SnapshotState::Building)
        .unwrap();
    std::process::abort();
}

#[test]
fn json_and_yaml_round_trip() {
    let (_d, mut repo) = repo();
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

#[test]
fn own_snapshots_win_over_general_ones_and_the_operator_finishes_general() {
    let (_d, mut repo) = repo();
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
