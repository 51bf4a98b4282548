//! Concurrency without a daemon: 8 workers run `cairn import`, `tag`, `rmi`,
//! `prune`, `fsck` and `images` against one store for a bounded time; then
//! fsck passes and every image still tagged reads back intact.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn cairn(store: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(debug_assertions, ignore = "slow: run with cargo test --release")]
fn eight_processes_import_tag_remove_and_prune_at_once() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let fixtures: Vec<Fixture> = (0..3)
        .map(|i| {
            make_image(
                &src,
                &format!("img{i}"),
                &[512 << 10, (i + 1) << 18],
                100 + i as u64,
            )
        })
        .collect();
    let store = t.path().join("store");
    let deadline = Instant::now() + Duration::from_secs(10);
    let failures = std::sync::Mutex::new(Vec::new());
    let counts = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    std::thread::scope(|s| {
        for w in 0..8u64 {
            let (store, src, failures, counts) = (&store, &src, &failures, &counts);
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(w);
                while Instant::now() < deadline {
                    let k = rng.gen_range(0..3);
                    let name = format!("w{}/img{k}:t", rng.gen_range(0..8));
                    let (op, args, allowed): (&str, Vec<String>, &[i32]) =
                        match rng.gen_range(0..20) {
                            0..=6 => (
                                "import",
                                vec![
                                    "import".into(),
                                    format!("oci:{}:img{k}", src.display()),
                                    name,
                                ],
                                &[0],
                            ),
                            7..=10 => (
                                "tag",
                                vec!["tag".into(), name, format!("w{w}/copy:{k}")],
                                &[0, 2],
                            ),
                            11..=14 => ("rmi", vec!["rmi".into(), name], &[0, 2]),
                            15..=16 => ("prune", vec!["prune".into()], &[0]),
                            17 => ("fsck", vec!["fsck".into()], &[0]),
                            _ => (
                                "images",
                                vec!["images".into(), "--format".into(), "json".into()],
                                &[0],
                            ),
                        };
                    let o = cairn(store, &args);
                    let code = o.status.code().unwrap_or(-1);
                    if !allowed.contains(&code) {
                        failures.lock().unwrap().push(format!(
                            "{args:?} -> {code}: {}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        ));
                    }
                    *counts.lock().unwrap().entry(op.to_string()).or_default() += 1;
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    let counts = counts.into_inner().unwrap();
    eprintln!("operations run: {counts:?}");
    assert!(
        counts.get("prune").copied().unwrap_or(0) > 0
            && counts.get("import").copied().unwrap_or(0) > 0
    );

    let o = cairn(&store, &["fsck".into()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let o = cairn(&store, &["images".into(), "--format".into(), "json".into()]);
    let images: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut checked = 0;
    for img in images.as_array().unwrap() {
        let digest = img["digest"].as_str().unwrap();
        let fx = fixtures
            .iter()
            .find(|f| f.manifest.to_string() == digest)
            .unwrap_or_else(|| panic!("unknown image {digest}"));
        for name in img["names"].as_array().unwrap() {
            let out = t.path().join(format!("check-{checked}"));
            let o = cairn(
                &store,
                &[
                    "export".into(),
                    name.as_str().unwrap().into(),
                    format!("oci:{}", out.display()),
                ],
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let mut want = vec![fx.manifest, fx.config];
            want.extend(&fx.layers);
            want.sort();
            assert_eq!(layout_blobs(&out), want, "{name} reads back intact");
            checked += 1;
        }
    }
    eprintln!("{checked} tagged names read back intact");
}
