//! What Cairn's end-to-end tests share: the busybox fixture image, and a
//! runner for `harness = false` test binaries (which must call the sandbox
//! init hook in `main`, so libtest's runner cannot be used) that runs the
//! suite and, as root, runs it again as the unprivileged test user.

pub mod fault_proxy;
pub mod http_server;
pub mod postgres_server;
pub mod registry_server;

use cairn_store::image_config::{Field, History};
use cairn_store::reference::ImageRef;
use cairn_store::transport::Transport;
use cairn_store::Store;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The unprivileged user with a subordinate range (scripts/setup-test-env.sh).
pub fn test_user() -> String {
    std::env::var("CAIRN_TEST_USER").unwrap_or_else(|_| "cairntest".into())
}

/// Write the busybox fixture image as an OCI layout at `dir` (tag `fixture`).
pub fn busybox_layout(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/busybox/make-image.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(dir)
        .output()
        .expect("running make-image.sh");
    assert!(
        out.status.success(),
        "make-image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// A store at `dir/store` holding the busybox fixture as `busybox:fixture`.
pub fn store_with_busybox(dir: &Path) -> Store {
    let layout = busybox_layout(&dir.join("layout"));
    let store = Store::open(dir.join("store")).expect("opening the store");
    let source = Transport::parse(&format!("oci:{}:fixture", layout.display())).expect("transport");
    let name = ImageRef::parse("busybox:fixture").expect("name");
    store
        .import(&source, Some(&name))
        .expect("importing the fixture");
    store
}

/// The fixture's single layer extracted with tar into `dir/layer` (for tests
/// below the store).
pub fn busybox_layer_dir(dir: &Path) -> PathBuf {
    let layout = busybox_layout(&dir.join("layout"));
    let layer = dir.join("layer");
    std::fs::create_dir_all(&layer).expect("mkdir");
    for blob in std::fs::read_dir(layout.join("blobs/sha256")).expect("blobs") {
        let blob = blob.expect("entry").path();
        if std::fs::read(&blob)
            .expect("read")
            .starts_with(&[0x1f, 0x8b])
        {
            let st = Command::new("tar")
                .arg("-xzf")
                .arg(&blob)
                .arg("-C")
                .arg(&layer)
                .status();
            assert!(st.is_ok_and(|s| s.success()), "tar -x of the fixture layer");
        }
    }
    layer
}

/// One test of a suite: its name and body.
pub type TestCase<F> = (&'static str, fn(&F));

/// `[(name, fn)]` from test functions.
#[macro_export]
macro_rules! test_cases {
    ($fixture:ty; $($test:ident),* $(,)?) => {
        &[$((stringify!($test), $test as fn(&$fixture))),*]
    };
}

/// The `main` of a custom-harness suite: the sandbox init hook (the caller
/// imports `init_hook`), one `Fixture::new()`, then [`run_suite`] over the
/// listed tests.
#[macro_export]
macro_rules! suite_main {
    ($fixture:ty; $($test:ident),* $(,)?) => {
        fn main() {
            init_hook();
            let fixture = <$fixture>::new();
            $crate::run_suite(fixture, $crate::test_cases![$fixture; $($test),*])
        }
    };
}

/// Run `tests` against `fixture`, then (as root, when the test user exists)
/// this same binary again as the test user; print a `N passed, N failed`
/// line and exit non-zero on any failure. The fixture is dropped before the
/// exit, so the servers it holds (registries, PostgreSQL) stop with the
/// suite instead of outliving it.
pub fn run_suite<F>(fixture: F, tests: &[TestCase<F>]) -> ! {
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&fixture))).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            passed += 1
        } else {
            failed += 1
        }
    }
    match rerun_rootless() {
        Some(true) => passed += 1,
        Some(false) => failed += 1,
        None => {}
    }
    // The run as the test user is counted once, by its parent's rootless_suite
    // line: its own summary carries a prefix so totals do not count it twice.
    let prefix = if std::env::var_os("CAIRN_TEST_ROOTLESS").is_some() {
        "rootless: "
    } else {
        ""
    };
    println!("{prefix}{passed} passed, {failed} failed");
    drop(fixture);
    std::process::exit(if failed > 0 { 1 } else { 0 })
}

