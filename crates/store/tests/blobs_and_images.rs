//! Blob ingest, manifests, tags and index.json.

mod common;

use cairn_store::{Digest, ImageRef, Store, StoreError};
use common::*;
use std::io::Write;

fn tmp_count(store: &Store) -> usize {
    std::fs::read_dir(store.layout().tmp()).unwrap().count()
}

#[test]
fn open_creates_the_layout() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    for p in [
        "oci-layout",
        "index.json",
        "blobs/sha256",
        "layers",
        "tmp",
        "sandboxes",
        "meta.db",
        "store.lock",
    ] {
        assert!(root.join(p).exists(), "{p} missing");
    }
    drop(store);
    // Re-opening an existing store works and keeps it.
    Store::open(&root).unwrap();
    std::fs::write(root.join("oci-layout"), "{}").unwrap();
    let err = Store::open(&root).err().unwrap();
    assert!(matches!(err, StoreError::BadLayout { .. }), "{err}");
}

#[test]
fn ingest_verifies_digest_and_size() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let data = vec![7u8; 3 << 20];
    let d = Digest::of(&data);

    let info = store
        .ingest_reader(&data[..], Some((d, data.len() as u64)))
        .unwrap();
    assert_eq!(info.digest, d);
    assert_eq!(std::fs::read(store.blob_path(&d)).unwrap(), data);

    // Wrong digest: an error naming both digests, and nothing left behind.
    let other = Digest::of(b"something else");
    let before = std::fs::read_dir(store.layout().blobs()).unwrap().count();
    let err = store
        .ingest_reader(&b"not it"[..], Some((other, 6)))
        .unwrap_err();
    match &err {
        StoreError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(*expected, other);
            assert_eq!(*actual, Digest::of(b"not it"));
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains(&other.to_string()));
    assert_eq!(tmp_count(&store), 0);
    assert_eq!(
        std::fs::read_dir(store.layout().blobs()).unwrap().count(),
        before
    );
    assert!(!store.has_blob(&Digest::of(b"not it")));

    // Right digest, wrong size: also refused.
    let small = b"abc";
    let err = store
        .ingest_reader(&small[..], Some((Digest::of(small), 4)))
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }));
    assert!(!store.has_blob(&Digest::of(small)));
    assert_eq!(tmp_count(&store), 0);
}

#[test]
fn ingest_of_an_existing_blob_is_a_no_op_that_does_not_read() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let data = b"hello blob";
    let d = Digest::of(data);
    store.ingest_bytes(data, None).unwrap();
    let mtime = std::fs::metadata(store.blob_path(&d))
        .unwrap()
        .modified()
        .unwrap();
    // A reader that fails if read proves the existing blob short-circuits.
    struct Explodes;
    impl std::io::Read for Explodes {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("must not be read"))
        }
    }
    let info = store
        .ingest_reader(Explodes, Some((d, data.len() as u64)))
        .unwrap();
    assert_eq!(info.digest, d);
    assert_eq!(
        std::fs::metadata(store.blob_path(&d))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    // Without an expected digest the content is hashed, and the duplicate dropped.
    let info = store.ingest_reader(&data[..], None).unwrap();
    assert_eq!(info.digest, d);
    assert_eq!(tmp_count(&store), 0);
}

#[test]
fn blob_writer_is_the_streaming_sink() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let mut w = store.blob_writer().unwrap();
    for i in 0..100u8 {
        w.write_all(&[i; 1000]).unwrap();
    }
    assert_eq!(w.written(), 100_000);
    let info = w.commit(None).unwrap();
    let bytes = std::fs::read(store.blob_path(&info.digest)).unwrap();
    assert_eq!(Digest::of(&bytes), info.digest);
    assert_eq!(info.size, 100_000);
    // Dropped without commit: no temp file, no blob.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"abandoned").unwrap();
    drop(w);
    assert_eq!(tmp_count(&store), 0);
    assert!(!store.has_blob(&Digest::of(b"abandoned")));
}

#[test]
fn concurrent_ingest_of_the_same_blob_leaves_one_copy() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    let data: Vec<u8> = (0..(4 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    let d = Digest::of(&data);
    std::thread::scope(|s| {
        for _ in 0..6 {
            let (root, data) = (&root, &data);
            s.spawn(move || {
                let store = Store::open(root).unwrap();
                store
                    .ingest_reader(&data[..], Some((d, data.len() as u64)))
                    .unwrap();
            });
        }
    });
    let store = Store::open(&root).unwrap();
    let blobs: Vec<_> = std::fs::read_dir(store.layout().blobs()).unwrap().collect();
    assert_eq!(blobs.len(), 1);
    assert_eq!(store.verify_blob(&d).unwrap().size, data.len() as u64);
    assert_eq!(tmp_count(&store), 0);
}

fn import_fixture(store: &Store, fx: &Fixture) -> Digest {
    let t = cairn_store::Transport::parse(&format!("oci:{}:{}", fx.dir.display(), fx.ref_name))
        .unwrap();
    store.import(&t, None).unwrap()[0].digest
}

#[test]
fn manifest_is_recorded_only_when_its_blobs_are_present() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "app:v1", &[1000, 2000], 1);
    let store = Store::open(t.path().join("store")).unwrap();
    let manifest = std::fs::read(fx.dir.join("blobs/sha256").join(fx.manifest.hex())).unwrap();
    // Only the config: the layers are missing.
    let config = std::fs::read(fx.dir.join("blobs/sha256").join(fx.config.hex())).unwrap();
    store.ingest_bytes(&config, None).unwrap();
    let err = store.record_manifest(&manifest, None).unwrap_err();
    match err {
        StoreError::ManifestChildMissing { manifest, child } => {
            assert_eq!(manifest, fx.manifest);
            assert_eq!(child, fx.layers[0]);
        }
        e => panic!("unexpected {e}"),
    }
    assert!(!store.has_manifest(&fx.manifest).unwrap());
    assert!(!store.has_blob(&fx.manifest));
    // Tagging an unrecorded manifest is refused.
    let name = ImageRef::parse("app:v1").unwrap();
    assert!(matches!(
        store.tag(&name, &fx.manifest),
        Err(StoreError::UnknownImage(_))
    ));

    for l in &fx.layers {
        let b = std::fs::read(fx.dir.join("blobs/sha256").join(l.hex())).unwrap();
        store.ingest_bytes(&b, None).unwrap();
    }
    let parsed = store.record_manifest(&manifest, None).unwrap();
    assert_eq!(parsed.digest, fx.manifest);
    assert!(store.has_manifest(&fx.manifest).unwrap());
    // Layer -> diff id recorded from the config.
    assert_eq!(store.diff_id_of(&fx.layers[1]).unwrap(), Some(fx.layers[1]));
}

