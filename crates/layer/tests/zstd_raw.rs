//! zstd layers on real trees (`crates/layer/src/pzstd.rs`): a tree that
//! compresses keeps the bytes libzstd's one stream gave it before raw
//! frames existed; incompressible files go out as raw frames that our
//! extractor and the `zstd` binary read; the digest depends on the content
//! only, never on the thread count.

mod common;

use cairn_layer::testdata::random;
use cairn_layer::{
    extract_layer, write_layer, Compression, DiffSource, Digest, ExtractOptions, IdMap, LayerInfo,
    LayerOptions, WhiteoutMode,
};
use common::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const MIB: usize = 1 << 20;

fn zstd_layer(dir: &Path, threads: usize) -> (Vec<u8>, LayerInfo) {
    let opts = LayerOptions {
        compression: Compression::Zstd,
        timestamp: Some(1_600_000_000),
        threads,
        ..LayerOptions::default()
    };
    let mut blob = Vec::new();
    let info = write_layer(DiffSource::Full(dir), &opts, &mut blob).unwrap();
    (blob, info)
}

fn unzstd(blob: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    zstd::stream::read::Decoder::new(blob)
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    tar
}

/// The blob the layer writer made of `tar` before raw frames: one libzstd
/// stream, level 3, two workers, 4 MiB jobs.
fn one_libzstd_stream(tar: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.multithread(2).unwrap();
    enc.set_parameter(zstd::stream::raw::CParameter::JobSize(4 << 20))
        .unwrap();
    enc.write_all(tar).unwrap();
    enc.finish().unwrap()
}

/// Frames in a zstd stream that start with our raw frame header.
fn raw_frames(blob: &[u8]) -> usize {
    blob.windows(5)
        .filter(|w| w == &[0x28, 0xb5, 0x2f, 0xfd, 0xa0])
        .count()
}

/// A tree like most layers: the static busybox and a tree of Perl
/// modules (text), as found on this machine.
fn real_tree(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("static busybox");
    std::fs::create_dir_all(root.join("usr/share")).unwrap();
    run(Command::new("cp")
        .args(["-a", "/usr/share/perl5"])
        .arg(root.join("usr/share")));
}

#[test]
fn a_real_tree_that_compresses_keeps_libzstds_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    real_tree(tmp.path());
    let (blob, info) = zstd_layer(tmp.path(), 2);
    let tar = unzstd(&blob);
    assert_eq!(Digest::of(&tar), info.diff_id);
    assert!(tar.len() > 3 * MIB, "a tree of several chunks");
    assert_eq!(raw_frames(&blob), 0);
    assert!(blob == one_libzstd_stream(&tar), "the same bytes as before");
}

#[test]
fn incompressible_files_become_raw_frames_that_extract() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    real_tree(&src);
    // A 5 MiB random file (a video, a compressed archive) and a gzip file.
    std::fs::write(src.join("media.bin"), random(5 * MIB, 42)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&unzstd(&zstd_layer(&src.join("usr"), 2).0))
        .unwrap();
    std::fs::write(src.join("perl.tar.gz"), gz.finish().unwrap()).unwrap();

    let (blob, info) = zstd_layer(&src, 2);
    for threads in [1, 4] {
        let (other, _) = zstd_layer(&src, threads);
        assert!(other == blob, "{threads} threads gave other bytes");
    }
    let tar = unzstd(&blob);
    assert_eq!(Digest::of(&tar), info.diff_id);
    assert!(raw_frames(&blob) >= 4, "the random MiBs are raw frames");
    // No worse than one libzstd stream by more than 5 %.
    let before = one_libzstd_stream(&tar).len();
    assert!(
        blob.len() * 100 <= before * 105,
        "{} vs {before}",
        blob.len()
    );

    let dest = tmp.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    let opts = ExtractOptions {
        whiteout_mode: WhiteoutMode::Apply,
        ..ExtractOptions::default()
    };
    let stats = extract_layer(&blob[..], &dest, &opts).unwrap();
    assert_eq!(stats.compression, Compression::Zstd);
    assert_eq!(stats.diff_id, info.diff_id);
    let o = SnapOpts {
        mtimes: false,
        ..FULL
    };
    assert_same_tree(&snapshot(&src, &o), &snapshot(&dest, &o));

    // The zstd binary reads it too.
    if Command::new("zstd").arg("--version").output().is_ok() {
        let path = tmp.path().join("layer.tar.zst");
        std::fs::write(&path, &blob).unwrap();
        let out = Command::new("zstd")
            .args(["-q", "-d", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "zstd -d failed");
        assert!(out.stdout == tar, "zstd -d gave another tar");
    }
}

#[test]
fn an_empty_and_a_tiny_layer_are_one_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let (blob, info) = zstd_layer(tmp.path(), 2);
    assert_eq!(Digest::of(&unzstd(&blob)), info.diff_id);
    assert!(blob == one_libzstd_stream(&unzstd(&blob)));
    std::fs::write(tmp.path().join("x"), random(5000, 1)).unwrap();
    let (blob, info) = zstd_layer(tmp.path(), 2);
    assert_eq!(Digest::of(&unzstd(&blob)), info.diff_id);
    assert_eq!(raw_frames(&blob), 0, "under a chunk: libzstd's frame");
}

#[test]
fn the_digest_of_a_mixed_layer_is_pinned() {
    // A changed byte here is a changed digest for every zstd layer holding
    // incompressible data: change it only on purpose (a new libzstd, a new
    // chunk rule) and say so.
    let tmp = tempfile::tempdir().unwrap();
    let text: String = (0..60_000)
        .map(|i| format!("line {i} of a text file {}\n", i % 13))
        .collect();
    std::fs::write(tmp.path().join("a.txt"), &text).unwrap();
    std::fs::write(tmp.path().join("b.bin"), random(3 * MIB + 12_345, 7)).unwrap();
    // Owned by 0:0 and with fixed modes in the tar, root or not.
    let me = unsafe { (libc::geteuid(), libc::getegid()) };
    for (path, mode) in [("", 0o755), ("a.txt", 0o644), ("b.bin", 0o600)] {
        let path = tmp.path().join(path);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let opts = LayerOptions {
        compression: Compression::Zstd,
        timestamp: Some(1_600_000_000),
        id_map: IdMap::rootless(me.0, me.1, 1 << 30, 1 << 30, 1),
        ..LayerOptions::default()
    };
    let mut blob = Vec::new();
    let info = write_layer(DiffSource::Full(tmp.path()), &opts, &mut blob).unwrap();
    assert_eq!(raw_frames(&blob), 2);
    assert_eq!(
        info.diff_id.to_string(),
        "sha256:27b8db31cd4fce197173a4f91d3798e32567b922c63229e2f0e61427a577aac6"
    );
    assert_eq!(
        info.digest.to_string(),
        "sha256:a6ce851cff8e9b18dacef3108c827e85072a803a0960c02ea64e39a42214edae"
    );
}
