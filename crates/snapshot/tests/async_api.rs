//! The async snapshot API from a tokio runtime: create, get, list, delete.

use cairn_registry::{Regions, RegistryOptions};
use cairn_sandbox::Launcher;
use cairn_snapshot::{AsyncSnapshots, CreateRequest, ListQuery, SnapshotState, Source};

#[test]
fn async_api_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    drop(cairn_testsupport::store_with_busybox(dir.path()));
    let api = AsyncSnapshots::new(
        dir.path().join("store"),
        Launcher::current_exe().unwrap(),
        RegistryOptions::from_env(),
        Regions::default(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let req = CreateRequest {
            name: "base:1.2.0".into(),
            entrypoint: Some(vec!["sleep".into(), "5".into()]),
            ..CreateRequest::default()
        };
        let snap = api
            .create("acme", Source::LocalImage("busybox:fixture".into()), req)
            .await
            .unwrap();
        assert_eq!(snap.state, SnapshotState::Active);
        assert_eq!(snap.entrypoint, ["sleep", "5"]);
        assert_eq!((snap.cpu, snap.mem, snap.disk), (1, 1, 3));
        let again = api.get("acme", "base").await.unwrap();
        assert_eq!(again.id, snap.id);
        // Two calls at once on one runtime thread: neither blocks the other.
        let (a, b) = tokio::join!(
            api.list(ListQuery::new("acme")),
            api.list(ListQuery::new("nobody"))
        );
        assert_eq!(a.unwrap().total, 1);
        assert_eq!(b.unwrap().total, 0);
        let err = api.get("nobody", "base").await.unwrap_err();
        assert!(err.is_bad_input());
        api.delete("acme", &snap.id).await.unwrap();
        assert_eq!(api.list(ListQuery::new("acme")).await.unwrap().total, 0);
    });
}
