//! Import and export: OCI dirs, OCI archives, docker archives; round trips,
//! interop with skopeo and umoci, and bad input that must import nothing.

mod common;

use cairn_store::{Digest, ImageRef, Store, StoreError, Transport};
use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

fn tr(s: &str) -> Transport {
    Transport::parse(s).unwrap()
}

/// Nothing named: no tags, an empty index.json, nothing left in tmp/.
fn assert_nothing_imported(store: &Store) {
    assert!(
        store.images().unwrap().iter().all(|i| i.names.is_empty()),
        "no names"
    );
    assert!(store_index(store.root()).is_empty());
    assert_eq!(
        fs::read_dir(store.layout().tmp()).unwrap().count(),
        0,
        "tmp/ is clean"
    );
    assert!(store.fsck().unwrap().is_empty());
}

#[test]
fn transport_strings_parse() {
    assert_eq!(
        tr("oci:/x/y:docker.io/library/a:1"),
        Transport::OciDir {
            path: "/x/y".into(),
            reference: Some("docker.io/library/a:1".into())
        }
    );
    assert_eq!(
        tr("oci-archive:f.tar"),
        Transport::OciArchive {
            path: "f.tar".into(),
            reference: None
        }
    );
    assert!(
        matches!(tr("docker-archive:f.tar:a:b"), Transport::DockerArchive { reference: Some(r), .. } if r == "a:b")
    );
    for bad in ["oci", "oci:", "dir:/x", "oci:/x:", "docker://busybox"] {
        let e = Transport::parse(bad).unwrap_err();
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
}

#[test]
fn oci_dir_and_archive_round_trip_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "app:v1", &[10_000, 50_000, 3], 1);
    let store = Store::open(t.path().join("s1")).unwrap();
    let got = store
        .import(&tr(&format!("oci:{}:app:v1", fx.dir.display())), None)
        .unwrap();
    assert_eq!(got[0].digest, fx.manifest);
    assert_eq!(got[0].names, vec![ImageRef::parse("app:v1").unwrap()]);

    // oci: export, then import into a second store: same digests.
    let out = t.path().join("out");
    store
        .export("app:v1", &tr(&format!("oci:{}:v1", out.display())))
        .unwrap();
    assert_eq!(layout_blobs(&out), layout_blobs(&fx.dir));
    let store2 = Store::open(t.path().join("s2")).unwrap();
    let got2 = store2
        .import(
            &tr(&format!("oci:{}:v1", out.display())),
            Some(&ImageRef::parse("copy").unwrap()),
        )
        .unwrap();
    assert_eq!(got2[0].digest, fx.manifest);

    // oci-archive: the same, through one tar.
    let archive = t.path().join("img.tar");
    store2
        .export("copy", &tr(&format!("oci-archive:{}", archive.display())))
        .unwrap();
    let store3 = Store::open(t.path().join("s3")).unwrap();
    let got3 = store3
        .import(&tr(&format!("oci-archive:{}", archive.display())), None)
        .unwrap();
    assert_eq!(got3[0].digest, fx.manifest);
    // The archive's ref name defaults to the full image name.
    assert_eq!(got3[0].names, vec![ImageRef::parse("copy").unwrap()]);
    let mut want = vec![fx.manifest, fx.config];
    want.extend(&fx.layers);
    for d in want {
        assert_eq!(store3.verify_blob(&d).unwrap().digest, d);
    }
    // Export into an existing layout adds to its index.json.
    store
        .export("app:v1", &tr(&format!("oci:{}:second", out.display())))
        .unwrap();
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
}

