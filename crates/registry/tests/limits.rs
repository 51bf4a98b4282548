//! Untrusted registries: a manifest body that never ends is refused with
//! memory bounded, from a loopback server that keeps sending.

use cairn_registry::auth::AuthFiles;
use cairn_registry::{Registry, RegistryError, RegistryOptions, RetryPolicy};
use cairn_store::Store;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The server stops on its own after this much, so a client that reads
/// without a bound fails the test instead of hanging it.
const SERVER_GIVES_UP: u64 = 512 << 20;

/// Serve `/v2/` (200, no auth) and an endless chunked manifest; returns the
/// port and the count of manifest bytes the client accepted.
fn endless_manifest_server() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    if !request.contains("/manifests/") {
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n{}",
                        );
                        continue;
                    }
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n",
                    );
                    let chunk = vec![b' '; 64 * 1024];
                    let framed =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    while counter.load(Ordering::Relaxed) < SERVER_GIVES_UP {
                        if conn.write_all(&framed).is_err() {
                            return; // the client hung up
                        }
                        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    let _ = conn.write_all(b"0\r\n\r\n");
                    return;
                }
            });
        }
    });
    (port, sent)
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn endless_manifest_is_refused_with_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (port, sent) = endless_manifest_server();
    let mut opts = RegistryOptions::from_env();
    opts.auth = AuthFiles::with_authfile(dir.path().join("auth.json"));
    opts.retry = RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
        max_retry_after: Duration::from_secs(1),
    };
    let registry = Registry::new(opts).unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let before = peak_rss_kib();
    let err = registry
        .pull(
            &store,
            &format!("127.0.0.1:{port}/endless/image:latest"),
            None,
        )
        .unwrap_err();
    let grown_kib = peak_rss_kib().saturating_sub(before);
    let too_large = |e: &RegistryError| matches!(e, RegistryError::TooLarge { limit, .. } if *limit == cairn_registry::manifest_fetch::MAX_MANIFEST_SIZE);
    let ok = match &err {
        RegistryError::GaveUp { last, .. } => too_large(last),
        e => too_large(e),
    };
    assert!(ok, "expected TooLarge, got {err}");
    assert!(err.is_bad_input(), "{err}");
    assert!(err.to_string().contains("manifest"), "{err}");
    // The client stopped reading soon after the cap (socket buffers aside),
    // and its memory did not grow with what the server offered.
    let accepted = sent.load(Ordering::Relaxed);
    assert!(accepted < 64 << 20, "the server got {accepted} bytes out");
    assert!(grown_kib < 64 * 1024, "peak RSS grew by {grown_kib} KiB");
}
