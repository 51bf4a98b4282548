//! The durable, private store: layer dirs adopted with a completion marker,
//! `fsck_full` finding changed content, 0700 dirs, GC that resumes after an
//! interruption and clears `tmp/`.

use cairn_store::gc::PlainVerifier;
use cairn_store::layer_dirs::{PlainRemover, TreeRemover};
use cairn_store::{Digest, Store};
use std::cell::Cell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn store_dirs_are_private() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&root).unwrap();
    for d in ["", "layers", "sandboxes", "tmp"] {
        assert_eq!(mode(&store.root().join(d)), 0o700, "{d}");
    }
}

/// A layer dir filled by hand and adopted: complete only with its marker;
/// one without a marker is not trusted and is replaced on the next fill.
#[test]
fn layer_dirs_need_their_marker() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let id = Digest::of(b"layer");
    // A dir named without a marker (an older store, or a torn write).
    fs::create_dir(store.layer_dir(&id)).unwrap();
    fs::write(store.layer_dir(&id).join("stale"), b"?").unwrap();
    assert!(!store.has_layer_dir(&id));
    store
        .ensure_layer_dir(&id, |d| fs::write(d.join("f"), b"fresh"))
        .unwrap();
    assert!(store.has_layer_dir(&id));
    assert!(!store.layer_dir(&id).join("stale").exists());
    assert_eq!(fs::read(store.layer_dir(&id).join("f")).unwrap(), b"fresh");
    let marker = store.layer_marker(&id).unwrap();
    assert_eq!(marker.diff_id, id);
    // Adopting again is a no-op that leaves the source to the caller.
    let src = store.root().join("tmp/src");
    fs::create_dir(&src).unwrap();
    assert!(!store.adopt_layer_dir(&id, &src, None).unwrap());
    assert!(src.is_dir());
}

/// Adopting a pull's layer dirs together (one sync, one `layers/` fsync):
/// each new dir is named with a marker naming its blob; one already
/// complete is left to the caller; a missing source fails alone, without
/// a marker, and does not stop the others.
#[test]
fn layer_dirs_adopted_together_get_their_markers() {
    use cairn_store::layer_dirs::TreeRef;
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let (a, b, done, gone) = (
        Digest::of(b"a"),
        Digest::of(b"b"),
        Digest::of(b"done"),
        Digest::of(b"gone"),
    );
    store
        .ensure_layer_dir(&done, |d| fs::write(d.join("f"), b"old"))
        .unwrap();
    let tmp = store.root().join("tmp");
    let mut batch = Vec::new();
    for (id, name) in [(a, "a"), (done, "done"), (b, "b")] {
        let src = tmp.join(name);
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), name).unwrap();
        batch.push((id, src, TreeRef::Blob(Digest::of(name.as_bytes()))));
    }
    batch.push((gone, tmp.join("missing"), TreeRef::Blob(Digest::of(b"x"))));
    let results = store.adopt_layer_dirs(&batch).unwrap();
    assert!(matches!(results[0], Ok(true)));
    assert!(matches!(results[1], Ok(false)), "already complete");
    assert!(matches!(results[2], Ok(true)));
    assert!(results[3].is_err(), "a missing source is an error");
    for (id, name) in [(a, "a"), (b, "b")] {
        assert!(store.has_layer_dir(&id));
        assert_eq!(
            fs::read(store.layer_dir(&id).join("f")).unwrap(),
            name.as_bytes()
        );
        let marker = store.layer_marker(&id).unwrap();
        assert_eq!(marker.diff_id, id);
        assert_eq!(marker.blob, Some(Digest::of(name.as_bytes())));
    }
    assert_eq!(fs::read(store.layer_dir(&done).join("f")).unwrap(), b"old");
    assert!(tmp.join("done").is_dir(), "left for the caller to remove");
    assert!(!store.has_layer_dir(&gone));
    // Nothing of the markers is left in tmp/ but the dir not adopted.
    let left: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec!["done".to_string()]);
}

/// `fsck --full` re-reads each layer dir: a truncated file is found.
#[test]
fn fsck_full_finds_a_truncated_file() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let id = Digest::of(b"some layer");
    let src = store.root().join("tmp/filled");
    fs::create_dir_all(src.join("usr/bin")).unwrap();
    fs::write(src.join("usr/bin/tool"), vec![7u8; 100_000]).unwrap();
    let tree = cairn_store::gc::LayerVerifier::tree_digest(&PlainVerifier, &src).unwrap();
    assert!(store.adopt_layer_dir(&id, &src, Some(tree)).unwrap());
    assert!(store.fsck_full(&PlainVerifier).unwrap().is_empty());
    let f = fs::OpenOptions::new()
        .write(true)
        .open(store.layer_dir(&id).join("usr/bin/tool"))
        .unwrap();
    f.set_len(50_000).unwrap();
    drop(f);
    assert!(
        store.fsck().unwrap().is_empty(),
        "the quick fsck reads no layer data"
    );
    let bad = store.fsck_full(&PlainVerifier).unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains(&id.hex()) && bad[0].contains("changed"),
        "{bad:?}"
    );
}

