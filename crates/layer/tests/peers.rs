//! Peers: umoci unpacks what Cairn writes; Cairn extracts what tar, buildah
//! and skopeo write the same way umoci / GNU tar do.

mod common;

use cairn_layer::{
    extract_layer, write_layer, Compression, DiffSource, ExtractOptions, LayerOptions, WhiteoutMode,
};
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn write_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let d = cairn_layer::Digest::of(bytes);
    std::fs::write(layout.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    (d.to_string(), bytes.len())
}

/// A one-layer OCI layout around a Cairn-written layer.
fn oci_layout(layout: &Path, src: &Path, compression: Compression) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut blob = Vec::new();
    let opts = LayerOptions {
        compression,
        ..LayerOptions::default()
    };
    let info = write_layer(DiffSource::Full(src), &opts, &mut blob).unwrap();
    let (ldig, lsize) = write_blob(layout, &blob);
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [info.diff_id.to_string()]},
    });
    let (cdig, csize) = write_blob(layout, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig, "size": csize},
        "layers": [{"mediaType": info.media_type, "digest": ldig, "size": lsize}],
    });
    let (mdig, msize) = write_blob(layout, manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdig, "size": msize,
                       "annotations": {"org.opencontainers.image.ref.name": "t"}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
}

fn umoci_rootfs(layout: &Path, tag: &str, bundle: &Path) -> std::path::PathBuf {
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle));
    bundle.join("rootfs")
}

