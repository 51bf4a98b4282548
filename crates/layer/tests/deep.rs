//! Hostile deep trees in a layer: a tree deeper than one syscall's PATH_MAX
//! extracts (every lookup is relative to a parent's descriptor), a whiteout
//! removes it without a recursion as deep as the tree, and a path past the
//! product's depth limit ([`cairn_layer::MAX_TREE_DEPTH`]) is refused with a
//! typed error naming it, before anything is written.

mod common;

use cairn_layer::{
    extract_layer, ExtractOptions, IdMap, LayerError, LimitKind, OverlayFlavour, WhiteoutMode,
    MAX_TREE_DEPTH,
};
use common::RawTar;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The extraction runs on a thread with this stack: far less than a
/// recursion per level of a 4,096-level tree needs (a few hundred bytes a
/// level), so any such recursion crashes the test.
const SMALL_STACK: usize = 256 << 10;

/// `d/d/.../d` with `levels` components.
fn deep(levels: usize) -> Vec<u8> {
    vec!["d"; levels].join("/").into_bytes()
}

fn opts(mode: WhiteoutMode) -> ExtractOptions {
    // Container root is the caller (rootless runs of this test too).
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    ExtractOptions {
        whiteout_mode: mode,
        id_map: IdMap::rootless(uid, gid, uid, gid, 1),
        unprivileged: true,
        ..ExtractOptions::default()
    }
}

fn extract_on_small_stack(
    blob: Vec<u8>,
    dest: &Path,
    mode: WhiteoutMode,
) -> Result<(), LayerError> {
    let dest = dest.to_path_buf();
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || extract_layer(&blob[..], &dest, &opts(mode)).map(|_| ()))
        .unwrap()
        .join()
        .unwrap()
}

/// Read `rel` below `root` one component at a time (the path is longer
/// than one `open` takes).
fn read_deep(root: &Path, rel: &[u8]) -> std::io::Result<String> {
    let mut cur = std::fs::File::open(root)?;
    for comp in rel.split(|&b| b == b'/') {
        let c = CString::new(comp).unwrap();
        let fd = unsafe { libc::openat(cur.as_raw_fd(), c.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        cur = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut s = String::new();
    cur.read_to_string(&mut s)?;
    Ok(s)
}

#[test]
fn a_tree_deeper_than_path_max_extracts_and_a_whiteout_removes_it() {
    let levels = 2100; // 4,200 bytes of path: past PATH_MAX
    for mode in [
        WhiteoutMode::Apply,
        WhiteoutMode::Overlay(OverlayFlavour::UserXattr),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let mut t = RawTar::default();
        let mut p = Vec::new();
        for _ in 0..levels {
            p.extend_from_slice(b"d/");
            t.dir(&p);
        }
        let file = [p.as_slice(), b"f"].concat();
        t.file(&file, b"deep");
        t.hardlink(b"top-link", &file);
        t.symlink(&[p.as_slice(), b"up"].concat(), b"../../..");
        // A second tree with no directory entries: every parent implicit.
        let implicit = [b"e/".as_slice(), &deep(levels - 1), b"/f"].concat();
        t.file(&implicit, b"implicit");
        extract_on_small_stack(t.finish(), &dest, mode).unwrap();
        assert_eq!(read_deep(&dest, &file).unwrap(), "deep", "{mode:?}");
        assert_eq!(read_deep(&dest, b"top-link").unwrap(), "deep");
        assert_eq!(read_deep(&dest, &implicit).unwrap(), "implicit");

        // Whiteouts of both trees (a removal inside the layer's own dir,
        // Apply: the same loop an opaque dir's clearing uses).
        let mut w = RawTar::default();
        w.file(b".wh.d", b"").file(b".wh.e", b"");
        extract_on_small_stack(w.finish(), &dest, mode).unwrap();
        if mode == WhiteoutMode::Apply {
            assert!(!dest.join("d").exists() && !dest.join("e").exists());
        }
        // Overlay mode keeps a whiteout device where "d" was: the tree
        // itself must be gone.
        assert!(!dest.join("d/d").exists());
    }
}

#[test]
fn a_path_past_the_depth_limit_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let name = [deep(MAX_TREE_DEPTH).as_slice(), b"/f"].concat();
    let mut t = RawTar::default();
    t.file(b"before", b"x").file(&name, b"too deep");
    match extract_on_small_stack(t.finish(), &dest, WhiteoutMode::Apply) {
        Err(LayerError::Limit(l)) => {
            assert_eq!((l.kind, l.limit), (LimitKind::Depth, MAX_TREE_DEPTH as u64));
            assert!(l.entry.as_deref().is_some_and(|e| e.ends_with("d/d/f")));
            let shown = LayerError::Limit(l).to_string();
            assert!(shown.contains("4096 nested directories"), "{shown}");
        }
        other => panic!("expected the depth limit, got {other:?}"),
    }
    assert!(!dest.join("d").exists(), "nothing of the deep path is made");
}
