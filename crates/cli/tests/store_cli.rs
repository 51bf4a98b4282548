//! The store commands through the real binary: output shapes and exit codes.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn cairn(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn store_commands_and_their_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_image(&t.path().join("src"), "app:v1", &[1000, 2000], 1);
    let store = t.path().join("store");
    let src = format!("oci:{}:app:v1", fx.dir.display());

    let o = cairn(&store, &["import", &src, "myapp:1"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains(&fx.manifest.to_string()));

    let o = cairn(&store, &["tag", "myapp:1", "localhost:5000/team/app:2"]);
    assert!(o.status.success(), "{:?}", text(&o));

    let o = cairn(&store, &["images", "--format", "json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let img = &v.as_array().unwrap()[0];
    assert_eq!(img["digest"], fx.manifest.to_string());
    assert_eq!(
        img["names"],
        serde_json::json!(["docker.io/library/myapp:1", "localhost:5000/team/app:2"])
    );
    assert_eq!(img["created"], "2024-01-02T03:04:05Z");
    assert!(img["size"].as_u64().unwrap() > 3000);
    let o = cairn(&store, &["images"]);
    assert!(text(&o).0.contains("localhost:5000/team/app:2"));

    // Bad input: exit 2, naming the value.
    for (args, needle) in [
        (vec!["export", "myapp:1", "dir:/nowhere"], "dir:/nowhere"),
        (vec!["export", "nosuch", "oci:/tmp/x"], "nosuch"),
        (vec!["tag", "myapp:1", "Bad Name"], "Bad Name"),
        (vec!["tag", "ghost", "x"], "ghost"),
        (vec!["rmi", "ghost"], "ghost"),
        (
            vec!["import", "oci-archive:/no/such/file.tar"],
            "/no/such/file.tar",
        ),
        (vec!["prune", "--keep-storage", "10XB"], "10XB"),
    ] {
        let o = cairn(&store, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {:?}", text(&o));
        assert!(text(&o).1.contains(needle), "{args:?}: {:?}", text(&o));
    }

    // Export to each format, then rmi, prune, and fsck.
    for dest in ["oci", "oci-archive", "docker-archive"] {
        let d = format!("{dest}:{}", t.path().join(format!("out-{dest}")).display());
        let o = cairn(&store, &["export", "myapp:1", &d]);
        assert!(o.status.success(), "{dest}: {:?}", text(&o));
    }
    let o = cairn(&store, &["rmi", "myapp:1", "ghost"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).0.contains("Untagged: docker.io/library/myapp:1"));
    let o = cairn(&store, &["prune", "--keep-storage", "1GB"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.starts_with("Freed "), "{:?}", text(&o));
    let o = cairn(&store, &["fsck"]);
    assert!(o.status.success());
    assert_eq!(text(&o).0.trim(), "ok");

    // Corruption: exit 1 with every problem listed.
    let blob = store.join("blobs/sha256").join(fx.layers[0].hex());
    std::fs::write(&blob, b"garbage").unwrap();
    std::fs::write(store.join("index.json"), b"[").unwrap();
    let o = cairn(&store, &["fsck"]);
    assert_eq!(o.status.code(), Some(1));
    let (out, err) = text(&o);
    assert!(out.contains(&fx.layers[0].to_string()), "{out}");
    assert!(out.contains("index.json"), "{out}");
    assert!(err.contains("2 problem"), "{err}");
}
