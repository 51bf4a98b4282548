//! A pull in two halves: [`Registry::resolve`] (manifest and config into
//! memory, no store needed) and [`Registry::pull_resolved`], against a real
//! registry (Debian's docker-registry on a loopback port) behind the
//! logging proxy.

use cairn_registry::auth::AuthFiles;
use cairn_registry::{Registry, RegistryError, RegistryOptions, RetryPolicy};
use cairn_store::Store;
use cairn_testsupport::fault_proxy::FaultProxy;
use cairn_testsupport::registry_server::RegistryServer;
use cairn_testsupport::store_with_busybox;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn registry(dir: &Path) -> Registry {
    let mut o = RegistryOptions::from_env();
    // Never the machine's own credentials.
    o.auth = AuthFiles::with_authfile(dir.join("auth.json"));
    o.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(1),
    };
    Registry::new(o).expect("registry client")
}

/// The registry's file holding blob `digest` (`sha256:<hex>`).
fn registry_blob(reg: &RegistryServer, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    reg.storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

#[test]
fn resolve_needs_no_store_and_asks_for_a_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = store_with_busybox(dir.path());
    let reg = RegistryServer::start();
    let proxy = FaultProxy::start(reg.addr());
    let client = registry(dir.path());
    let dest = format!("{}/team/busybox:v1", proxy.host());
    let pushed = client.push(&src, "busybox:fixture", &dest).unwrap();
    let (_, parsed) = src.manifest(&pushed.manifest).unwrap();
    let config = parsed.config.unwrap().digest.to_string();
    let layer = parsed.children[0].digest.to_string();
    let before = proxy.requests().len();

    // Resolved before the store exists.
    let root = dir.path().join("not-yet");
    let resolved = client.resolve(&dest).unwrap();
    assert!(!root.exists());
    let seen: Vec<_> = proxy.requests()[before..]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    let gets = |what: &str| seen.iter().filter(|(m, p)| m == "GET" && p == what).count();
    assert_eq!(
        gets("/v2/"),
        1,
        "one token request for manifest and config: {seen:?}"
    );
    assert_eq!(gets("/v2/team/busybox/manifests/v1"), 1, "{seen:?}");
    assert_eq!(
        gets(&format!("/v2/team/busybox/blobs/{config}")),
        1,
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|(_, p)| p.contains(&layer)),
        "no layer before the store: {seen:?}"
    );

    // The rest into the store opened since: the config comes from memory.
    let store = Store::open(&root).unwrap();
    let report = client.pull_resolved(&store, resolved, None, None).unwrap();
    assert_eq!(report.manifest, pushed.manifest);
    assert_eq!((report.blobs_fetched, report.blobs_present), (2, 0));
    assert_eq!(store.resolve(&dest).unwrap(), pushed.manifest);
    assert!(store.fsck().unwrap().is_empty());
    let config_gets = proxy.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&config))
        .count();
    assert_eq!(config_gets, 1, "the config is fetched once");

    // Into a store that has everything: nothing fetched.
    let again = client
        .pull_resolved(&store, client.resolve(&dest).unwrap(), None, None)
        .unwrap();
    assert_eq!((again.blobs_fetched, again.blobs_present), (0, 2));
}

#[test]
fn a_config_that_is_not_what_its_digest_says_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = store_with_busybox(dir.path());
    let reg = RegistryServer::start();
    let client = registry(dir.path());
    let dest = format!("{}/team/busybox:v1", reg.host());
    let pushed = client.push(&src, "busybox:fixture", &dest).unwrap();
    let (_, parsed) = src.manifest(&pushed.manifest).unwrap();
    let config = parsed.config.unwrap().digest;

    // Same length, one byte changed; then one byte longer.
    let path = registry_blob(&reg, &config.to_string());
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    flipped[0] ^= 1;
    let mut longer = good.clone();
    longer.push(b' ');
    for bad in [flipped, longer] {
        std::fs::write(&path, &bad).unwrap();
        let err = match client.resolve(&dest) {
            Ok(_) => panic!("a config that does not match its digest was accepted"),
            Err(e) => e,
        };
        assert!(
            matches!(&err, RegistryError::DigestMismatch { target, .. } if target.what.contains(&config.to_string())),
            "{err}"
        );

        // The one-call pull refuses it too, and leaves nothing behind.
        let store = Store::open(dir.path().join(format!("s{}", bad.len()))).unwrap();
        let err = client.pull(&store, &dest, None).unwrap_err();
        assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
        assert!(!store.has_blob(&config));
        assert!(store.images().unwrap().is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(store.layout().tmp()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
