//! Round trip: tree -> layer -> extraction gives the same tree; determinism.

mod common;

use cairn_layer::{
    extract_layer, write_layer, Compression, DiffSource, ExtractOptions, IdMap, LayerOptions,
    WhiteoutMode,
};
use common::*;
use std::path::Path;

fn layer_of(dir: &Path, opts: &LayerOptions) -> (Vec<u8>, cairn_layer::LayerInfo) {
    let mut blob = Vec::new();
    let info = write_layer(DiffSource::Full(dir), opts, &mut blob).unwrap();
    (blob, info)
}

fn extract_opts() -> ExtractOptions {
    ExtractOptions {
        whiteout_mode: WhiteoutMode::Apply,
        ..ExtractOptions::default()
    }
}

#[test]
fn every_file_type_round_trips_in_every_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_every_type(&src, 1_600_000_000);
    let before = snapshot(&src, &FULL);
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let opts = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let (blob, info) = layer_of(&src, &opts);
        assert_eq!(info.size, blob.len() as u64);
        assert_eq!(info.digest, cairn_layer::Digest::of(&blob));
        assert_eq!(info.media_type, compression.media_type());
        let dest = tmp.path().join(format!("out-{compression}"));
        std::fs::create_dir(&dest).unwrap();
        let stats = extract_layer(&blob[..], &dest, &extract_opts()).unwrap();
        assert_eq!(stats.compression, compression, "detected by magic bytes");
        assert_eq!(
            stats.diff_id, info.diff_id,
            "extraction hashes the same uncompressed stream"
        );
        assert_eq!(stats.uncompressed_size, info.uncompressed_size);
        assert_same_tree(&before, &snapshot(&dest, &FULL));
    }
}

#[test]
fn tar_rules_sorted_paths_dirs_with_slash_hardlinks_no_names() {
    let tmp = tempfile::tempdir().unwrap();
    make_every_type(tmp.path(), 1_600_000_000);
    let (blob, _) = layer_of(tmp.path(), &LayerOptions::default());
    let entries = list_entries(&blob);
    let keys: Vec<String> = entries
        .iter()
        .map(|e| e.path.trim_end_matches('/').to_string())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(keys, sorted, "entries sorted by path bytes");
    for e in &entries {
        assert_eq!(
            e.kind == '5',
            e.path.ends_with('/'),
            "{e:?}: dirs and only dirs end in /"
        );
    }
    let hl = entries
        .iter()
        .find(|e| e.path == "hardlink-to-hello")
        .unwrap();
    assert_eq!(hl.kind, '1');
    assert_eq!(
        hl.link.as_deref(),
        Some("etc/hello.txt"),
        "first in sorted order holds the data"
    );
    let hl2 = entries.iter().find(|e| e.path == "etc/sub/hl2").unwrap();
    assert_eq!(hl2.kind, '1');
    let long = entries
        .iter()
        .find(|e| e.path.ends_with(&"l".repeat(150)))
        .unwrap();
    assert!(long.path.len() > 255);
    let link = entries
        .iter()
        .find(|e| e.path == "long-target-link")
        .unwrap();
    assert_eq!(link.link.as_deref().map(str::len), Some(200));
    // uname/gname are empty in every header.
    let raw = zstd::stream::decode_all(&blob[..]).unwrap();
    let mut ar = tar::Archive::new(&raw[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        assert_eq!(e.header().groupname_bytes(), Some(&b""[..]));
    }
}

#[test]
fn same_tree_twice_same_digests_and_timestamp_clamps() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    make_every_type(&a, 1_600_000_000);
    make_every_type(&b, 1_700_000_000);
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let opts = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let (_, a1) = layer_of(&a, &opts);
        let (_, a2) = layer_of(&a, &opts);
        assert_eq!(a1, a2, "same tree twice -> same digests ({compression})");
        let (_, b1) = layer_of(&b, &opts);
        assert_ne!(a1.diff_id, b1.diff_id, "mtimes matter without a timestamp");
        let clamp = LayerOptions {
            timestamp: Some(1_500_000_000),
            ..opts.clone()
        };
        let (_, ac) = layer_of(&a, &clamp);
        let (_, bc) = layer_of(&b, &clamp);
        assert_eq!(
            ac, bc,
            "timestamp clamps both trees to the same bytes ({compression})"
        );
        // One thread or two: the same bytes.
        let one = LayerOptions {
            threads: 1,
            ..clamp.clone()
        };
        assert_eq!(layer_of(&a, &one).1, ac);
    }
    let (blob, _) = layer_of(
        &a,
        &LayerOptions {
            timestamp: Some(1_500_000_000),
            ..LayerOptions::default()
        },
    );
    assert!(list_entries(&blob).iter().all(|e| e.mtime <= 1_500_000_000));
}