#[test]
fn docker_archive_round_trip_keeps_config_and_layers() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(
        &t.path().join("src"),
        "app:v1",
        &[10_000, 20_000, 10_000],
        3,
    );
    let store = Store::open(t.path().join("s1")).unwrap();
    store
        .import(&tr(&format!("oci:{}", fx.dir.display())), None)
        .unwrap();
    let archive = t.path().join("d.tar");
    store
        .export(
            "app:v1",
            &tr(&format!("docker-archive:{}", archive.display())),
        )
        .unwrap();
    let listing = Command::new("tar")
        .arg("tf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(
        listing.contains("manifest.json") && listing.contains("repositories"),
        "{listing}"
    );
    assert!(listing.contains(&format!("{}/layer.tar", fx.layers[0].hex())));

    let store2 = Store::open(t.path().join("s2")).unwrap();
    let got = store2
        .import(&tr(&format!("docker-archive:{}", archive.display())), None)
        .unwrap();
    assert_eq!(got[0].names, vec![ImageRef::parse("app:v1").unwrap()]);
    let (_, m) = store2.manifest(&got[0].digest).unwrap();
    assert_eq!(m.config.unwrap().digest, fx.config, "same config digest");
    let layers: Vec<Digest> = m.children.iter().map(|l| l.digest).collect();
    assert_eq!(layers, fx.layers, "same layers, in order");
    for l in &fx.layers {
        assert_eq!(store2.diff_id_of(l).unwrap(), Some(*l), "diff ids recorded");
    }
    assert_eq!(
        m.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert!(store2.fsck().unwrap().is_empty());
}

#[test]
fn docker_archive_import_accepts_both_docker_layouts() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "x", &[5000, 6000], 4);
    let blob = |d: &Digest| fs::read(fx.dir.join("blobs/sha256").join(d.hex())).unwrap();

    // Classic: <id>/layer.tar with a repeated layer symlinked, <hex>.json config.
    let classic = t.path().join("classic");
    fs::create_dir_all(classic.join("id1")).unwrap();
    fs::create_dir_all(classic.join("id2")).unwrap();
    fs::create_dir_all(classic.join("id3")).unwrap();
    fs::write(classic.join("id1/layer.tar"), blob(&fx.layers[0])).unwrap();
    fs::write(classic.join("id1/VERSION"), "1.0").unwrap();
    fs::write(classic.join("id1/json"), "{}").unwrap();
    fs::write(classic.join("id2/layer.tar"), blob(&fx.layers[1])).unwrap();
    std::os::unix::fs::symlink("../id1/layer.tar", classic.join("id3/layer.tar")).unwrap();
    fs::write(
        classic.join(format!("{}.json", fx.config.hex())),
        blob(&fx.config),
    )
    .unwrap();
    fs::write(
        classic.join("manifest.json"),
        format!(
            r#"[{{"Config":"{}.json","RepoTags":["old:style"],"Layers":["id1/layer.tar","id2/layer.tar"]}}]"#,
            fx.config.hex()
        ),
    )
    .unwrap();
    fs::write(classic.join("repositories"), r#"{"old":{"style":"id2"}}"#).unwrap();
    let classic_tar = t.path().join("classic.tar");
    tar_dir(&classic, &classic_tar);

    // Docker 25+: blobs/sha256/<hex> named from manifest.json.
    let modern = t.path().join("modern");
    for d in fx.layers.iter().chain([&fx.config]) {
        write_blob(&modern, &blob(d));
    }
    fs::write(
        modern.join("manifest.json"),
        format!(
            r#"[{{"Config":"blobs/sha256/{}","RepoTags":["new:style"],"Layers":["blobs/sha256/{}","blobs/sha256/{}"]}}]"#,
            fx.config.hex(),
            fx.layers[0].hex(),
            fx.layers[1].hex()
        ),
    )
    .unwrap();
    let modern_tar = t.path().join("modern.tar");
    tar_dir(&modern, &modern_tar);

    let store = Store::open(t.path().join("s")).unwrap();
    let a = store
        .import(
            &tr(&format!("docker-archive:{}", classic_tar.display())),
            None,
        )
        .unwrap();
    let b = store
        .import(
            &tr(&format!("docker-archive:{}", modern_tar.display())),
            None,
        )
        .unwrap();
    assert_eq!(
        a[0].digest, b[0].digest,
        "same config and layers give the same manifest"
    );
    assert_eq!(
        store.resolve("old:style").unwrap(),
        store.resolve("new:style").unwrap()
    );
    assert!(store.fsck().unwrap().is_empty());
}

