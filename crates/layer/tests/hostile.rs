//! Hostile layers: each is rejected or contained, and nothing outside the
//! destination changes. The destination is a subdirectory of a tempdir that
//! also holds victim files; the whole tempdir minus the destination is
//! compared before and after.
//!
//! `CAIRN_WRITE_CORPUS=DIR cargo test -p cairn-layer --test hostile` also
//! writes every case to DIR (seeds for the fuzz target).

mod common;

use cairn_layer::{
    extract_layer, ExtractLimits, ExtractOptions, LayerError, LimitKind, OverlayFlavour,
    WhiteoutMode,
};
use common::*;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Reject,
    Contained,
}

struct Case {
    name: &'static str,
    blob: Vec<u8>,
    expect: Expect,
    /// Extra check on the destination after a contained extraction.
    check: Option<fn(&Path)>,
}

fn case(name: &'static str, expect: Expect, blob: Vec<u8>) -> Case {
    Case {
        name,
        blob,
        expect,
        check: None,
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn cases(outside: &Path) -> Vec<Case> {
    let out = outside.to_str().unwrap().as_bytes().to_vec();
    let victim = [out.as_slice(), b"/victim"].concat();
    let victim_dir = [out.as_slice(), b"/victim-dir"].concat();
    let t = || RawTar::default();
    let mut v = vec![
        case(
            "dotdot-traversal",
            Expect::Reject,
            t().file(b"../../x", b"pwned").finish(),
        ),
        case(
            "dotdot-to-victim",
            Expect::Reject,
            t().file(b"../victim", b"pwned").finish(),
        ),
        Case {
            check: Some(|d| assert!(d.join("etc/x").is_file(), "absolute name lands inside")),
            ..case(
                "absolute-name",
                Expect::Contained,
                t().file(b"/etc/x", b"inside").finish(),
            )
        },
        case(
            "symlink-to-root-then-write-through",
            Expect::Contained,
            t().symlink(b"evil", b"/")
                .file(b"evil/victim", b"pwned")
                .file(&[b"evil".as_slice(), &victim].concat(), b"pwned")
                .finish(),
        ),
        case(
            "symlink-to-dotdot-then-write-through",
            Expect::Contained,
            t().symlink(b"up", b"..")
                .file(b"up/victim", b"pwned")
                .finish(),
        ),
        case(
            "symlink-chain-out",
            Expect::Contained,
            t().dir(b"a/")
                .symlink(b"a/l1", b"../l2")
                .symlink(b"l2", b"a/../../..")
                .file(b"a/l1/victim", b"pwned")
                .finish(),
        ),
        // The link resolves inside dest, where the dir does not exist: an error.
        case(
            "absolute-symlink-to-victim-dir-then-write",
            Expect::Reject,
            t().symlink(b"vd", &victim_dir)
                .file(b"vd/file", b"pwned")
                .file(b"vd/new", b"pwned")
                .finish(),
        ),
        case(
            "symlink-then-same-name-file-replaces-link",
            Expect::Contained,
            t().symlink(b"x", &victim).file(b"x", b"pwned").finish(),
        ),
        case(
            "relative-symlink-then-same-name-file",
            Expect::Contained,
            t().symlink(b"x", b"../victim")
                .file(b"x", b"pwned")
                .finish(),
        ),
        case(
            "hardlink-to-etc-passwd",
            Expect::Reject,
            t().hardlink(b"pw", b"/etc/passwd").finish(),
        ),
        case(
            "hardlink-to-victim-absolute",
            Expect::Reject,
            t().hardlink(b"v", &victim).finish(),
        ),
        case(
            "hardlink-dotdot",
            Expect::Reject,
            t().hardlink(b"v", b"../victim").finish(),
        ),
        case(
            "hardlink-through-symlink-dir",
            Expect::Reject,
            t().symlink(b"o", &out).hardlink(b"v", b"o/victim").finish(),
        ),
        case(
            "hardlink-to-symlink-pointing-out",
            Expect::Contained,
            t().symlink(b"s", &victim)
                .hardlink(b"h", b"s")
                .file(b"h", b"pwned")
                .finish(),
        ),
        case(
            "whiteout-dotdot",
            Expect::Reject,
            t().file(b".wh...", b"").finish(),
        ),
        case(
            "whiteout-dot",
            Expect::Reject,
            t().file(b"sub/.wh..", b"").finish(),
        ),
        case(
            "whiteout-through-dangling-symlink",
            Expect::Reject,
            t().symlink(b"o", &out)
                .file(b"o/.wh.victim", b"")
                .file(b"o/.wh.victim-dir", b"")
                .finish(),
        ),
        case(
            "whiteout-through-symlink-to-root",
            Expect::Contained,
            t().symlink(b"o", b"/")
                .file(b"o/.wh.victim", b"")
                .file(b"o/.wh.victim-dir", b"")
                .finish(),
        ),
        case(
            "opaque-through-dotdot-symlink",
            Expect::Contained,
            t().symlink(b"up", b"../..")
                .file(b"up/.wh..wh..opq", b"")
                .finish(),
        ),
        case(
            "dir-replaced-by-symlink-then-write-through",
            Expect::Contained,
            t().dir(b"d/")
                .file(b"d/a", b"a")
                .symlink(b"d", b"/")
                .file(b"d/file", b"pwned")
                .dir(b"d/")
                .file(b"d/b", b"b")
                .finish(),
        ),
        case(
            "dir-entry-over-symlink-to-outside",
            Expect::Contained,
            t().symlink(b"x", &victim_dir)
                .dir(b"x/")
                .file_mode(b"x/file", b"pwned", 0o4777)
                .finish(),
        ),
        case(
            "setuid-on-a-symlink",
            Expect::Contained,
            t().symlink_mode(b"s", &victim, 0o4777).finish(),
        ),
        case(
            "long-pax-name-with-dotdot",
            Expect::Reject,
            t().file(
                &[
                    b"a/".repeat(60).as_slice(),
                    b"../".repeat(70).as_slice(),
                    b"victim",
                ]
                .concat(),
                b"pwned",
            )
            .finish(),
        ),
        case(
            "nul-in-pax-name",
            Expect::Reject,
            t().pax(&[("path", b"ok\0/../../victim")])
                .file(b"placeholder", b"pwned")
                .finish(),
        ),
        case(
            "pax-linkpath-dotdot",
            Expect::Reject,
            t().pax(&[("linkpath", b"../../victim")])
                .hardlink(b"h", b"fine")
                .finish(),
        ),
        case(
            "truncated-stream",
            Expect::Reject,
            t().truncated_file(b"f", 100_000, 1000).out.clone(),
        ),
        case(
            "truncated-header",
            Expect::Reject,
            t().file(b"a", b"a").out[..700].to_vec(),
        ),
        case(
            "garbage",
            Expect::Reject,
            b"this is not a tar archive at all, but it is longer than one block? no".repeat(10),
        ),
        case("corrupt-gzip", Expect::Reject, {
            let mut g = gzip(&t().file(b"a", &[7u8; 100_000]).finish());
            let mid = g.len() / 2;
            g[mid] ^= 0xff;
            g.truncate(g.len() - 4);
            g
        }),
        Case {
            check: Some(|d| {
                assert!(
                    !d.join("dev-null").exists(),
                    "device skipped when unprivileged"
                )
            }),
            ..case(
                "device-node-unprivileged",
                Expect::Contained,
                t().device(b"dev-null", tar::EntryType::Char, 1, 3)
                    .device(b"sda", tar::EntryType::Block, 8, 0)
                    .finish(),
            )
        },
    ];
    // A PAX header declaring 8 GiB with a few bytes behind it.
    let mut huge = RawTar::default();
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..3].copy_from_slice(b"pax");
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(8 << 30);
    h.set_cksum();
    huge.out.extend_from_slice(h.as_bytes());
    huge.out
        .extend_from_slice(b"30 path=aaaaaaaaaaaaaaaaaaaaa\n");
    v.push(case("huge-pax-header-declared", Expect::Reject, huge.out));
    // A real 3 MiB PAX header: bounded by the size limit.
    let big_pax = t()
        .pax(&[("comment", &vec![b'A'; 3 << 20])])
        .file(b"f", b"x")
        .finish();
    v.push(case("huge-pax-header-real", Expect::Reject, gzip(&big_pax)));
    // A gzip bomb: 6 MiB of zeros in one file, ~6 KiB compressed, over the
    // 2 MiB limit of these runs (the ratio is what matters, not the size).
    let mut bomb = RawTar::default();
    let zeros = vec![0u8; 6 << 20];
    bomb.file(b"zeros", &zeros);
    v.push(case("gzip-bomb", Expect::Reject, gzip(&bomb.finish())));
    v
}

fn hostile_opts() -> ExtractOptions {
    ExtractOptions {
        whiteout_mode: WhiteoutMode::Apply,
        unprivileged: true,
        limits: ExtractLimits {
            max_size: Some(2 << 20),
            ..ExtractLimits::default()
        },
        ..ExtractOptions::default()
    }
}

fn prepare(tmp: &Path) {
    std::fs::write(tmp.join("victim"), b"original").unwrap();
    std::fs::create_dir(tmp.join("victim-dir")).unwrap();
    std::fs::write(tmp.join("victim-dir/file"), b"original").unwrap();
    set_mtime(&tmp.join("victim"), 1_000_000_000);
}

fn outside_snapshot(tmp: &Path) -> std::collections::BTreeMap<String, FileFacts> {
    let mut s = snapshot(tmp, &FULL);
    s.retain(|k, _| !k.starts_with("dest-"));
    s
}

/// Extract into a fresh `tmp/dest-N`; everything else in `tmp` must not change.
fn run_case(tmp: &Path, n: usize, c: &Case, mode: WhiteoutMode) {
    let dest = tmp.join(format!("dest-{n}"));
    std::fs::create_dir(&dest).unwrap();
    let before = outside_snapshot(tmp);
    let opts = ExtractOptions {
        whiteout_mode: mode,
        ..hostile_opts()
    };
    let result = extract_layer(&c.blob[..], &dest, &opts);
    match (c.expect, &result) {
        (Expect::Reject, Err(e)) => eprintln!("{}: rejected: {e}", c.name),
        (Expect::Contained, Ok(stats)) => {
            eprintln!(
                "{}: contained ({} entries, notes {:?})",
                c.name, stats.entries, stats.notes
            );
            if let Some(check) = c.check {
                check(&dest);
            }
        }
        (want, got) => panic!("{} ({mode:?}): expected {want:?}, got {got:?}", c.name),
    }
    assert_same_tree(&before, &outside_snapshot(tmp));
    assert_eq!(
        std::fs::read(tmp.join("victim")).unwrap(),
        b"original",
        "{}",
        c.name
    );
}

#[test]
fn hostile_corpus_is_rejected_or_contained() {
    let tmp = tempfile::tempdir().unwrap();
    prepare(tmp.path());
    let all = cases(tmp.path());
    assert!(all.len() >= 15);
    if let Ok(dir) = std::env::var("CAIRN_WRITE_CORPUS") {
        std::fs::create_dir_all(&dir).unwrap();
        for c in &all {
            // Corpus files stay small: skip the multi-MiB ones.
            if c.blob.len() < 256 * 1024 {
                std::fs::write(Path::new(&dir).join(c.name), &c.blob).unwrap();
            }
        }
    }
    let mut n = 0;
    for mode in [
        WhiteoutMode::Apply,
        WhiteoutMode::Overlay(OverlayFlavour::UserXattr),
    ] {
        for c in &all {
            run_case(tmp.path(), n, c, mode);
            n += 1;
        }
    }
}

#[test]
fn size_limit_error_is_typed() {
    let mut bomb = RawTar::default();
    bomb.file(b"zeros", &vec![0u8; 8 << 20]);
    let blob = gzip(&bomb.finish());
    let dest = tempfile::tempdir().unwrap();
    let opts = with_limits(ExtractLimits {
        max_size: Some(1 << 20),
        ..ExtractLimits::default()
    });
    match extract_layer(&blob[..], dest.path(), &opts) {
        Err(LayerError::Limit(l)) => {
            assert_eq!((l.kind, l.limit), (LimitKind::Size, 1 << 20))
        }
        other => panic!("expected a size limit, got {other:?}"),
    }
}

fn with_limits(limits: ExtractLimits) -> ExtractOptions {
    ExtractOptions {
        limits,
        ..hostile_opts()
    }
}

/// Bytes in use by the files under `dir` (st_blocks), holes not counted.
fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += m.blocks() * 512;
        if m.is_dir() {
            total += disk_use(&e.path());
        }
    }
    total
}

