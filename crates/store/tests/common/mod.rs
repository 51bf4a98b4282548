//! Test fixtures: OCI layouts built by hand from random data, so every
//! digest is known and nothing depends on the network.

#![allow(dead_code)]

use cairn_store::Digest;
use rand::{RngCore, SeedableRng};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// An image written into an OCI layout dir.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub dir: PathBuf,
    pub ref_name: String,
    pub manifest: Digest,
    pub manifest_size: u64,
    pub config: Digest,
    /// Uncompressed tar layers, so digest == diff id.
    pub layers: Vec<Digest>,
}

/// A tar holding one file of `size` random bytes (seeded).
pub fn random_layer(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; size];
    rng.fill_bytes(&mut data);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, format!("data-{seed}"), &data[..])
        .unwrap();
    b.into_inner().unwrap()
}

pub fn write_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(d.hex()), bytes).unwrap();
    d
}

/// Add an image of `layer_sizes` random layers to the layout at `dir`
/// (created if needed), listed in index.json under `ref_name`.
pub fn make_image(dir: &Path, ref_name: &str, layer_sizes: &[usize], seed: u64) -> Fixture {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for (i, &size) in layer_sizes.iter().enumerate() {
        let bytes = random_layer(size, seed * 1000 + i as u64);
        let d = write_blob(dir, &bytes);
        descs.push(
            json!({"mediaType": OCI_LAYER_TAR, "digest": d.to_string(), "size": bytes.len()}),
        );
        layers.push(d);
    }
    let config = json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| json!({"created_by": "test"})).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_d = write_blob(dir, &config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d.to_string(), "size": config_bytes.len()},
        "layers": descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_d = write_blob(dir, &manifest_bytes);
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "manifests": []}));
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": OCI_MANIFEST,
        "digest": manifest_d.to_string(),
        "size": manifest_bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": ref_name},
    }));
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    Fixture {
        dir: dir.to_path_buf(),
        ref_name: ref_name.to_string(),
        manifest: manifest_d,
        manifest_size: manifest_bytes.len() as u64,
        config: config_d,
        layers,
    }
}

/// Digests of every file under `dir/blobs/sha256`, re-hashed (names checked too).
pub fn layout_blobs(dir: &Path) -> Vec<Digest> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let d = Digest::of(&fs::read(e.path()).unwrap());
        assert_eq!(
            d.hex(),
            e.file_name().to_str().unwrap(),
            "blob name matches content"
        );
        out.push(d);
    }
    out.sort();
    out
}

/// The store's index.json entries as (ref name, digest).
pub fn store_index(root: &Path) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    let mut out: Vec<(String, String)> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Tar up a directory (as an oci-archive) with the system tar.
pub fn tar_dir(dir: &Path, out: &Path) {
    let st = std::process::Command::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