#[test]
fn truncated_archives_import_nothing() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "app:v1", &[100_000, 100_000], 5);
    let src = Store::open(t.path().join("src-store")).unwrap();
    src.import(&tr(&format!("oci:{}", fx.dir.display())), None)
        .unwrap();
    for kind in ["oci-archive", "docker-archive"] {
        let full = t.path().join(format!("{kind}.tar"));
        src.export("app:v1", &tr(&format!("{kind}:{}", full.display())))
            .unwrap();
        let bytes = fs::read(&full).unwrap();
        // Cut mid-blob, at a block boundary, and just before the end.
        for cut in [
            bytes.len() / 3,
            (bytes.len() / 2) & !511,
            bytes.len() - 1500,
        ] {
            let cut_path = t.path().join(format!("{kind}-{cut}.tar"));
            fs::write(&cut_path, &bytes[..cut]).unwrap();
            let store = Store::open(t.path().join(format!("s-{kind}-{cut}"))).unwrap();
            let err = store
                .import(&tr(&format!("{kind}:{}", cut_path.display())), None)
                .unwrap_err();
            assert!(err.is_bad_input(), "{kind} cut at {cut}: {err}");
            assert!(
                err.to_string().contains(&cut_path.display().to_string()),
                "names the file: {err}"
            );
            assert_nothing_imported(&store);
        }
    }
}

#[test]
fn a_manifest_naming_a_missing_blob_imports_nothing() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "app:v1", &[1000, 2000], 6);
    fs::remove_file(fx.dir.join("blobs/sha256").join(fx.layers[1].hex())).unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let err = store
        .import(&tr(&format!("oci:{}", fx.dir.display())), None)
        .unwrap_err();
    assert!(
        err.to_string().contains(&fx.layers[1].to_string()),
        "names the blob: {err}"
    );
    assert!(err.is_bad_input());
    assert_nothing_imported(&store);
    // The same through an archive.
    let archive = t.path().join("a.tar");
    tar_dir(&fx.dir, &archive);
    let err = store
        .import(&tr(&format!("oci-archive:{}", archive.display())), None)
        .unwrap_err();
    assert!(err.to_string().contains(&fx.layers[1].to_string()), "{err}");
    assert_nothing_imported(&store);
}

#[test]
fn a_blob_not_matching_its_digest_imports_nothing() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "app:v1", &[1000, 2000], 7);
    let path = fx.dir.join("blobs/sha256").join(fx.layers[0].hex());
    let mut bytes = fs::read(&path).unwrap();
    bytes[700] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let err = store
        .import(&tr(&format!("oci:{}", fx.dir.display())), None)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DigestMismatch { expected, .. } if expected == fx.layers[0]),
        "{err}"
    );
    assert!(!store.has_blob(&fx.layers[0]));
    assert_nothing_imported(&store);
    let archive = t.path().join("a.tar");
    tar_dir(&fx.dir, &archive);
    let err = store
        .import(&tr(&format!("oci-archive:{}", archive.display())), None)
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert_nothing_imported(&store);
}

#[test]
fn an_index_json_that_is_not_json_imports_nothing() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "app:v1", &[1000], 8);
    fs::write(fx.dir.join("index.json"), "{ not json").unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let err = store
        .import(&tr(&format!("oci:{}", fx.dir.display())), None)
        .unwrap_err();
    assert!(err.to_string().contains("index.json is not JSON"), "{err}");
    assert!(err.is_bad_input());
    assert_nothing_imported(&store);
    let archive = t.path().join("a.tar");
    tar_dir(&fx.dir, &archive);
    let err = store
        .import(&tr(&format!("oci-archive:{}", archive.display())), None)
        .unwrap_err();
    assert!(err.to_string().contains("index.json is not JSON"), "{err}");
    assert_nothing_imported(&store);
}

#[test]
fn archive_entries_with_path_games_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("evil.tar");
    // Build by hand: the tar crate refuses to write ".." names through the safe API.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    let name = b"../escape";
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    fs::write(&archive, b.into_inner().unwrap()).unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    for kind in ["oci-archive", "docker-archive"] {
        let err = store
            .import(&tr(&format!("{kind}:{}", archive.display())), None)
            .unwrap_err();
        assert!(err.to_string().contains("escapes the archive"), "{err}");
    }
    assert!(!t.path().join("escape").exists());
    assert_nothing_imported(&store);
}