/// A few hundred bytes of gzip declaring a 200 GB file of holes: refused
/// from its header, before a byte is written; nothing is left in dest.
#[test]
fn sparse_bomb_is_refused_before_writing() {
    let mut bomb = RawTar::default();
    bomb.file(b"small", b"x")
        .sparse_hole(b"huge", 200_000_000_000);
    let blob = gzip(&bomb.finish());
    assert!(blob.len() < 1024, "{} bytes", blob.len());
    let dest = tempfile::tempdir().unwrap();
    let opts = with_limits(ExtractLimits {
        max_size: Some(1 << 30),
        ..ExtractLimits::default()
    });
    match extract_layer(&blob[..], dest.path(), &opts) {
        Err(LayerError::Limit(l)) => {
            assert_eq!((l.kind, l.limit), (LimitKind::Size, 1 << 30));
            assert_eq!(l.entry.as_deref(), Some("huge"));
        }
        other => panic!("expected a size limit, got {other:?}"),
    }
    assert!(!dest.path().join("huge").exists());
    assert!(disk_use(dest.path()) < 1 << 20);
    // The default cap refuses it too.
    let dest = tempfile::tempdir().unwrap();
    let err = extract_layer(&blob[..], dest.path(), &hostile_opts_default_caps()).unwrap_err();
    assert!(matches!(err, LayerError::Limit(_)), "{err}");
}