/// A remover that fails its first `fail` calls: an interrupted GC.
struct Flaky {
    fail: Cell<usize>,
}

impl TreeRemover for Flaky {
    fn remove_tree(&self, path: &Path) -> Result<(), String> {
        if self.fail.get() > 0 {
            self.fail.set(self.fail.get() - 1);
            return Err("interrupted".into());
        }
        PlainRemover.remove_tree(path)
    }
}

#[test]
fn gc_resumes_after_an_interruption_and_clears_tmp() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    let ids: Vec<Digest> = (0..3u8).map(|i| Digest::of(&[i])).collect();
    {
        let store = Store::open(&root).unwrap();
        for id in &ids {
            store
                .ensure_layer_dir(id, |d| fs::write(d.join("f"), b"x"))
                .unwrap();
        }
        // Stale entries of killed processes.
        fs::create_dir_all(root.join("tmp/layer-killed/sub")).unwrap();
        fs::write(root.join("tmp/blob-killed"), b"half").unwrap();
    }
    let store = Store::open_exclusive(&root).unwrap();
    // Nothing reaches the layers. The first run fails on its first tree.
    let flaky = Flaky { fail: Cell::new(1) };
    assert!(store.gc_with(None, &flaky).is_err());
    for id in &ids {
        assert!(
            !store.has_layer_dir(id),
            "no layer looks complete after the failed run"
        );
    }
    // The next run finishes the job.
    store.gc_with(None, &flaky).unwrap();
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert!(store.fsck().unwrap().is_empty());
}

mod archives {
    use cairn_layer::{ExtractLimits, LimitKind};
    use cairn_store::transport::Transport;
    use cairn_store::{Store, StoreError};
    use std::path::Path;

    fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    fn import(store: &Store, file: &Path, limits: &ExtractLimits) -> StoreError {
        let src = Transport::parse(&format!("oci-archive:{}", file.display())).unwrap();
        store.import_with_limits(&src, None, limits).unwrap_err()
    }

    fn kind_of(e: &StoreError) -> Option<LimitKind> {
        match e {
            StoreError::ArchiveLimit { exceeded, .. } => Some(exceeded.kind),
            _ => None,
        }
    }

    /// An entry declaring more than the cap is refused from its header, not
    /// streamed into the store; too many entries and an oversized PAX header
    /// are refused too; each error is bad input naming the archive.
    #[test]
    fn archive_import_caps() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("store")).unwrap();
        let hex = "a".repeat(64);

        let huge = t.path().join("huge.tar");
        let mut out = header(
            &format!("blobs/sha256/{hex}"),
            tar::EntryType::Regular,
            200 << 30,
        )
        .as_bytes()
        .to_vec();
        out.extend(vec![0u8; 4096]);
        std::fs::write(&huge, &out).unwrap();
        let small = ExtractLimits {
            max_size: Some(1 << 30),
            ..ExtractLimits::default()
        };
        let e = import(&store, &huge, &small);
        assert_eq!(kind_of(&e), Some(LimitKind::Size), "{e}");
        assert!(
            e.is_bad_input() && e.to_string().contains("huge.tar"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
            0
        );

        let many = t.path().join("many.tar");
        let mut out = Vec::new();
        for _ in 0..10 {
            out.extend_from_slice(header("blobs/", tar::EntryType::Directory, 0).as_bytes());
        }
        out.extend(vec![0u8; 1024]);
        std::fs::write(&many, &out).unwrap();
        let few = ExtractLimits {
            max_entries: Some(5),
            ..ExtractLimits::default()
        };
        assert_eq!(
            kind_of(&import(&store, &many, &few)),
            Some(LimitKind::Entries)
        );

        let pax = t.path().join("pax.tar");
        let body = format!(
            "{} comment={}\n",
            2 * 1024 * 1024 + 20,
            "x".repeat(2 * 1024 * 1024 + 8)
        );
        let mut out = header("PaxHeader", tar::EntryType::XHeader, body.len() as u64)
            .as_bytes()
            .to_vec();
        out.extend_from_slice(body.as_bytes());
        out.extend(vec![0u8; (512 - body.len() % 512) % 512]);
        out.extend_from_slice(header("oci-layout", tar::EntryType::Regular, 0).as_bytes());
        out.extend(vec![0u8; 1024]);
        std::fs::write(&pax, &out).unwrap();
        let e = import(&store, &pax, &ExtractLimits::default());
        assert_eq!(kind_of(&e), Some(LimitKind::HeaderSize), "{e}");
    }
}
