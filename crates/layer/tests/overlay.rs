//! Diff capture from real overlayfs upper dirs (trusted.* as root, userxattr
//! inside `unshare -Urm`), and the compare fallback against the same change.

mod common;

use cairn_layer::{
    extract_layer, write_layer, Compression, DiffSource, ExtractOptions, LayerOptions,
    OverlayFlavour, WhiteoutMode,
};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The change every test makes in the merged view.
const SIMPLE_CHANGE: &str = "echo new > added && echo more >> mod.txt && rm deleted.txt && \
     mkdir -p newdir/sub && echo s > newdir/sub/s && ln -s mod.txt newlink && chmod 600 chmodded && \
     rm -rf gone-dir";
const RECREATE_DIR: &str = "rm -rf dir && mkdir dir && echo n > dir/new";

struct Dirs {
    _tmp: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

fn setup() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| {
        let p = tmp.path().join(n);
        std::fs::create_dir(&p).unwrap();
        p
    };
    let (lower, upper, work, merged) = (d("lower"), d("upper"), d("work"), d("merged"));
    std::fs::write(lower.join("mod.txt"), b"base\n").unwrap();
    std::fs::write(lower.join("deleted.txt"), b"bye\n").unwrap();
    std::fs::write(lower.join("chmodded"), b"c").unwrap();
    std::fs::create_dir_all(lower.join("dir/sub")).unwrap();
    std::fs::write(lower.join("dir/a"), b"a").unwrap();
    std::fs::write(lower.join("dir/sub/c"), b"c").unwrap();
    std::fs::create_dir_all(lower.join("gone-dir/x")).unwrap();
    std::fs::write(lower.join("gone-dir/x/y"), b"y").unwrap();
    std::fs::create_dir(lower.join("keep")).unwrap();
    std::fs::write(lower.join("keep/untouched"), b"u").unwrap();
    set_times(&lower, 1_600_000_000);
    Dirs {
        _tmp: tmp,
        lower,
        upper,
        work,
        merged,
    }
}

fn mount_opts(d: &Dirs, extra: &str) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}{extra}",
        d.lower.display(),
        d.upper.display(),
        d.work.display()
    )
}

/// Mount as real root, run `change` in the merged dir, run `inspect` while
/// mounted, unmount.
fn with_root_overlay<T>(d: &Dirs, change: &str, inspect: impl FnOnce() -> T) -> T {
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &mount_opts(d, "")])
        .arg(&d.merged));
    let r = Command::new("sh")
        .arg("-ec")
        .arg(change)
        .current_dir(&d.merged)
        .output()
        .unwrap();
    let out = inspect();
    run(Command::new("umount").arg(&d.merged));
    assert!(
        r.status.success(),
        "change failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    out
}

fn layer(source: DiffSource<'_>) -> Vec<u8> {
    let mut blob = Vec::new();
    let opts = LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    };
    write_layer(source, &opts, &mut blob).unwrap();
    blob
}

fn find<'a>(entries: &'a [TarEntry], path: &str) -> &'a TarEntry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry {path} in {:#?}", paths(entries)))
}

fn check_change_entries(entries: &[TarEntry], recreated: bool) {
    let p = paths(entries);
    for want in [
        "added",
        "mod.txt",
        ".wh.deleted.txt",
        "newdir/",
        "newdir/sub/",
        "newdir/sub/s",
        "newlink",
        "chmodded",
        ".wh.gone-dir",
    ] {
        assert!(p.contains(&want.to_string()), "missing {want} in {p:#?}");
    }
    assert!(
        !p.iter().any(|x| x.starts_with("keep")),
        "untouched dir captured: {p:#?}"
    );
    assert!(
        !p.iter().any(|x| x.starts_with("gone-dir/")),
        "children of a deleted dir: {p:#?}"
    );
    let wh = find(entries, ".wh.deleted.txt");
    assert_eq!((wh.kind, wh.size, wh.mode), ('0', 0, 0));
    assert_eq!(find(entries, "chmodded").mode, 0o600);
    assert_eq!(find(entries, "newlink").link.as_deref(), Some("mod.txt"));
    if recreated {
        let dir = p.iter().position(|x| x == "dir/").unwrap();
        assert_eq!(
            p[dir + 1],
            "dir/.wh..wh..opq",
            "opaque marker right after its dir"
        );
        assert!(p.contains(&"dir/new".to_string()));
        assert!(!p.iter().any(|x| x == "dir/a" || x.starts_with("dir/sub")));
    }
}

