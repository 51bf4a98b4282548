//! Garbage collection, the build cache budget, GC roots, and fsck.

mod common;

use cairn_store::cache::CacheEntry;
use cairn_store::{Digest, ImageRef, Store, StoreError, Transport};
use common::*;
use serde_json::json;
use std::fs;

fn import(store: &Store, fx: &Fixture) -> Digest {
    let t = Transport::parse(&format!("oci:{}:{}", fx.dir.display(), fx.ref_name)).unwrap();
    store.import(&t, None).unwrap()[0].digest
}

fn blobs_of(fx: &Fixture) -> Vec<Digest> {
    let mut v = vec![fx.manifest, fx.config];
    v.extend(&fx.layers);
    v
}

#[test]
fn gc_needs_the_exclusive_lock() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    assert!(matches!(store.gc(None), Err(StoreError::NotExclusive)));
}

#[test]
fn gc_sweeps_what_nothing_reaches_and_keeps_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let kept = make_image(&src, "kept:1", &[1000, 2000], 1);
    let dropped = make_image(&src, "dropped:1", &[3000], 2);
    let rooted = make_image(&src, "rooted:1", &[4000], 3);
    let root = t.path().join("store");
    {
        let store = Store::open(&root).unwrap();
        for fx in [&kept, &dropped, &rooted] {
            import(&store, fx);
        }
        store.untag(&ImageRef::parse("dropped:1").unwrap()).unwrap();
        store.untag(&ImageRef::parse("rooted:1").unwrap()).unwrap();
        store
            .add_root("snapshot", "snap-1", &rooted.manifest)
            .unwrap();
        // Layer dirs: one of a kept layer, one of a dropped layer, one held by a sandbox root.
        for id in [kept.layers[0], dropped.layers[0]] {
            store
                .ensure_layer_dir(&id, |d| fs::write(d.join("f"), "x"))
                .unwrap();
        }
        let sandbox_layer = Digest::of(b"sandbox upper");
        store
            .ensure_layer_dir(&sandbox_layer, |d| fs::write(d.join("f"), "x"))
            .unwrap();
        store.add_root("sandbox", "sb-1", &sandbox_layer).unwrap();
        fs::create_dir(root.join("layers/not-a-digest")).unwrap();
        fs::write(root.join("tmp/blob-orphan"), "half").unwrap();
    }
    let store = Store::open_exclusive(&root).unwrap();
    let r = store.gc(None).unwrap();
    assert_eq!(r.manifests_forgotten, 1);
    assert_eq!(
        r.blobs_removed, 3,
        "manifest, config and layer of the dropped image"
    );
    assert_eq!(
        r.layer_dirs_removed, 2,
        "the dropped layer's dir and the junk dir"
    );
    assert_eq!(r.tmp_entries_removed, 1);
    for d in blobs_of(&kept).into_iter().chain(blobs_of(&rooted)) {
        assert!(store.has_blob(&d), "{d} kept");
    }
    for d in blobs_of(&dropped) {
        assert!(!store.has_blob(&d), "{d} swept");
    }
    assert!(store.has_layer_dir(&kept.layers[0]));
    assert!(!store.has_layer_dir(&dropped.layers[0]));
    assert!(store.has_layer_dir(&Digest::of(b"sandbox upper")));
    assert!(store.fsck().unwrap().is_empty());
    // Dropping the roots frees the rest.
    store.remove_roots("snapshot", "snap-1").unwrap();
    store.remove_roots("sandbox", "sb-1").unwrap();
    let r = store.gc(None).unwrap();
    assert_eq!(r.blobs_removed, 3);
    assert_eq!(r.layer_dirs_removed, 1);
    assert!(store.fsck().unwrap().is_empty());
}

#[test]
fn build_cache_is_kept_within_budget_least_recently_used_first() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let mut layers = Vec::new();
    for i in 0..3u8 {
        let blob = vec![i; 1000];
        let d = store.ingest_bytes(&blob, None).unwrap().digest;
        store
            .cache_put(&CacheEntry {
                key: format!("k{i}"),
                layer_digest: Some(d),
                diff_id: Some(d),
                size: 1000,
                value: json!({"step": i}).to_string(),
            })
            .unwrap();
        layers.push(d);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // k0 is used again, so k1 is now the least recently used.
    assert_eq!(
        store.cache_get("k0").unwrap().unwrap().layer_digest,
        Some(layers[0])
    );
    assert!(store.cache_get("nope").unwrap().is_none());
    drop(store);
    let store = Store::open_exclusive(t.path()).unwrap();
    // Without a budget, cache entries are roots.
    assert_eq!(store.gc(None).unwrap().blobs_removed, 0);
    let r = store.gc(Some(2500)).unwrap();
    assert_eq!(r.cache_entries_dropped, 1);
    assert_eq!(r.blobs_removed, 1);
    assert!(!store.has_blob(&layers[1]));
    assert!(store.has_blob(&layers[0]) && store.has_blob(&layers[2]));
    assert!(store.cache_get("k1").unwrap().is_none());
    assert_eq!(store.gc(Some(0)).unwrap().cache_entries_dropped, 2);
    assert!(store.fsck().unwrap().is_empty());
}