fn hostile_opts_default_caps() -> ExtractOptions {
    with_limits(ExtractLimits::default())
}

/// Sparse files under the cap still extract, holes read as zeros.
#[test]
fn small_sparse_file_extracts() {
    let mut t = RawTar::default();
    t.sparse_hole(b"holes", 4096);
    let dest = tempfile::tempdir().unwrap();
    extract_layer(&t.finish()[..], dest.path(), &hostile_opts()).unwrap();
    assert_eq!(
        std::fs::read(dest.path().join("holes")).unwrap(),
        vec![0u8; 4096]
    );
}

#[test]
fn entry_count_cap() {
    let mut t = RawTar::default();
    for i in 0..20 {
        t.file(format!("f{i}").as_bytes(), b"x");
    }
    let blob = t.finish();
    let dest = tempfile::tempdir().unwrap();
    let opts = with_limits(ExtractLimits {
        max_entries: Some(10),
        ..ExtractLimits::default()
    });
    match extract_layer(&blob[..], dest.path(), &opts) {
        Err(LayerError::Limit(l)) => {
            assert_eq!((l.kind, l.limit), (LimitKind::Entries, 10));
            assert_eq!(l.entry.as_deref(), Some("f10"));
        }
        other => panic!("expected an entry limit, got {other:?}"),
    }
    // At the cap exactly: fine.
    let dest = tempfile::tempdir().unwrap();
    let opts = with_limits(ExtractLimits {
        max_entries: Some(20),
        ..ExtractLimits::default()
    });
    extract_layer(&blob[..], dest.path(), &opts).unwrap();
}

