//! The recorded-scan path of the sources digest against the digest made
//! without any memo: every kind of change must reach the digest.

use super::Context;
use crate::memo::HashMemo;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

/// One "build": a fresh memo and context over `root`, its digest of
/// `src`, whether it listed the entries, and the same digest without a
/// memo (the truth).
fn build(store: &Path, root: &Path, src: &str) -> (String, bool, String) {
    let canonical = std::fs::canonicalize(root).unwrap();
    let memo = Arc::new(HashMemo::load(
        store.join("context-hashes"),
        store.to_path_buf(),
        Some(&canonical),
    ));
    let context = Context::open(root, None).unwrap();
    let truth = context.digest_sources(&[src.to_string()]).unwrap();
    let context = context.with_memo(memo.clone());
    let mut heard = 0;
    let (digest, listed) = context
        .digest_sources_or_listing(&[src.to_string()], &|_, _| true, &mut |_, _| heard += 1)
        .unwrap();
    assert_eq!(listed, heard > 0, "the bool tells whether `each` heard");
    memo.save();
    (digest, listed, truth)
}

fn age(path: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(old).unwrap();
}

#[test]
fn a_recorded_scan_serves_only_an_unchanged_context() {
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("t/sub")).unwrap();
    for (f, text) in [
        ("t/a", "a"),
        ("t/b", "bb"),
        ("t/sub/c", "c"),
        ("t/gone", "g"),
    ] {
        std::fs::write(root.join(f), text).unwrap();
        age(&root.join(f));
    }
    std::fs::write(root.join(".dockerignore"), "t/ignored\n").unwrap();
    std::fs::write(root.join("t/ignored"), "i").unwrap();
    // Settled: every file's ctime a racy window older than the scan.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let (first, listed, truth) = build(store.path(), root, "t");
    assert!(listed, "nothing recorded yet");
    assert_eq!(first, truth);
    let (again, listed, _) = build(store.path(), root, "t");
    assert!(!listed, "an unchanged settled scan is served whole");
    assert_eq!(again, first);

    // Each change, then a build: never served from the record, always
    // the truth. (After a change the files are racy again, so nothing
    // new is recorded; the old record must simply not match.)
    type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let changes: Vec<Change> = vec![
        (
            "same size, same mtime, new content",
            Box::new(|| {
                let p = root.join("t/a");
                let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
                std::fs::write(&p, "z").unwrap();
                let f = std::fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(mtime).unwrap();
            }),
        ),
        (
            "mode",
            Box::new(|| {
                std::fs::set_permissions(root.join("t/b"), std::fs::Permissions::from_mode(0o755))
                    .unwrap()
            }),
        ),
        (
            "new file",
            Box::new(|| std::fs::write(root.join("t/sub/new"), "n").unwrap()),
        ),
        (
            "deleted file",
            Box::new(|| std::fs::remove_file(root.join("t/gone")).unwrap()),
        ),
        (
            "file replaced by a symlink",
            Box::new(|| {
                std::fs::remove_file(root.join("t/sub/c")).unwrap();
                std::os::unix::fs::symlink("../a", root.join("t/sub/c")).unwrap();
            }),
        ),
        (
            "symlink retargeted",
            Box::new(|| {
                std::fs::remove_file(root.join("t/sub/c")).unwrap();
                std::os::unix::fs::symlink("../b", root.join("t/sub/c")).unwrap();
            }),
        ),
        (
            ".dockerignore",
            Box::new(|| std::fs::write(root.join(".dockerignore"), "t/b\n").unwrap()),
        ),
        (
            "rename",
            Box::new(|| std::fs::rename(root.join("t/a"), root.join("t/a2")).unwrap()),
        ),
    ];
    let mut seen = vec![first];
    for (what, change) in changes {
        change();
        let (digest, listed, truth) = build(store.path(), root, "t");
        assert!(listed, "{what}: served from the record");
        assert_eq!(digest, truth, "{what}");
        assert!(!seen.contains(&digest), "{what}: the digest did not move");
        seen.push(digest);
    }
}

#[test]
fn a_racy_scan_is_not_recorded() {
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fresh"), "x").unwrap();
    for _ in 0..2 {
        let (digest, listed, truth) = build(store.path(), dir.path(), "fresh");
        assert!(
            listed,
            "a file written just now is never served by a record"
        );
        assert_eq!(digest, truth);
    }
}

#[test]
fn a_corrupt_scan_record_file_is_ignored() {
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    age(&file);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (first, _, _) = build(store.path(), dir.path(), "f");
    let records = store.path().join("context-scans");
    let text = std::fs::read_to_string(&records).unwrap();
    // A record whose digest was tampered with is still a record (the
    // file is the store's own, like the memo); a truncated or garbled
    // one is not, and costs only the listing.
    for bad in [&text[..text.len() / 2], "garbage", "\u{0}\u{ff}"] {
        std::fs::write(&records, bad).unwrap();
        let (digest, listed, truth) = build(store.path(), dir.path(), "f");
        assert!(listed, "{bad:?}");
        assert_eq!(digest, truth);
        assert_eq!(digest, first);
    }
}

/// The sources digest of a fixed tree is the literal DESIGN.md's rule
/// gives (path, NUL, mode with type, size + content sha256 or link
/// target, NUL; walk order), computed apart from this code: a store
/// built by an earlier Cairn keeps hitting its cache.
#[test]
fn the_sources_digest_of_a_fixed_tree_is_unchanged() {
    use std::fs::{set_permissions, Permissions};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("g/s")).unwrap();
    std::fs::write(root.join("g/a"), "alpha\n").unwrap();
    std::fs::write(root.join("g/s/x"), "").unwrap();
    std::os::unix::fs::symlink("a", root.join("g/l")).unwrap();
    for (p, mode) in [
        ("g", 0o755),
        ("g/a", 0o644),
        ("g/s", 0o700),
        ("g/s/x", 0o600),
    ] {
        set_permissions(root.join(p), Permissions::from_mode(mode)).unwrap();
    }
    let context = Context::open(root, None).unwrap();
    let want = "b98cf9e099c6b5955af1a0cc4cfc4bbc120eda464c68864dca3867c7acf42387";
    assert_eq!(context.digest_sources(&["g".to_string()]).unwrap(), want);
}
