//! Hostile deep trees on the capture side: a tree deeper than one syscall's
//! PATH_MAX (as a RUN's `mkdir d && cd d` loop makes) is committed from
//! every diff source (a whole tree, an overlay upper dir, a before/after
//! compare) and reads back whole; the walk holds a bounded number of
//! descriptors however deep it goes; a tree past the product's depth limit
//! ([`cairn_layer::MAX_TREE_DEPTH`]) is refused with a typed error naming
//! the entry.

mod common;

use cairn_layer::{
    extract_layer, write_layer, Compression, DiffSource, ExtractOptions, IdMap, LayerError,
    LayerOptions, LimitKind, OverlayFlavour, WhiteoutMode, MAX_TREE_DEPTH,
};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

/// The capture runs on a thread with this stack: far less than a
/// recursion per level of a 4,096-level tree needs.
const SMALL_STACK: usize = 256 << 10;

/// Levels past PATH_MAX: 4,200 bytes of path.
const LEVELS: usize = 2100;

fn c(s: &[u8]) -> CString {
    CString::new(s).unwrap()
}

fn check(r: libc::c_int, what: &str) -> libc::c_int {
    assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
    r
}

/// `d/d/.../d` (`levels` dirs) below `root`, made one level at a time
/// relative to the parent's descriptor; returns the bottom dir, open.
fn make_deep(root: &Path, levels: usize) -> OwnedFd {
    let mut cur = OwnedFd::from(std::fs::File::open(root).unwrap());
    for _ in 0..levels {
        let d = c(b"d");
        check(
            unsafe { libc::mkdirat(cur.as_raw_fd(), d.as_ptr(), 0o755) },
            "mkdirat",
        );
        let fd = check(
            unsafe {
                libc::openat(
                    cur.as_raw_fd(),
                    d.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )
            },
            "openat",
        );
        cur = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    cur
}

/// The deep tree the tests commit: a file, a symlink and an xattr at the
/// bottom of [`LEVELS`] dirs, and a plain file beside the top.
fn make_tree(root: &Path) {
    std::fs::write(root.join("top"), b"top").unwrap();
    let bottom = make_deep(root, LEVELS);
    let f = c(b"f");
    let fd = check(
        unsafe {
            libc::openat(
                bottom.as_raw_fd(),
                f.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT,
                0o640,
            )
        },
        "create f",
    );
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut file, b"deep").unwrap();
    check(
        unsafe { libc::symlinkat(c(b"../..").as_ptr(), bottom.as_raw_fd(), c(b"up").as_ptr()) },
        "symlinkat",
    );
    let (name, value) = (c(b"user.deep"), b"1");
    check(
        unsafe {
            libc::fsetxattr(
                bottom.as_raw_fd(),
                name.as_ptr(),
                value.as_ptr().cast(),
                1,
                0,
            )
        },
        "fsetxattr",
    );
}

fn bottom(name: &str) -> String {
    format!("{}{name}", "d/".repeat(LEVELS))
}

fn layer_opts() -> LayerOptions {
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    LayerOptions {
        compression: Compression::None,
        id_map: IdMap::rootless(uid, gid, uid, gid, 1),
        ..LayerOptions::default()
    }
}