/// A PAX header (or GNU long name) bigger than the cap is refused while the
/// tar reader would still be holding it in memory.
#[test]
fn header_size_cap() {
    let long = vec![b'a'; 64 * 1024];
    let mut t = RawTar::default();
    t.pax(&[("comment", &long[..])]).file(b"after", b"x");
    let blob = t.finish();
    let dest = tempfile::tempdir().unwrap();
    let opts = with_limits(ExtractLimits {
        max_header_size: Some(16 * 1024),
        ..ExtractLimits::default()
    });
    match extract_layer(&blob[..], dest.path(), &opts) {
        Err(LayerError::Limit(l)) => {
            assert_eq!((l.kind, l.limit), (LimitKind::HeaderSize, 16 * 1024))
        }
        other => panic!("expected a header limit, got {other:?}"),
    }
    // The same under the default cap (1 MiB) is fine, and so is a 200-byte
    // name through PAX with a small cap.
    extract_layer(
        &blob[..],
        tempfile::tempdir().unwrap().path(),
        &hostile_opts(),
    )
    .unwrap();
    let mut t = RawTar::default();
    t.file(&[b'n'; 200], b"x");
    let opts = with_limits(ExtractLimits {
        max_header_size: Some(1024),
        ..ExtractLimits::default()
    });
    extract_layer(&t.finish()[..], tempfile::tempdir().unwrap().path(), &opts).unwrap();
}

/// A data entry larger than its stream (more declared than delivered) and
/// many small files adding up past the cap are both refused.
#[test]
fn declared_sizes_add_up() {
    let mut t = RawTar::default();
    for i in 0..8 {
        t.file(format!("f{i}").as_bytes(), &vec![7u8; 4096]);
    }
    let dest = tempfile::tempdir().unwrap();
    let opts = with_limits(ExtractLimits {
        max_size: Some(5 * 4096),
        ..ExtractLimits::default()
    });
    // The stream is 8 * (512 + 4096) + 1024 bytes, over the cap too; what
    // matters is that it stops at the sixth file, not later.
    let err = extract_layer(&t.finish()[..], dest.path(), &opts).unwrap_err();
    assert!(matches!(err, LayerError::Limit(_)), "{err}");
    assert!(!dest.path().join("f6").exists());
}