#[test]
fn tags_are_normalised_and_index_json_follows_them() {
    let t = tempfile::tempdir().unwrap();
    let fx1 = make_image(&t.path().join("a"), "busybox:latest", &[100], 1);
    let fx2 = make_image(&t.path().join("b"), "localhost:5000/x:y", &[200], 2);
    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    let d1 = import_fixture(&store, &fx1);
    let d2 = import_fixture(&store, &fx2);
    assert_eq!(
        store_index(&root),
        vec![
            (
                "docker.io/library/busybox:latest".to_string(),
                d1.to_string()
            ),
            ("localhost:5000/x:y".to_string(), d2.to_string()),
        ]
    );
    assert_eq!(store.resolve("busybox").unwrap(), d1);
    assert_eq!(
        store.resolve("docker.io/library/busybox:latest").unwrap(),
        d1
    );
    assert_eq!(store.resolve(&format!("busybox@{d1}")).unwrap(), d1);
    assert_eq!(store.resolve(&d2.to_string()).unwrap(), d2);
    assert!(
        matches!(store.resolve("busybox:other"), Err(StoreError::UnknownImage(n)) if n == "docker.io/library/busybox:other")
    );
    assert!(matches!(
        store.resolve("Bad Name"),
        Err(StoreError::BadReference { .. })
    ));

    store
        .tag(&ImageRef::parse("team/app:1").unwrap(), &d1)
        .unwrap();
    let images = store.images().unwrap();
    let rec = images.iter().find(|i| i.digest == d1).unwrap();
    assert_eq!(
        rec.names,
        vec!["docker.io/library/busybox:latest", "docker.io/team/app:1"]
    );
    assert_eq!(rec.created, "2024-01-02T03:04:05Z");
    assert_eq!(store_index(&root).len(), 3);

    assert_eq!(
        store.untag(&ImageRef::parse("busybox").unwrap()).unwrap(),
        d1
    );
    assert!(matches!(
        store.untag(&ImageRef::parse("busybox").unwrap()),
        Err(StoreError::UnknownImage(_))
    ));
    assert_eq!(store_index(&root).len(), 2);
    assert!(store.fsck().unwrap().is_empty());
}

#[test]
fn concurrent_taggers_never_lose_an_index_entry() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("a"), "base:1", &[100], 1);
    let root = t.path().join("store");
    let d = import_fixture(&Store::open(&root).unwrap(), &fx);
    std::thread::scope(|s| {
        for w in 0..4 {
            let root = &root;
            s.spawn(move || {
                let store = Store::open(root).unwrap();
                for i in 0..15 {
                    store
                        .tag(&ImageRef::parse(&format!("w{w}/img:{i}")).unwrap(), &d)
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(store_index(&root).len(), 1 + 4 * 15);
    assert!(Store::open(&root).unwrap().fsck().unwrap().is_empty());
}

#[test]
fn layer_dirs_are_named_only_when_complete() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let id = Digest::of(b"layer");
    assert!(!store.has_layer_dir(&id));
    let err = store
        .ensure_layer_dir(&id, |dir| {
            std::fs::write(dir.join("half"), b"x").unwrap();
            Err::<(), _>("extraction failed")
        })
        .unwrap_err();
    assert!(err.to_string().contains("extraction failed"));
    assert!(!store.has_layer_dir(&id));
    let dir = store
        .ensure_layer_dir(&id, |dir| std::fs::write(dir.join("f"), b"1"))
        .unwrap();
    assert_eq!(dir, store.layer_dir(&id));
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"1");
    // A second filler is not called: the dir exists.
    store
        .ensure_layer_dir(&id, |_| -> Result<(), String> { panic!("must not refill") })
        .unwrap();
    // Concurrent fillers: one wins, the rest's temp dirs are gone.
    let id2 = Digest::of(b"layer2");
    std::thread::scope(|s| {
        for i in 0..4 {
            let store = &store;
            s.spawn(move || {
                store
                    .ensure_layer_dir(&id2, |dir| std::fs::write(dir.join("f"), format!("{i}")))
                    .unwrap();
            });
        }
    });
    assert!(store.has_layer_dir(&id2));
    assert_eq!(std::fs::read_dir(store.layout().tmp()).unwrap().count(), 0);
}