/// `write_layer` of `source` on a small stack.
fn commit(
    source: impl FnOnce() -> DiffSource<'static> + Send + 'static,
) -> Result<Vec<u8>, LayerError> {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || {
            let mut blob = Vec::new();
            write_layer(source(), &layer_opts(), &mut blob).map(|_| blob)
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Read `rel` below `root` one component at a time.
fn read_deep(root: &Path, rel: &str) -> String {
    let mut cur = std::fs::File::open(root).unwrap();
    for comp in rel.split('/') {
        let name = c(comp.as_bytes());
        let fd = check(
            unsafe { libc::openat(cur.as_raw_fd(), name.as_ptr(), libc::O_RDONLY) },
            rel,
        );
        cur = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut s = String::new();
    cur.read_to_string(&mut s).unwrap();
    s
}

/// The blob holds the whole tree (checked by the tar crate and by GNU tar)
/// and our extractor makes it again.
fn assert_holds_the_tree(blob: &[u8], what: &str) {
    let entries = common::list_entries(blob);
    let dirs = entries.iter().filter(|e| e.kind == '5').count();
    assert_eq!(dirs, LEVELS, "{what}: directories");
    let f = entries.iter().find(|e| e.path == bottom("f"));
    assert!(
        f.is_some_and(|e| e.size == 4 && e.mode == 0o640),
        "{what}: f"
    );
    let up = entries.iter().find(|e| e.path == bottom("up"));
    assert_eq!(up.and_then(|e| e.link.as_deref()), Some("../.."), "{what}");
    assert!(entries.iter().any(|e| e.path == "top"), "{what}: top");

    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("layer.tar");
    std::fs::write(&tar, blob).unwrap();
    let out = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.lines().any(|l| l == bottom("f")), "{what}: GNU tar");

    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let opts = ExtractOptions {
        whiteout_mode: WhiteoutMode::Apply,
        id_map: IdMap::rootless(uid, gid, uid, gid, 1),
        unprivileged: true,
        ..ExtractOptions::default()
    };
    extract_layer(blob, &dest, &opts).unwrap();
    assert_eq!(read_deep(&dest, &bottom("f")), "deep", "{what}");
}

fn leak(p: &Path) -> &'static Path {
    Box::leak(p.to_path_buf().into_boxed_path())
}

#[test]
fn a_tree_deeper_than_path_max_commits_from_every_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = leak(&tmp.path().join("src"));
    let empty = leak(&tmp.path().join("empty"));
    std::fs::create_dir(src).unwrap();
    std::fs::create_dir(empty).unwrap();
    make_tree(src);

    let full = commit(move || DiffSource::Full(src)).unwrap();
    assert_holds_the_tree(&full, "full");
    assert!(
        common::list_entries(&full)
            .iter()
            .any(|e| e.path.trim_end_matches('/') == bottom("").trim_end_matches('/')),
        "the bottom dir"
    );
    let upper = commit(move || DiffSource::OverlayUpper {
        upper: src,
        flavour: OverlayFlavour::UserXattr,
    })
    .unwrap();
    assert_eq!(
        upper, full,
        "an upper dir without whiteouts is the full tree"
    );
    let compared = commit(move || DiffSource::Compare {
        lower: Box::leak(Box::new([empty])),
        upper_tree: src,
    })
    .unwrap();
    assert_holds_the_tree(&compared, "compare");
}

#[test]
fn a_tree_past_the_depth_limit_is_refused_naming_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let src = leak(&tmp.path().join("src"));
    std::fs::create_dir(src).unwrap();
    let bottom = make_deep(src, MAX_TREE_DEPTH);
    check(
        unsafe { libc::mkdirat(bottom.as_raw_fd(), c(b"x").as_ptr(), 0o755) },
        "mkdirat",
    );
    drop(bottom);
    for source in ["full", "upper"] {
        let got = commit(move || match source {
            "full" => DiffSource::Full(src),
            _ => DiffSource::OverlayUpper {
                upper: src,
                flavour: OverlayFlavour::UserXattr,
            },
        });
        match got {
            Err(LayerError::Limit(l)) => {
                assert_eq!((l.kind, l.limit), (LimitKind::Depth, MAX_TREE_DEPTH as u64));
                let want = format!("{}x", "d/".repeat(MAX_TREE_DEPTH));
                assert_eq!(l.entry.as_deref(), Some(want.as_str()), "{source}");
                let shown = LayerError::Limit(l).to_string();
                assert!(shown.contains("4096 nested directories"), "{shown}");
            }
            other => panic!(
                "{source}: expected the depth limit, got {:?}",
                other.map(|b| b.len())
            ),
        }
    }
}

/// Set in the child the next test starts under a low descriptor limit.
const CHILD: &str = "CAIRN_DEEP_CAPTURE_CHILD";

/// A tree at the depth limit (a file 4,096 levels down, below 4,095
/// dirs) commits with 128 descriptors (a
/// rootless caller may have 1,024; a walk holding one per level would
/// need 4,096). The limit is set on a child run of this test (`prlimit`),
/// never on the test harness's own process.
#[test]
fn a_tree_at_the_depth_limit_commits_with_few_descriptors() {
    if std::env::var_os(CHILD).is_none() {
        let out = Command::new("prlimit")
            .arg("--nofile=128:128")
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_tree_at_the_depth_limit_commits_with_few_descriptors",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let all = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{all}");
        assert!(all.contains("1 passed"), "the child ran the test: {all}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = leak(&tmp.path().join("src"));
    std::fs::create_dir(src).unwrap();
    let bottom = make_deep(src, MAX_TREE_DEPTH - 1);
    let f = check(
        unsafe {
            libc::openat(
                bottom.as_raw_fd(),
                c(b"f").as_ptr(),
                libc::O_WRONLY | libc::O_CREAT,
                0o644,
            )
        },
        "create f",
    );
    drop(unsafe { OwnedFd::from_raw_fd(f) });
    drop(bottom);
    let blob = commit(move || DiffSource::Full(src)).unwrap();
    let entries = common::list_entries(&blob);
    assert_eq!(entries.len(), MAX_TREE_DEPTH);
    let f = format!("{}f", "d/".repeat(MAX_TREE_DEPTH - 1));
    assert!(entries.last().is_some_and(|e| e.path == f), "the file");
}