/// The layer blobs of the only manifest in an OCI layout.
fn layer_blobs(layout: &Path) -> Vec<Vec<u8>> {
    let read_json =
        |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let blob_path = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = read_json(&layout.join("index.json"));
    let manifest = read_json(&blob_path(
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| std::fs::read(blob_path(l["digest"].as_str().unwrap())).unwrap())
        .collect()
}

fn cairn_extract_all(blobs: &[Vec<u8>], dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let opts = ExtractOptions {
        whiteout_mode: WhiteoutMode::Apply,
        ..ExtractOptions::default()
    };
    for b in blobs {
        extract_layer(&b[..], dest, &opts).unwrap();
    }
}

#[test]
fn umoci_unpacks_what_cairn_writes() {
    if !have("umoci") || !is_root() {
        eprintln!("SKIP umoci_unpacks_what_cairn_writes: needs umoci and root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_every_type(&src, 1_600_000_000);
    // umoci 0.4.7 reads gzip and plain layers (zstd came later).
    for compression in [Compression::Gzip, Compression::None] {
        let layout = tmp.path().join(format!("layout-{compression}"));
        oci_layout(&layout, &src, compression);
        let rootfs = umoci_rootfs(
            &layout,
            "t",
            &tmp.path().join(format!("bundle-{compression}")),
        );
        assert_same_tree(&snapshot(&src, &FULL), &snapshot(&rootfs, &FULL));
    }
}

#[test]
fn skopeo_reads_a_cairn_zstd_layer_with_raw_frames() {
    // umoci 0.4.7 reads no zstd, so skopeo (containers/image, the Go zstd
    // decoder containerd and buildah use too) converts the image to gzip,
    // which means decoding every frame of ours, and umoci unpacks that.
    if !(have("skopeo") && have("umoci") && is_root()) {
        eprintln!(
            "SKIP skopeo_reads_a_cairn_zstd_layer_with_raw_frames: needs skopeo, umoci and root"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_every_type(&src, 1_600_000_000);
    // Incompressible MiBs (raw frames) between compressible ones.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..3 * (1 << 20) + 999)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    std::fs::write(src.join("noise.bin"), &noise).unwrap();
    let text: String = (0..80_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(src.join("z-text"), text).unwrap();
    let layout = tmp.path().join("layout-zstd");
    oci_layout(&layout, &src, Compression::Zstd);
    let zblob = &layer_blobs(&layout)[0];
    assert!(
        zblob
            .windows(5)
            .any(|w| w == [0x28, 0xb5, 0x2f, 0xfd, 0xa0]),
        "the layer has raw frames"
    );
    let gz = tmp.path().join("layout-gz");
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-compress",
            "--dest-compress-format",
            "gzip",
        ])
        .arg(format!("oci:{}:t", layout.display()))
        .arg(format!("oci:{}:t", gz.display())));
    let gblob = &layer_blobs(&gz)[0];
    assert!(gblob.starts_with(&[0x1f, 0x8b]), "skopeo recompressed it");
    let rootfs = umoci_rootfs(&gz, "t", &tmp.path().join("bundle"));
    assert_same_tree(&snapshot(&src, &FULL), &snapshot(&rootfs, &FULL));
}

#[test]
fn cairn_extracts_gnu_tar_layers_like_gnu_tar() {
    if !is_root() {
        eprintln!(
            "SKIP cairn_extracts_gnu_tar_layers_like_gnu_tar: needs root for owners and devices"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_every_type(&src, 1_600_000_000);
    for (format, compress) in [("posix", "zstd"), ("gnu", "gzip"), ("ustar", "cat")] {
        if format == "ustar" {
            continue; // ustar cannot hold the long names of this tree
        }
        let blob_path = tmp.path().join(format!("layer-{format}"));
        let cmd = format!(
            "tar --format={format} --xattrs --xattrs-include='*' --numeric-owner -C {} -cf - . | {compress} > {}",
            src.display(),
            blob_path.display()
        );
        run(Command::new("sh").arg("-ec").arg(&cmd));
        let by_tar = tmp.path().join(format!("tar-{format}"));
        std::fs::create_dir(&by_tar).unwrap();
        let x = format!(
            "{compress} -dc < {} | tar --xattrs --xattrs-include='*' --numeric-owner --same-owner -xpf - -C {}",
            blob_path.display(),
            by_tar.display()
        );
        run(Command::new("sh")
            .arg("-ec")
            .arg(x.replace("cat -dc", "cat")));
        let by_cairn = tmp.path().join(format!("cairn-{format}"));
        cairn_extract_all(&[std::fs::read(&blob_path).unwrap()], &by_cairn);
        // GNU tar's gnu format keeps no xattrs.
        let opts = SnapOpts {
            mtimes: true,
            owners: true,
            xattrs: format == "posix",
        };
        assert_same_tree(&snapshot(&by_tar, &opts), &snapshot(&by_cairn, &opts));
        assert_same_tree(&snapshot(&src, &opts), &snapshot(&by_cairn, &opts));
    }
}

#[test]
fn cairn_extracts_buildah_and_skopeo_images_like_umoci() {
    if !(have("buildah") && have("skopeo") && have("umoci") && is_root()) {
        eprintln!("SKIP cairn_extracts_buildah_and_skopeo_images_like_umoci: needs buildah, skopeo, umoci and root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_every_type(&src, 1_600_000_000);
    let t = tmp.path();
    let storage = format!(
        "--root={} --runroot={} --storage-driver=vfs",
        t.join("st").display(),
        t.join("run").display()
    );
    let layout = t.join("buildah-layout");
    let script = format!(
        "c=$(buildah {storage} from scratch) && buildah {storage} copy $c {src} / >/dev/null && \
         buildah {storage} run $c true 2>/dev/null || true; \
         buildah {storage} commit --rm $c oci:{layout}:t >/dev/null && \
         skopeo copy --quiet --dest-compress --dest-compress-format zstd oci:{layout}:t oci:{layout}-z:z",
        src = src.display(),
        layout = layout.display()
    );
    run(Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .env("BUILDAH_ISOLATION", "chroot"));
    let by_umoci = umoci_rootfs(&layout, "t", &t.join("bundle"));
    let blobs = layer_blobs(&layout);
    assert!(!blobs.is_empty());
    let by_cairn = t.join("cairn");
    cairn_extract_all(&blobs, &by_cairn);
    assert_same_tree(&snapshot(&by_umoci, &FULL), &snapshot(&by_cairn, &FULL));

    // The zstd copy skopeo wrote into a second layout.
    let layout = t.join("buildah-layout-z");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let z = &index["manifests"][0];
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(z["digest"].as_str().unwrap().trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let zblobs: Vec<Vec<u8>> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert!(l["mediaType"].as_str().unwrap().ends_with("+zstd"));
            std::fs::read(
                layout
                    .join("blobs/sha256")
                    .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:")),
            )
            .unwrap()
        })
        .collect();
    let by_cairn_z = t.join("cairn-z");
    cairn_extract_all(&zblobs, &by_cairn_z);
    assert_same_tree(&snapshot(&by_umoci, &FULL), &snapshot(&by_cairn_z, &FULL));
}