/// As root, run the current binary again as the test user.
fn rerun_rootless() -> Option<bool> {
    let user = test_user();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if !is_root || std::env::var_os("CAIRN_TEST_ROOTLESS").is_some() {
        return None;
    }
    if !Command::new("id")
        .arg(&user)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        println!("test rootless_suite ... skipped (no user {user}; run scripts/setup-test-env.sh)");
        return None;
    }
    let exe = std::env::current_exe().expect("current exe");
    let status = Command::new("runuser")
        .args(["-u", &user, "--"])
        .arg(exe)
        .env("CAIRN_TEST_ROOTLESS", "1")
        .current_dir("/tmp")
        .status()
        .expect("runuser");
    println!(
        "test rootless_suite (as {user}) ... {}",
        if status.success() { "ok" } else { "FAILED" }
    );
    Some(status.success())
}

/// Add a layer holding one file of `bytes` pseudo-random (incompressible)
/// bytes, seeded by `seed`, on top of the store image `base`; tag the result
/// `name` and return its manifest digest. Gives tests and benches images
/// with layers of a chosen size.
pub fn add_random_layer(
    store: &Store,
    base: &str,
    bytes: usize,
    seed: u64,
    name: &str,
) -> cairn_store::Digest {
    add_random_layer_compressed(
        store,
        base,
        bytes,
        seed,
        name,
        cairn_layer::Compression::Gzip,
    )
}

/// [`add_random_layer`] with the layer compressed as `compression`.
pub fn add_random_layer_compressed(
    store: &Store,
    base: &str,
    bytes: usize,
    seed: u64,
    name: &str,
    compression: cairn_layer::Compression,
) -> cairn_store::Digest {
    use cairn_layer::{write_layer, DiffSource, LayerOptions};
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(dir.path().join(format!("random-{seed}.bin"))).expect("create"),
        );
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut left = bytes;
        while left > 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let chunk = x.to_le_bytes();
            let n = left.min(8);
            f.write_all(&chunk[..n]).expect("write");
            left -= n;
        }
        f.flush().expect("flush");
    }
    let opts = LayerOptions {
        compression,
        level: Some(1),
        ..LayerOptions::default()
    };
    let mut w = store.blob_writer().expect("blob writer");
    let info = write_layer(DiffSource::Full(dir.path()), &opts, &mut w).expect("write layer");
    w.commit(Some((info.digest, info.size)))
        .expect("commit layer");

    let base = store.resolve(base).expect("base image");
    let image = store.image(&base).expect("base image");
    let mut config = image.config.clone();
    config.push_diff_id(&info.diff_id);
    if let Field::Set(history) = &mut config.history {
        history.push(History {
            created_by: Field::Set(format!("random layer of {bytes} bytes")),
            ..History::default()
        });
    }
    let mut layers = image.blobs();
    layers.push(cairn_store::image::BlobRef {
        digest: info.digest,
        media_type: info.media_type.to_string(),
        size: info.size,
    });
    let manifest = store.record_image(&config, &layers).expect("record image");
    store
        .tag(&ImageRef::parse(name).expect("name"), &manifest)
        .expect("tag");
    manifest
}

/// A second unprivileged user *without* a subordinate range, for the
/// single-ID fallback (scripts/setup-test-env.sh makes it; as root this makes
/// it too when it is missing). None when not root, or when the user exists
/// but has a range after all (then the fallback cannot be shown with it).
pub fn norange_user() -> Option<String> {
    let user = std::env::var("CAIRN_TEST_NORANGE_USER").unwrap_or_else(|_| "cairnnorange".into());
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if !is_root {
        return None;
    }
    let exists = |u: &str| {
        Command::new("id")
            .arg(u)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !exists(&user) {
        // Concurrent test binaries may race here: whoever loses sees it exist.
        let _ = Command::new("useradd")
            .args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"])
            .args(["--no-create-home", "--shell", "/bin/sh", &user])
            .stderr(Stdio::null())
            .status();
        if !exists(&user) {
            return None;
        }
    }
    let has_range = ["/etc/subuid", "/etc/subgid"].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(':').next() == Some(user.as_str()))
    });
    (!has_range).then_some(user)
}