/// Extract `lower` as a base, then apply `diff` on top: the flattened result.
fn apply(base: &Path, diff: &[u8], dest: &Path) -> std::collections::BTreeMap<String, FileFacts> {
    let opts = ExtractOptions {
        whiteout_mode: WhiteoutMode::Apply,
        ..ExtractOptions::default()
    };
    std::fs::create_dir_all(dest).unwrap();
    extract_layer(&layer(DiffSource::Full(base))[..], dest, &opts).unwrap();
    extract_layer(diff, dest, &opts).unwrap();
    snapshot(
        dest,
        &SnapOpts {
            mtimes: false,
            owners: true,
            xattrs: false,
        },
    )
}

#[test]
fn root_overlay_upper_capture_and_compare_fallback_agree() {
    if !is_root() {
        eprintln!("SKIP root_overlay_upper_capture_and_compare_fallback_agree: needs root for a trusted.* overlay");
        return;
    }
    let d = setup();
    let compare_blob = with_root_overlay(&d, SIMPLE_CHANGE, || {
        layer(DiffSource::Compare {
            lower: &[&d.lower],
            upper_tree: &d.merged,
        })
    });
    let upper_blob = layer(DiffSource::OverlayUpper {
        upper: &d.upper,
        flavour: OverlayFlavour::Trusted,
    });
    let upper_entries = list_entries(&upper_blob);
    check_change_entries(&upper_entries, false);
    assert_eq!(
        upper_entries,
        list_entries(&compare_blob),
        "compare fallback == overlay capture"
    );
    assert_eq!(upper_blob, compare_blob, "byte for byte");
}

#[test]
fn root_overlay_opaque_dir_and_flattened_result_matches_merged() {
    if !is_root() {
        eprintln!("SKIP root_overlay_opaque_dir_and_flattened_result_matches_merged: needs root");
        return;
    }
    let d = setup();
    let change = format!("{SIMPLE_CHANGE} && {RECREATE_DIR}");
    let (merged, compare_blob) = with_root_overlay(&d, &change, || {
        (
            snapshot(
                &d.merged,
                &SnapOpts {
                    mtimes: false,
                    owners: true,
                    xattrs: false,
                },
            ),
            layer(DiffSource::Compare {
                lower: &[&d.lower],
                upper_tree: &d.merged,
            }),
        )
    });
    assert!(common::list_xattrs(&d.upper.join("dir"))
        .iter()
        .any(|(k, v)| k == "trusted.overlay.opaque" && v == b"y"));
    let upper_blob = layer(DiffSource::OverlayUpper {
        upper: &d.upper,
        flavour: OverlayFlavour::Trusted,
    });
    check_change_entries(&list_entries(&upper_blob), true);
    let tmp = tempfile::tempdir().unwrap();
    assert_same_tree(
        &merged,
        &apply(&d.lower, &upper_blob, &tmp.path().join("a")),
    );
    assert_same_tree(
        &merged,
        &apply(&d.lower, &compare_blob, &tmp.path().join("b")),
    );

    // Overlay form: extract base and diff as separate lowerdirs, mount them,
    // and the mount shows the merged tree again.
    let base_dir = tmp.path().join("l0");
    let diff_dir = tmp.path().join("l1");
    let view = tmp.path().join("view");
    for p in [&base_dir, &diff_dir, &view] {
        std::fs::create_dir(p).unwrap();
    }
    let ov = ExtractOptions {
        whiteout_mode: WhiteoutMode::Overlay(OverlayFlavour::Trusted),
        ..ExtractOptions::default()
    };
    extract_layer(&layer(DiffSource::Full(&d.lower))[..], &base_dir, &ov).unwrap();
    extract_layer(&upper_blob[..], &diff_dir, &ov).unwrap();
    let lowers = format!("lowerdir={}:{}", diff_dir.display(), base_dir.display());
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &lowers])
        .arg(&view));
    let seen = snapshot(
        &view,
        &SnapOpts {
            mtimes: false,
            owners: true,
            xattrs: false,
        },
    );
    run(Command::new("umount").arg(&view));
    assert_same_tree(&merged, &seen);
}

