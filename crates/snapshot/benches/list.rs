//! `snapshot list` over 10,000 records with a state filter, a name prefix
//! and a page, on both backends: the embedded SQLite file and PostgreSQL
//! (a real server started for the bench, on loopback). The target
//! is under 20 ms on each.

use cairn_snapshot::{ListQuery, NewSnapshot, Resources, SnapshotDb, SnapshotRepo, SnapshotState};
use cairn_testsupport::postgres_server::PostgresServer;
use criterion::{criterion_group, criterion_main, Criterion};
use std::path::Path;

/// 10,000 records: 10% another org's, 1% general, half of the rest active.
fn fill(repo: &mut SnapshotRepo) {
    for i in 0..10_000 {
        let s = repo
            .create(
                NewSnapshot {
                    name: format!("app-{}:1.0.{}", i % 50, i),
                    organization_id: if i % 10 == 0 {
                        "other".into()
                    } else {
                        "org".into()
                    },
                    general: i % 100 == 0,
                    image_name: format!("localhost/snapshots/org/app-{}:1.0.{i}", i % 50),
                    entrypoint: vec!["sh".into()],
                    resources: Resources::default(),
                    build_info: None,
                    region_ids: vec!["eu".into()],
                },
                SnapshotState::Pending,
            )
            .unwrap();
        if i % 2 == 0 && s.organization_id == "org" && !s.general {
            repo.transition("org", &s.id, SnapshotState::Pulling)
                .unwrap();
            repo.transition("org", &s.id, SnapshotState::Active)
                .unwrap();
        }
    }
}

fn bench_backend(c: &mut Criterion, backend: &str, repo: &mut SnapshotRepo) {
    fill(repo);
    let mut q = ListQuery::new("org");
    q.state = Some(SnapshotState::Active);
    q.page = 3;
    q.limit = 100;
    assert_eq!(repo.list(&q).unwrap().items.len(), 100);
    c.bench_function(
        &format!("{backend}: list 10k, state filter, page 3 of 100"),
        |b| b.iter(|| repo.list(&q).unwrap()),
    );
    let mut q = ListQuery::new("org");
    q.name_prefix = Some("app-1".into());
    q.page = 2;
    c.bench_function(
        &format!("{backend}: list 10k, name prefix, page 2 of 100"),
        |b| b.iter(|| repo.list(&q).unwrap()),
    );
    let q = ListQuery::new("org");
    c.bench_function(
        &format!("{backend}: list 10k, no filter, page 1 of 100"),
        |b| b.iter(|| repo.list(&q).unwrap()),
    );
}

fn list(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = SnapshotRepo::open(&dir.path().join("meta.db")).unwrap();
    bench_backend(c, "sqlite", &mut sqlite);
    let server = PostgresServer::start();
    let db = SnapshotDb::parse(&server.create_database("bench")).unwrap();
    let mut pg = SnapshotRepo::connect(&db, Path::new("/nonexistent")).unwrap();
    bench_backend(c, "postgres", &mut pg);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = list
}
criterion_main!(benches);
