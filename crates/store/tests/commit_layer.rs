//! `Store::commit_layer`, the one way a layer made from a directory enters
//! the store: blob written once and checked, dir adopted, cache entry
//! recorded; and nothing named when the writer's report is wrong. The
//! writer here is cairn-layer's own pipeline in-process (the sandbox's
//! writer runs the same pipeline in a user namespace: its commits are
//! tested by crates/sandbox/tests/manager.rs and the build suites, root
//! and rootless).

use cairn_layer::{write_layer_unhashed, Compression, DiffSource, LayerOptions};
use cairn_store::cache::CacheEntry;
use cairn_store::{BlobWriter, CacheRecord, LayerReport, LayerWriter, Store, StoreError};
use std::path::Path;

/// Writes a dir the caller owns, optionally lying about what it wrote.
struct InProcess {
    compression: Compression,
    lie: Lie,
}

#[derive(Clone, Copy, PartialEq)]
enum Lie {
    None,
    Size,
    DiffId,
    Fail,
    /// No lie: the write takes 100 ms first, so the store's sync starts
    /// beside it (`EARLY_SYNC_AFTER`, when enough is dirty) and the
    /// adoption uses that sync.
    Slow,
    /// `Slow`, then fails.
    SlowFail,
}

impl LayerWriter for InProcess {
    type Error = StoreError;

    fn write_layer(&self, dir: &Path, out: &mut BlobWriter) -> Result<LayerReport, StoreError> {
        let opts = LayerOptions {
            compression: self.compression,
            ..LayerOptions::default()
        };
        if matches!(self.lie, Lie::Slow | Lie::SlowFail) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let w = write_layer_unhashed(DiffSource::Full(dir), &opts, &mut *out).map_err(|e| {
            StoreError::BadSource {
                source_name: dir.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        if matches!(self.lie, Lie::Fail | Lie::SlowFail) {
            return Err(StoreError::BadSource {
                source_name: "writer".into(),
                reason: "failed on purpose".into(),
            });
        }
        Ok(LayerReport {
            diff_id: match self.lie {
                Lie::DiffId => cairn_layer::Digest::of(b"another layer"),
                _ => w.diff_id,
            },
            size: w.size + u64::from(self.lie == Lie::Size),
            media_type: w.media_type.to_string(),
            tree: None,
        })
    }
}

fn layer_dir(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/greeting"), "hello\n").unwrap();
    // Fixed mtimes: two dirs made a second apart are still the same layer.
    let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for p in [dir.join("etc/greeting"), dir.join("etc")] {
        std::fs::File::open(&p)
            .unwrap()
            .set_modified(epoch)
            .unwrap();
    }
    dir
}

/// Files under the store's tmp/ (a failed commit must leave no blob there).
fn tmp_entries(store: &Store) -> usize {
    std::fs::read_dir(store.layout().tmp()).unwrap().count()
}

#[test]
fn a_commit_names_the_blob_adopts_the_dir_and_records_the_cache_entry() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let writer = InProcess {
        compression: Compression::Gzip,
        lie: Lie::None,
    };
    let src = layer_dir(&store.layout().tmp(), "upper");
    let cache = CacheRecord {
        key: "key-1",
        value: r#"{"created_by":"RUN x"}"#,
    };
    let layer = store.commit_layer(&writer, &src, Some(cache)).unwrap();
    assert!(layer.adopted);
    assert!(!src.exists(), "the dir was moved into layers/");
    assert!(store.has_blob(&layer.digest));
    assert_eq!(store.verify_blob(&layer.digest).unwrap().size, layer.size);
    assert!(store.has_layer_dir(&layer.diff_id));
    let adopted = store.layer_dir(&layer.diff_id);
    assert_eq!(
        std::fs::read_to_string(adopted.join("etc/greeting")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        store.layer_marker(&layer.diff_id).unwrap().tree,
        layer.diff_id
    );
    assert_eq!(
        store.cache_get("key-1").unwrap(),
        Some(CacheEntry {
            key: "key-1".into(),
            layer_digest: Some(layer.digest),
            diff_id: Some(layer.diff_id),
            size: layer.size,
            value: r#"{"created_by":"RUN x"}"#.into(),
        })
    );

    // The same content again: the layer is there, the new dir is left to
    // the caller, and the second key names the same layer.
    let again = layer_dir(&store.layout().tmp(), "upper2");
    let cache = CacheRecord {
        key: "key-2",
        value: "{}",
    };
    let second = store.commit_layer(&writer, &again, Some(cache)).unwrap();
    assert!(!second.adopted);
    assert!(
        again.exists(),
        "the caller removes a dir that was not adopted"
    );
    assert_eq!(
        (second.digest, second.diff_id),
        (layer.digest, layer.diff_id)
    );
    assert_eq!(
        store.cache_get("key-2").unwrap().unwrap().layer_digest,
        Some(layer.digest)
    );
}

#[test]
fn a_wrong_report_or_a_failed_writer_names_nothing() {
    for (compression, lie) in [
        (Compression::Gzip, Lie::Size),
        (Compression::None, Lie::DiffId),
        (Compression::Gzip, Lie::Fail),
    ] {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("store")).unwrap();
        let src = layer_dir(t.path(), "upper");
        let cache = CacheRecord {
            key: "key",
            value: "{}",
        };
        let err = store
            .commit_layer(&InProcess { compression, lie }, &src, Some(cache))
            .unwrap_err();
        match lie {
            Lie::Size => assert!(matches!(err, StoreError::LayerMismatch { .. }), "{err}"),
            Lie::DiffId => assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}"),
            _ => assert!(err.to_string().contains("failed on purpose"), "{err}"),
        }
        assert!(
            src.join("etc/greeting").exists(),
            "the dir stays where it was"
        );
        assert_eq!(tmp_entries(&store), 0, "the temp blob is removed");
        assert_eq!(
            std::fs::read_dir(store.layout().blobs()).unwrap().count(),
            0,
            "no blob named"
        );
        assert_eq!(store.cache_get("key").unwrap(), None);
        assert_eq!(
            std::fs::read_dir(store.layout().layers()).unwrap().count(),
            0,
            "no layer dir"
        );
    }
}

#[test]
fn a_slow_write_is_adopted_after_the_sync_that_ran_beside_it() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let slow = |lie| InProcess {
        compression: Compression::Gzip,
        lie,
    };
    // A failed write names nothing and leaves the dir, sync or not.
    let src = layer_dir(&store.layout().tmp(), "upper");
    assert!(store
        .commit_layer(&slow(Lie::SlowFail), &src, None)
        .is_err());
    assert!(src.join("etc/greeting").exists());
    assert_eq!(
        tmp_entries(&store),
        1,
        "only the source dir is left in tmp/"
    );

    let layer = store.commit_layer(&slow(Lie::Slow), &src, None).unwrap();
    assert!(layer.adopted);
    assert!(!src.exists());
    assert!(store.has_blob(&layer.digest));
    let marker = store.layer_marker(&layer.diff_id).unwrap();
    assert_eq!(marker.tree, layer.diff_id);
    assert_eq!(
        std::fs::read_to_string(store.layer_dir(&layer.diff_id).join("etc/greeting")).unwrap(),
        "hello\n"
    );
    // The same content again, slowly: already there, not adopted.
    let again = layer_dir(&store.layout().tmp(), "upper2");
    let second = store.commit_layer(&slow(Lie::Slow), &again, None).unwrap();
    assert!(!second.adopted && again.exists());
    assert_eq!(second.diff_id, layer.diff_id);
}