/// Interop: what cairn exports, skopeo and umoci read; what they write, cairn imports;
/// and they read the store itself as an OCI layout.
#[test]
fn skopeo_and_umoci_read_what_cairn_writes_and_the_other_way() {
    if !have("skopeo") || !have("umoci") {
        eprintln!("skipping: skopeo or umoci not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // An image made by umoci from a real binary.
    let img = t.path().join("umoci-img");
    run(Command::new("umoci").args(["init", "--layout"]).arg(&img));
    run(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:base", img.display())));
    let rootfs = t.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/hello"), "hello from umoci\n").unwrap();
    run(Command::new("umoci")
        .args(["insert", "--image"])
        .arg(format!("{}:base", img.display()))
        .arg(rootfs.join("etc/hello"))
        .arg("/etc/hello"));
    // skopeo copies it to another layout (skopeo-written input for cairn).
    let sk = t.path().join("skopeo-img");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:base", img.display()))
        .arg(format!("oci:{}:latest", sk.display())));

    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    let a = store
        .import(
            &tr(&format!("oci:{}:base", img.display())),
            Some(&ImageRef::parse("from/umoci").unwrap()),
        )
        .unwrap();
    let b = store
        .import(
            &tr(&format!("oci:{}:latest", sk.display())),
            Some(&ImageRef::parse("from/skopeo").unwrap()),
        )
        .unwrap();
    assert!(store.fsck().unwrap().is_empty());

    // skopeo and umoci read the store directly.
    let inspect = run(Command::new("skopeo").arg("inspect").arg(format!(
        "oci:{}:docker.io/from/umoci:latest",
        root.display()
    )));
    assert!(inspect.contains(&a[0].digest.to_string()), "{inspect}");
    let bundle = t.path().join("bundle-store");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:docker.io/from/skopeo:latest", root.display()))
        .arg(&bundle));
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/etc/hello")).unwrap(),
        "hello from umoci\n"
    );
    assert!(!b.is_empty());

    // Exports are read by skopeo copy and umoci unpack.
    let out = t.path().join("out");
    store
        .export("from/umoci", &tr(&format!("oci:{}:tag", out.display())))
        .unwrap();
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:tag", out.display()))
        .arg(format!("oci:{}:tag", t.path().join("other").display())));
    let bundle2 = t.path().join("bundle-out");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:tag", out.display()))
        .arg(&bundle2));
    assert_eq!(
        fs::read_to_string(bundle2.join("rootfs/etc/hello")).unwrap(),
        "hello from umoci\n"
    );
    for kind in ["oci-archive", "docker-archive"] {
        let f = t.path().join(format!("{kind}.tar"));
        store
            .export("from/umoci", &tr(&format!("{kind}:{}", f.display())))
            .unwrap();
        let j = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("{kind}:{}", f.display())));
        assert!(j.contains("\"Layers\""), "{j}");
        run(Command::new("skopeo")
            .arg("copy")
            .arg(format!("{kind}:{}", f.display()))
            .arg(format!(
                "oci:{}:x",
                t.path().join(format!("copy-{kind}")).display()
            )));
    }
}

#[test]
fn export_never_leaves_a_half_written_file() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "app:latest", &[1000], 9);
    let store = Store::open(t.path().join("s")).unwrap();
    store
        .import(&tr(&format!("oci:{}", fx.dir.display())), None)
        .unwrap();
    // A blob gone from the store (corruption) makes the export fail midway.
    fs::remove_file(store.blob_path(&fx.layers[0])).unwrap();
    let dest = t.path().join("out.tar");
    assert!(store
        .export("app", &tr(&format!("oci-archive:{}", dest.display())))
        .is_err());
    assert!(!dest.exists());
    let leftovers: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".cairn-export")
        })
        .collect();
    assert!(leftovers.is_empty());
    let _ = Path::new("");
}

#[test]
fn a_bare_ref_name_is_a_tag_and_names_nothing() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "latest", &[100], 10);
    let store = Store::open(t.path().join("s")).unwrap();
    let src = tr(&format!("oci:{}:latest", fx.dir.display()));
    let got = store.import(&src, None).unwrap();
    assert_eq!(got[0].digest, fx.manifest);
    assert!(got[0].names.is_empty(), "`latest` is not an image name");
    assert!(store_index(store.root()).is_empty());
    let named = ImageRef::parse("busybox").unwrap();
    let got = store.import(&src, Some(&named)).unwrap();
    assert_eq!(got[0].names, vec![named]);
    assert_eq!(store.resolve("busybox:latest").unwrap(), fx.manifest);
}
