//! A sandbox from an active local snapshot, end to end through the
//! library as a platform service calls it: `start_sandbox` (record lookup,
//! sandbox create, last-used update) + `exec true`. The sandbox issue's
//! target (median under 20 ms) applies with the bookkeeping included.
//! `sandbox_only` is the same create + exec without the snapshot record.

use cairn_registry::{Regions, Registry, RegistryOptions};
use cairn_sandbox::manager::{Argv, CreateOptions, ExecOptions, SandboxManager};
use cairn_sandbox::{init_hook, Launcher, RunStdio};
use cairn_snapshot::{CreateRequest, SnapshotService, Source};
use criterion::Criterion;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn quiet_true() -> ExecOptions {
    ExecOptions {
        argv: Argv::Direct(vec!["true".into()]),
        stdio: RunStdio {
            stdin: Some(Stdio::null()),
            stdout: Some(Stdio::null()),
            stderr: None,
            ..RunStdio::default()
        },
        ..ExecOptions::default()
    }
}

fn main() {
    init_hook();
    let dir = tempfile::Builder::new()
        .prefix("cairn-snapshot-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let store = cairn_testsupport::store_with_busybox(dir.path());
    let launcher = Launcher::current_exe().unwrap();
    let registry = Registry::new(RegistryOptions::from_env()).unwrap();
    let svc =
        SnapshotService::open(&store, launcher.clone(), &registry, Regions::default()).unwrap();
    let req = CreateRequest {
        name: "bench:1".into(),
        ..CreateRequest::default()
    };
    svc.create(
        "org",
        Source::LocalImage("busybox:fixture".into()),
        req,
        &mut |_| {},
    )
    .unwrap();
    let mgr = SandboxManager::new(&store, launcher);
    // Warm: layers extracted once.
    let (_, first) = svc
        .start_sandbox("org", "bench:1", None, CreateOptions::default())
        .unwrap();
    let mut made = vec![first.id];
    nix::unistd::sync();
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(50)
        .measurement_time(Duration::from_secs(6));
    let mut time = |label: &str, start: &mut dyn FnMut() -> String| {
        c.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let id = start();
                    let out = mgr.exec(&id, quiet_true()).unwrap();
                    total += t.elapsed();
                    assert_eq!(out.exit_code, 0);
                    made.push(id);
                }
                total
            })
        });
    };
    time("snapshot_start/from_snapshot", &mut || {
        svc.start_sandbox("org", "bench:1", None, CreateOptions::default())
            .unwrap()
            .1
            .id
    });
    time("snapshot_start/sandbox_only", &mut || {
        mgr.create("localhost/snapshots/org/bench:1", CreateOptions::default())
            .unwrap()
            .id
    });
    c.final_summary();
    for id in made {
        let _ = mgr.remove(&id);
    }
}
