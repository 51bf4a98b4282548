//! The scan against std's walk and lstat (what the digest and the
//! fingerprint were made from before the scan went descriptor-relative:
//! the same values keep existing stores' cache keys), its skipping of
//! ignored dirs, and trees deeper than PATH_MAX.

use super::*;
use std::os::fd::AsFd;

/// The order and set of a walkdir walk (what the digest used before).
fn walkdir_order(root: &Path, src: &str) -> Vec<String> {
    walkdir::WalkDir::new(root.join(src))
        .sort_by_file_name()
        .into_iter()
        .map(|e| super::super::rel_of(root, e.unwrap().path()))
        .collect()
}

fn all(root: &Path, src: &str) -> Vec<Found> {
    scan(root, src, &|_| true, &|_| false).unwrap()
}

#[test]
fn scan_meets_entries_in_walkdirs_order_with_std_lstat() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["t/b", "t/a/z", "t/a/y", "t/B", "t/a.d"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // Wider than PARALLEL_STATS: that dir's names are stat'ed on the pool.
    for i in 0..600 {
        std::fs::write(root.join(format!("t/a/f{i:03}")), b"x").unwrap();
    }
    for f in [
        "t/b/1",
        "t/a/z/2",
        "t/a-",
        "t/a.d/3",
        "t/zz",
        "t/\u{e9}t\u{e9}",
    ] {
        std::fs::write(root.join(f), b"y").unwrap();
    }
    std::fs::hard_link(root.join("t/zz"), root.join("t/b/hard")).unwrap();
    std::os::unix::fs::symlink("a", root.join("t/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", root.join("t/a/dangling")).unwrap();
    for src in ["t", "", "t/a", "t/zz", "t/link"] {
        let found = all(root, src);
        let rels: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, walkdir_order(root, src), "source {src:?}");
        for f in &found {
            let lstat = std::fs::symlink_metadata(root.join(&f.rel)).unwrap();
            let want = Stat::from(&lstat);
            // `src` itself may be a followed link; everything below is lstat.
            if f.rel != src {
                assert_eq!(f.meta, want, "{}", f.rel);
            }
        }
    }
    let kept = scan(root, "t", &|rel| !rel.starts_with("t/a/"), &|_| false).unwrap();
    assert!(kept.iter().all(|f| !f.rel.starts_with("t/a/")));
    assert!(kept.iter().any(|f| f.rel == "t/b/1"), "other dirs are kept");
    let link = kept.iter().find(|f| f.rel == "t/link").unwrap();
    assert!(link.meta.is_symlink(), "lstat, not stat");
}

#[test]
fn stat_holds_what_std_metadata_gave() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"12345").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4751)).unwrap();
    let m = std::fs::symlink_metadata(&f).unwrap();
    let s = all(dir.path(), "f").remove(0).meta;
    use std::os::unix::fs::PermissionsExt;
    // The digest hashed `permissions().mode()`, the fingerprint `mode()`.
    assert_eq!(s.mode, m.permissions().mode());
    assert_eq!(s.mode, m.mode());
    assert_eq!((s.dev, s.ino, s.size, s.nlink), (m.dev(), m.ino(), 5, 1));
    assert_eq!(
        s.mtime_ns,
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
    );
    assert_eq!(
        s.ctime_ns,
        m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
    );
    assert!(s.is_file() && !s.is_dir() && !s.is_symlink());
}

#[test]
fn a_missing_source_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = scan(dir.path(), "nope", &|_| true, &|_| false)
        .err()
        .unwrap();
    assert!(err.to_string().contains("nope"), "{err}");
}

/// `levels` nested dirs `d` below `root/top`, made descriptor-relative,
/// with a file `leaf` at the bottom.
fn deep(root: &Path, top: &str, levels: usize) {
    std::fs::create_dir_all(root.join(top)).unwrap();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut fd = nix::fcntl::open(&root.join(top), flags, Mode::empty()).unwrap();
    for _ in 0..levels {
        nix::sys::stat::mkdirat(fd.as_fd(), "d", Mode::from_bits_truncate(0o755)).unwrap();
        fd = nix::fcntl::openat(fd.as_fd(), "d", flags, Mode::empty()).unwrap();
    }
    let wr = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC;
    nix::fcntl::openat(fd.as_fd(), "leaf", wr, Mode::from_bits_truncate(0o644)).unwrap();
}

#[test]
fn an_ignored_dir_is_not_entered_unless_something_below_is_re_included() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Deeper than the depth limit: entering it is an error.
    deep(root, "node_modules", cairn_layer::MAX_TREE_DEPTH + 1);
    std::fs::write(root.join("main.c"), b"int main;").unwrap();
    let rules = cairn_dockerfile::ignore::DockerIgnore::parse("node_modules\n").unwrap();
    let keep = |rel: &str| rel.is_empty() || !rules.is_excluded(rel);
    let skip = |rel: &str| !rel.is_empty() && rules.can_skip_dir(rel);
    let found = scan(root, "", &keep, &skip).unwrap();
    let rels: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
    assert_eq!(rels, ["", "main.c"]);
    // Without the skip the walk goes in, and stops at the limit naming it.
    let err = scan(root, "", &keep, &|_| false).err().unwrap().to_string();
    assert!(
        err.contains("node_modules/d/d/") && err.contains("more than 4096"),
        "{err}"
    );

    // A re-included path below: the dir is entered, the exception kept.
    std::fs::create_dir_all(root.join("vendor/keep")).unwrap();
    std::fs::write(root.join("vendor/keep/x"), b"x").unwrap();
    std::fs::write(root.join("vendor/drop"), b"x").unwrap();
    let rules = cairn_dockerfile::ignore::DockerIgnore::parse("vendor\n!vendor/keep\n").unwrap();
    let keep = |rel: &str| rel.is_empty() || !rules.is_excluded(rel);
    let skip = |rel: &str| !rel.is_empty() && rules.can_skip_dir(rel);
    let found = scan(root, "vendor", &keep, &skip).unwrap();
    let rels: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
    assert_eq!(rels, ["vendor/keep", "vendor/keep/x"]);
}

#[test]
fn a_tree_past_path_max_is_walked_and_a_kept_long_path_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    deep(root, "t", 2100);
    // Excluded, the deep part is walked (by descriptors) and left out.
    let short = |rel: &str| rel.len() < 100;
    let found = scan(root, "t", &short, &|_| false).unwrap();
    assert_eq!(found.len(), 50, "t and its first 49 levels");
    // Kept, it is refused naming the path and PATH_MAX.
    let err = scan(root, "t", &|_| true, &|_| false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!("{}/t/d/d/d", root.display())),
        "{err}"
    );
    assert!(err.contains("PATH_MAX"), "{err}");
    assert!(err.len() < 600, "the path is shortened: {err}");
}

#[test]
fn descriptors_stay_bounded_in_a_deep_and_wide_tree() {
    // Every level has two dirs (the walk must keep the level's descriptor
    // for the second): 300 levels would hold 300 descriptors without the
    // bound, and the reopened ancestors must lead to the same entries.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut path = root.join("t");
    for _ in 0..300 {
        std::fs::create_dir_all(path.join("b")).unwrap();
        path = path.join("a");
    }
    std::fs::create_dir_all(&path).unwrap();
    let found = all(root, "t");
    let rels: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
    assert_eq!(rels, walkdir_order(root, "t"));
    assert_eq!(found.len(), 1 + 300 * 2);
}