#[test]
fn id_map_host_to_container_and_back() {
    if !is_root() {
        eprintln!("SKIP id_map_host_to_container_and_back: needs root to chown");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    lchown(&src.join("f"), 101_000, 101_000); // container 1000 in a 100000-based range
    lchown(&src, 100_000, 100_000);
    let map = IdMap::rootless(100_000, 100_000, 100_001, 100_001, 65535);
    let opts = LayerOptions {
        id_map: map.clone(),
        ..LayerOptions::default()
    };
    let (blob, _) = layer_of(&src, &opts);
    let e = list_entries(&blob);
    assert_eq!((e[0].uid, e[0].gid), (1000, 1000));
    // Unmapped owner: a clear error naming the file.
    std::fs::write(src.join("g"), b"y").unwrap();
    lchown(&src.join("g"), 5, 5);
    let err = write_layer(DiffSource::Full(&src), &opts, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not covered") && err.contains("/g"), "{err}");
    // Extraction maps container -> host.
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let xo = ExtractOptions {
        id_map: IdMap::rootless(200_000, 200_000, 300_000, 300_000, 65536),
        ..extract_opts()
    };
    extract_layer(&blob[..], &dest, &xo).unwrap();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dest.join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (300_999, 300_999));
}

#[test]
fn the_unhashed_writer_writes_the_same_blob_and_leaves_its_digest_to_the_sink() {
    let tmp = tempfile::tempdir().unwrap();
    make_every_type(tmp.path(), 1_600_000_000);
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let opts = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let (blob, info) = layer_of(tmp.path(), &opts);
        let mut unhashed = Vec::new();
        let written =
            cairn_layer::write_layer_unhashed(DiffSource::Full(tmp.path()), &opts, &mut unhashed)
                .unwrap();
        assert_eq!(unhashed, blob, "{compression}: same bytes");
        assert_eq!(written.size, blob.len() as u64);
        assert_eq!(
            written.with_digest(cairn_layer::Digest::of(&unhashed)),
            info,
            "{compression}: the same report once the sink's digest is added"
        );
    }
}

/// A file over several decoder blocks (recycled between the decoder and
/// the extractor) and writeback chunks (started as it is written), and a
/// stream long enough for the diffID's hashing thread: the same bytes come
/// back and the diffID is the writer's, in every compression.
#[test]
fn a_file_of_many_blocks_extracts_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..(17 << 20) + 4321)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("after"), b"the entry after the big one").unwrap();
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let opts = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let (blob, info) = layer_of(&src, &opts);
        let dest = tmp.path().join(format!("out-{compression}"));
        std::fs::create_dir(&dest).unwrap();
        let stats = extract_layer(&blob[..], &dest, &extract_opts()).unwrap();
        assert_eq!(stats.diff_id, info.diff_id, "{compression}");
        assert!(
            std::fs::read(dest.join("big.bin")).unwrap() == big,
            "{compression}"
        );
        assert_eq!(
            std::fs::read(dest.join("after")).unwrap(),
            b"the entry after the big one"
        );
    }
}