#[test]
fn fsck_reports_every_violation() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let a = make_image(&src, "a:1", &[1000, 2000], 1);
    let b = make_image(&src, "b:1", &[3000], 2);
    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    import(&store, &a);
    import(&store, &b);
    assert!(store.fsck().unwrap().is_empty());

    // A flipped byte, a missing blob, an index.json out of step, a bad layer dir name.
    let p = store.blob_path(&a.layers[0]);
    let mut bytes = fs::read(&p).unwrap();
    bytes[600] ^= 1;
    fs::write(&p, bytes).unwrap();
    fs::remove_file(store.blob_path(&b.config)).unwrap();
    let mut idx: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    idx["manifests"].as_array_mut().unwrap().remove(0);
    fs::write(root.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    fs::create_dir(root.join("layers/zzz")).unwrap();

    let problems = store.fsck().unwrap();
    let all = problems.join("\n");
    assert!(
        all.contains(&a.layers[0].to_string()) && all.contains("does not match"),
        "{all}"
    );
    assert!(
        all.contains(&format!("{}, which is missing", b.config)),
        "{all}"
    );
    assert!(
        all.contains("index.json lacks tag docker.io/library/a:1"),
        "{all}"
    );
    assert!(all.contains("layers/zzz"), "{all}");
    assert_eq!(problems.len(), 4, "{all}");

    fs::write(root.join("index.json"), "not json").unwrap();
    assert!(store.fsck().unwrap().join("\n").contains("index.json"));
}

#[test]
fn a_torn_index_json_write_is_repaired_not_reported() {
    let t = tempfile::tempdir().unwrap();
    let a = make_image(&t.path().join("src"), "a:1", &[100], 1);
    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    import(&store, &a);
    // What a writer killed between the rename of index.json and its commit
    // leaves: an index.json one generation ahead, with a tag the db lacks.
    let mut idx: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    let gen: i64 = idx["annotations"]["io.cairn.index.generation"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    idx["annotations"]["io.cairn.index.generation"] = json!((gen + 1).to_string());
    let mut extra = idx["manifests"][0].clone();
    extra["annotations"]["org.opencontainers.image.ref.name"] =
        json!("docker.io/library/ghost:latest");
    idx["manifests"].as_array_mut().unwrap().push(extra);
    fs::write(root.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    assert!(store.fsck().unwrap().is_empty());
    assert_eq!(store_index(&root).len(), 1);
}

#[test]
fn an_index_image_imports_exports_and_survives_gc() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let amd = make_image(&src, "amd", &[1000], 1);
    let arm = make_image(&src, "arm", &[2000], 2);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.manifest.to_string(), "size": amd.manifest_size,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.manifest.to_string(), "size": arm.manifest_size,
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_d = write_blob(&src, &index_bytes);
    fs::write(
        src.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_d.to_string(),
             "size": index_bytes.len(), "annotations": {"org.opencontainers.image.ref.name": "multi:1"}}]}))
        .unwrap(),
    )
    .unwrap();
    let root = t.path().join("store");
    {
        let store = Store::open(&root).unwrap();
        let got = store
            .import(
                &Transport::parse(&format!("oci:{}", src.display())).unwrap(),
                None,
            )
            .unwrap();
        assert_eq!(got[0].digest, index_d);
        let images = store.images().unwrap();
        assert_eq!(images.len(), 1, "children are not listed on their own");
        let want: u64 = [&amd, &arm].iter().map(|fx| stored_size(&store, fx)).sum();
        assert_eq!(
            images[0].size, want,
            "an index's size is its children's config + layers"
        );
        let out = t.path().join("out.tar");
        store
            .export(
                "multi:1",
                &Transport::parse(&format!("oci-archive:{}", out.display())).unwrap(),
            )
            .unwrap();
        let store2 = Store::open(t.path().join("s2")).unwrap();
        let got2 = store2
            .import(
                &Transport::parse(&format!("oci-archive:{}", out.display())).unwrap(),
                None,
            )
            .unwrap();
        assert_eq!(got2[0].digest, index_d);
        // A docker archive holds one platform: this machine's.
        let d = t.path().join("d.tar");
        store
            .export(
                "multi:1",
                &Transport::parse(&format!("docker-archive:{}", d.display())).unwrap(),
            )
            .unwrap();
        let got3 = store2
            .import(
                &Transport::parse(&format!("docker-archive:{}", d.display())).unwrap(),
                Some(&ImageRef::parse("single").unwrap()),
            )
            .unwrap();
        let (_, m) = store2.manifest(&got3[0].digest).unwrap();
        assert_eq!(m.config.unwrap().digest, amd.config);
    }
    let store = Store::open_exclusive(&root).unwrap();
    let r = store.gc(None).unwrap();
    assert_eq!(
        r.blobs_removed, 0,
        "children of a tagged index are reachable"
    );
    assert!(store.fsck().unwrap().is_empty());
}

/// Bytes of config + layers of an image, as stored.
fn stored_size(store: &Store, fx: &Fixture) -> u64 {
    std::iter::once(&fx.config)
        .chain(&fx.layers)
        .map(|d| store.blob_size(d).unwrap())
        .sum()
}

#[test]
fn a_volatile_root_keeps_its_image_through_gc() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "run:1", &[1000], 7);
    let root = t.path().join("store");
    {
        let store = Store::open(&root).unwrap();
        import(&store, &fx);
        store.untag(&ImageRef::parse("run:1").unwrap()).unwrap();
        store
            .add_volatile_root("sandbox", "sb-rm", &fx.manifest)
            .unwrap();
        // Later commits of the same connection are FULL again and work.
        store.add_root("sandbox", "sb-2", &fx.manifest).unwrap();
    }
    let store = Store::open_exclusive(&root).unwrap();
    let r = store.gc(None).unwrap();
    assert_eq!(r.blobs_removed, 0, "the volatile root held the image");
    store.remove_roots("sandbox", "sb-rm").unwrap();
    store.remove_roots("sandbox", "sb-2").unwrap();
    let r = store.gc(None).unwrap();
    assert_eq!(
        r.blobs_removed, 3,
        "manifest, config and layer once unrooted"
    );
}
