//! `snapshot list` over 10,000 records with a state filter, a name prefix
//! and a page: the target is under 20 ms.

use cairn_snapshot::{ListQuery, NewSnapshot, Resources, SnapshotRepo, SnapshotState};
use criterion::{criterion_group, criterion_main, Criterion};

fn list(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = SnapshotRepo::open(&dir.path().join("meta.db")).unwrap();
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
    let mut q = ListQuery::new("org");
    q.state = Some(SnapshotState::Active);
    q.page = 3;
    q.limit = 100;
    let page = repo.list(&q).unwrap();
    assert_eq!(page.items.len(), 100);
    c.bench_function("list 10k: state filter, page 3 of 100", |b| {
        b.iter(|| repo.list(&q).unwrap())
    });
    let mut q = ListQuery::new("org");
    q.name_prefix = Some("app-1".into());
    q.page = 2;
    c.bench_function("list 10k: name prefix, page 2 of 100", |b| {
        b.iter(|| repo.list(&q).unwrap())
    });
    let q = ListQuery::new("org");
    c.bench_function("list 10k: no filter, page 1 of 100", |b| {
        b.iter(|| repo.list(&q).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = list
}
criterion_main!(benches);
