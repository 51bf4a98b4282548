//! What the build test suites share: writing a context, the request every
//! test starts from, which steps ran, and unpacking a result with umoci.
#![allow(dead_code)] // each suite uses its own part

use cairn_builder::{BuildRequest, BuildResult, StepOutcome};
use cairn_layer::Compression;
use cairn_sandbox::Network;
use cairn_store::transport::Transport;
use cairn_store::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `root/name` holding `dockerfile` as its Dockerfile and `files`
/// (parents made).
pub fn write_context<B: AsRef<[u8]>>(
    root: &Path,
    name: &str,
    dockerfile: &str,
    files: &[(&str, B)],
) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (path, body) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    dir
}

/// A build of `context/Dockerfile` tagged `tag`, with the defaults of
/// `cairn build` (gzip, host network, the cache on).
pub fn request(context: &Path, tag: &str) -> BuildRequest {
    BuildRequest {
        dockerfile: std::fs::read_to_string(context.join("Dockerfile")).unwrap(),
        dockerfile_path: context.join("Dockerfile"),
        context: context.to_path_buf(),
        tags: vec![tag.to_string()],
        build_args: HashMap::new(),
        target: None,
        no_cache: false,
        compression: Compression::Gzip,
        timestamp: None,
        network: Network::Host,
        run_policy: Default::default(),
        organization: None,
        cache_from: vec![],
        cache_to: vec![],
        cancel: None,
    }
}

/// The Dockerfile lines of the steps that ran (not cached, not config).
pub fn ran_lines(result: &BuildResult) -> Vec<usize> {
    result
        .steps
        .iter()
        .filter(|s| s.outcome == StepOutcome::Ran)
        .map(|s| s.line)
        .collect()
}

/// Export `manifest` to an OCI layout under `dir` and `umoci unpack` it, as
/// a real peer reads it; the rootfs (unpacked once per manifest).
pub fn unpack(store: &Store, dir: &Path, manifest: &str) -> PathBuf {
    let out = dir.join(format!("export-{}", &manifest[7..19]));
    let bundle = dir.join(format!("bundle-{}", &manifest[7..19]));
    if !bundle.exists() {
        store
            .export(
                manifest,
                &Transport::parse(&format!("oci:{}:t", out.display())).unwrap(),
            )
            .unwrap();
        let st = Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:t", out.display()))
            .arg(&bundle)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "umoci unpack failed");
    }
    bundle.join("rootfs")
}

/// A store holding the busybox fixture as `busybox:fixture`, in a temp dir
/// that also takes the tests' contexts. Suites add their own methods.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub store: Store,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = cairn_testsupport::store_with_busybox(tmp.path());
        Fixture { tmp, store }
    }

    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        write_context(self.tmp.path(), name, dockerfile, files)
    }
}
