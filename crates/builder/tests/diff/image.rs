//! Reading a built image the way a peer does: its layers flattened into one
//! tree (whiteouts and opaque dirs applied) and the config fields the
//! differential suite compares, both normalised into JSON.

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// One path of a flattened filesystem.
#[derive(Debug, Clone)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    sha256: Option<String>,
    target: Option<String>,
    device: Option<(u32, u32)>,
    /// Entries sharing an inode (hard links) share this number.
    inode: u64,
}

/// A flattened image: `{"/path": {kind, mode, uid, gid, size, sha256, target, hardlinks}}`.
pub fn flatten(layers: &[std::path::PathBuf]) -> Value {
    let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
    let mut next_inode = 0u64;
    for layer in layers {
        let bytes = std::fs::read(layer).unwrap_or_else(|e| panic!("{}: {e}", layer.display()));
        let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(&bytes[..]))
        } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::new(&bytes[..]).expect("zstd"))
        } else {
            Box::new(&bytes[..])
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().expect("tar entries") {
            let mut entry = entry.expect("tar entry");
            let path = normalise(&entry.path().expect("entry path").to_string_lossy());
            if path.is_empty() {
                continue; // the root itself
            }
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                tree.retain(|p, _| !p.starts_with(&prefix));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                remove_tree(&mut tree, &gone);
                continue;
            }
            let header = entry.header().clone();
            let mode = header.mode().expect("mode") & 0o7777;
            let uid = header.uid().expect("uid");
            let gid = header.gid().expect("gid");
            let ty = header.entry_type();
            let new = if ty.is_hard_link() {
                let target = normalise(
                    &entry
                        .link_name()
                        .expect("link name")
                        .expect("hard link without target")
                        .to_string_lossy(),
                );
                let mut linked = tree
                    .get(&target)
                    .unwrap_or_else(|| panic!("hard link {path} to missing {target}"))
                    .clone();
                linked.kind = "file";
                linked
            } else {
                next_inode += 1;
                let mut e = Entry {
                    kind: "file",
                    mode,
                    uid,
                    gid,
                    size: 0,
                    sha256: None,
                    target: None,
                    device: None,
                    inode: next_inode,
                };
                if ty.is_dir() {
                    e.kind = "dir";
                } else if ty.is_symlink() {
                    e.kind = "symlink";
                    e.target = entry
                        .link_name()
                        .expect("link name")
                        .map(|t| t.to_string_lossy().into_owned());
                } else if ty.is_file() {
                    let mut h = Sha256::new();
                    let size = std::io::copy(&mut entry, &mut HashWriter(&mut h)).expect("read");
                    e.size = size;
                    e.sha256 = Some(hex::encode(h.finalize()));
                } else if ty.is_character_special() || ty.is_block_special() {
                    e.kind = if ty.is_character_special() {
                        "char"
                    } else {
                        "block"
                    };
                    e.device = Some((
                        header.device_major().ok().flatten().unwrap_or(0),
                        header.device_minor().ok().flatten().unwrap_or(0),
                    ));
                } else if ty.is_fifo() {
                    e.kind = "fifo";
                } else {
                    continue; // pax headers and the like
                }
                e
            };
            // A dir over a dir keeps the children; anything else replaces the subtree.
            let replaces_dir = tree.get(&path).is_some_and(|old| old.kind == "dir");
            if replaces_dir && new.kind != "dir" {
                remove_tree(&mut tree, &path);
            }
            tree.insert(path, new);
        }
    }
    // Hard link groups: every member names the group's first path.
    let mut groups: HashMap<u64, Vec<&String>> = HashMap::new();
    for (path, e) in &tree {
        groups.entry(e.inode).or_default().push(path);
    }
    let mut out = Map::new();
    for (path, e) in &tree {
        let mut v = json!({ "kind": e.kind, "mode": format!("{:04o}", e.mode), "uid": e.uid, "gid": e.gid });
        if e.kind == "file" {
            v["size"] = json!(e.size);
            v["sha256"] = json!(e.sha256);
        }
        if let Some(t) = &e.target {
            v["target"] = json!(t);
        }
        if let Some((major, minor)) = e.device {
            v["device"] = json!(format!("{major}:{minor}"));
        }
        let group = &groups[&e.inode];
        if group.len() > 1 {
            v["hardlinks"] = json!(group);
        }
        out.insert(format!("/{path}"), v);
    }
    Value::Object(out)
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn normalise(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn remove_tree(tree: &mut BTreeMap<String, Entry>, path: &str) {
    tree.remove(path);
    let prefix = format!("{path}/");
    tree.retain(|p, _| !p.starts_with(&prefix));
}

/// The compared config fields, normalised: empty lists, maps and strings are
/// null; buildah's own label is dropped; zero durations are dropped.
pub fn config_fields(config: &Value) -> Value {
    let c = &config["config"];
    let mut out = Map::new();
    for field in [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "Labels",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
    ] {
        let mut v = c.get(field).cloned().unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            if field == "Labels" {
                m.remove("io.buildah.version");
            }
            if field == "Healthcheck" {
                m.retain(|_, x| x != &json!(0));
            }
        }
        let empty = match &v {
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
            Value::String(s) => s.is_empty(),
            _ => false,
        };
        out.insert(field.into(), if empty { Value::Null } else { v });
    }
    Value::Object(out)
}

/// An image in an OCI layout (`index.json` with one manifest).
pub fn read_oci_layout(dir: &Path) -> Value {
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: Value = read_json(&dir.join("index.json"));
    let manifest: Value = read_json(&blob(
        index["manifests"][0]["digest"]
            .as_str()
            .expect("index without manifest"),
    ));
    image_from_manifest(&manifest, blob)
}

/// An image in a containers/image `dir:` directory.
pub fn read_dir_transport(dir: &Path) -> Value {
    let blob = |d: &str| dir.join(d.trim_start_matches("sha256:"));
    let manifest: Value = read_json(&dir.join("manifest.json"));
    image_from_manifest(&manifest, blob)
}

fn image_from_manifest(manifest: &Value, blob: impl Fn(&str) -> std::path::PathBuf) -> Value {
    let config: Value = read_json(&blob(
        manifest["config"]["digest"]
            .as_str()
            .expect("manifest without config"),
    ));
    let layers: Vec<_> = manifest["layers"]
        .as_array()
        .expect("manifest without layers")
        .iter()
        .map(|l| blob(l["digest"].as_str().expect("layer digest")))
        .collect();
    json!({ "config": config_fields(&config), "fs": flatten(&layers) })
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
