//! Crash safety: SIGKILL `cairn import` (and sometimes `cairn prune`) of a
//! 216 MiB four-layer image at random moments; after each kill the store
//! passes fsck, and the import run again succeeds with the same digests.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn cairn(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

fn ok(store: &Path, args: &[&str]) -> String {
    let o = cairn(store, args);
    assert!(
        o.status.success(),
        "cairn {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Bytes in the store's blobs/ and tmp/: how far an import has come.
fn progress(store: &Path) -> u64 {
    ["blobs/sha256", "tmp"]
        .iter()
        .filter_map(|d| std::fs::read_dir(store.join(d)).ok())
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Spawn `cairn ARGS` and SIGKILL it once the store holds `at_bytes` (or
/// after `after` if given); returns whether it was still running when killed.
fn kill_at(store: &Path, args: &[&str], at_bytes: u64, after: Option<Duration>) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--store")
        .arg(store)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    match after {
        Some(d) => std::thread::sleep(d),
        None => {
            while child.try_wait().unwrap().is_none() && progress(store) < at_bytes {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // SIGKILL on Unix
    child.wait().unwrap();
    killed
}

#[test]
#[cfg_attr(debug_assertions, ignore = "slow: run with cargo test --release")]
fn sigkilled_imports_leave_a_sound_store() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let fx = make_image(
        &src,
        "big:v1",
        &[64 << 20, 64 << 20, 48 << 20, 40 << 20],
        42,
    );
    let archive = t.path().join("big.tar");
    tar_dir(&src, &archive);
    let store = t.path().join("store");
    let sources = [
        format!("oci-archive:{}", archive.display()),
        format!("oci:{}:big:v1", src.display()),
    ];
    // Kill moments are drawn by progress (bytes written into the store), so
    // they spread over the whole import whatever the machine's speed.
    ok(&store, &["import", &sources[0]]);
    let total = progress(&store);
    ok(&store, &["rmi", "big:v1"]);
    ok(&store, &["prune"]);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut killed_mid_run = 0;
    // Keep going until 20 kills have landed while the import was running
    // (kills that come after it finished still check the store), at most 40 runs.
    let mut i = 0;
    while killed_mid_run < 20 && i < 40 {
        let source = &sources[i % 2];
        // Up to 105% of the blob bytes: the last kills land while the
        // manifest is recorded and the tag written.
        let at = (total as f64 * rng.gen_range(0.0..1.05)) as u64;
        if kill_at(&store, &["import", source], at, None) {
            killed_mid_run += 1;
        }
        let fsck = ok(&store, &["fsck"]);
        assert_eq!(fsck.trim(), "ok", "after kill {i} at {at:?}");
        // Run again: succeeds, same digest, and the image reads back whole.
        assert!(ok(&store, &["import", source]).contains(&fx.manifest.to_string()));
        let images = ok(&store, &["images", "--format", "json"]);
        assert!(images.contains(&fx.manifest.to_string()), "{images}");
        assert_eq!(ok(&store, &["fsck"]).trim(), "ok");
        ok(&store, &["rmi", "big:v1"]);
        if i % 4 == 3 {
            // Kill a prune too: it must never leave a name pointing at nothing.
            kill_at(
                &store,
                &["prune"],
                0,
                Some(Duration::from_millis(rng.gen_range(0..40))),
            );
            assert_eq!(ok(&store, &["fsck"]).trim(), "ok");
        }
        ok(&store, &["prune"]);
        i += 1;
    }
    eprintln!("{i} runs, {killed_mid_run} killed mid-import");
    assert!(
        killed_mid_run >= 20,
        "only {killed_mid_run} kills landed mid-import"
    );
    let out = t.path().join("out");
    ok(&store, &["import", &sources[0]]);
    ok(
        &store,
        &["export", "big:v1", &format!("oci:{}", out.display())],
    );
    assert_eq!(layout_blobs(&out), layout_blobs(&src));
}