#[test]
fn userns_overlay_userxattr_capture() {
    if !is_root() {
        // unshare -Urm works unprivileged too, but the test reads the upper dir as its owner.
        eprintln!("SKIP userns_overlay_userxattr_capture: run as root (owner of the dirs)");
        return;
    }
    let d = setup();
    let script = format!(
        "mount -t overlay overlay -o {} {m} && cd {m} && {SIMPLE_CHANGE} && {RECREATE_DIR} && cd / && umount {m}",
        mount_opts(&d, ",userxattr"),
        m = d.merged.display()
    );
    let out = Command::new("unshare")
        .args(["-Urm", "sh", "-ec", &script])
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        panic!("overlay in a user namespace failed: {err}");
    }
    assert!(common::list_xattrs(&d.upper.join("dir"))
        .iter()
        .any(|(k, v)| k == "user.overlay.opaque" && v == b"y"));
    let blob = layer(DiffSource::OverlayUpper {
        upper: &d.upper,
        flavour: OverlayFlavour::UserXattr,
    });
    let entries = list_entries(&blob);
    check_change_entries(&entries, true);
    // No overlay xattrs leak into the layer.
    let raw = blob.clone();
    assert!(
        !raw.windows(13).any(|w| w == b"user.overlay."),
        "user.overlay.* xattr in the layer"
    );
}

#[test]
fn redirect_dir_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("moved")).unwrap();
    set_xattr(&tmp.path().join("moved"), "user.overlay.redirect", b"/orig");
    let err = write_layer(
        DiffSource::OverlayUpper {
            upper: tmp.path(),
            flavour: OverlayFlavour::UserXattr,
        },
        &LayerOptions::default(),
        Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("redirect_dir") && err.contains("moved"),
        "{err}"
    );
}

#[test]
fn compare_merges_a_stack_of_overlay_form_lowers() {
    if !is_root() {
        eprintln!(
            "SKIP compare_merges_a_stack_of_overlay_form_lowers: needs root for whiteout devices"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (l0, l1, after) = (
        tmp.path().join("l0"),
        tmp.path().join("l1"),
        tmp.path().join("after"),
    );
    for p in [&l0, &l1, &after] {
        std::fs::create_dir(p).unwrap();
    }
    // Bottom layer: a, d/x, keep. Top layer (overlay form): a deleted, d opaque with d/y.
    std::fs::write(l0.join("a"), b"a").unwrap();
    std::fs::create_dir(l0.join("d")).unwrap();
    std::fs::write(l0.join("d/x"), b"x").unwrap();
    std::fs::write(l0.join("keep"), b"k").unwrap();
    mknod(&l1.join("a"), libc::S_IFCHR, 0);
    std::fs::create_dir(l1.join("d")).unwrap();
    set_xattr(&l1.join("d"), "user.overlay.opaque", b"y");
    std::fs::write(l1.join("d/y"), b"y").unwrap();
    // The tree after the change: what the stack shows, minus d/y, plus new.
    std::fs::create_dir(after.join("d")).unwrap();
    std::fs::write(after.join("keep"), b"k").unwrap();
    std::fs::write(after.join("new"), b"n").unwrap();
    for p in [&l0, &l1, &after] {
        set_times(p, 1_600_000_000);
    }
    let blob = layer(DiffSource::Compare {
        lower: &[&l1, &l0],
        upper_tree: &after,
    });
    let p = paths(&list_entries(&blob));
    // d is written as the parent of its whiteout; a, d/x (hidden by the
    // stack) and keep (unchanged) are not.
    assert!(p.contains(&"d/".to_string()), "{p:?}");
    assert!(p.contains(&"new".to_string()), "{p:?}");
    assert!(p.contains(&"d/.wh.y".to_string()), "{p:?}");
    assert!(
        !p.iter()
            .any(|x| x == ".wh.a" || x == "d/.wh.x" || x == "keep"),
        "{p:?}"
    );
}
