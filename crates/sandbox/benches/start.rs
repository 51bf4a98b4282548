//! Sandbox start latency over the busybox fixture's already-extracted
//! layer, through the library's run API (`Launcher::run`), the hardening of
//! `Security::default()` on (seccomp, capabilities, masked paths):
//!
//! * `sandbox_start_true/{host,none}`: from the call to its return, `true`
//!   having run and exited (the return comes on PID 1's report; the
//!   namespaces' teardown goes on in the background);
//! * `sandbox_start_to_exec/{host,none}`: from the call to `true`'s exec,
//!   as PID 1 reports it (`RunOutcome::exec_after`), the issue's "sandbox
//!   creation to the command's exec".
//!
//! Each iteration gets fresh upper/work/merged dirs (nothing is deleted
//! until the end: see DESIGN.md on ext4 after mass deletions). Run it as
//! root and as a user with a subordinate range; `CAIRN_SANDBOX_SPAWN=exec`
//! measures the exec'd helper instead of the fork. The peers (`unshare ...
//! chroot`, buildah from/run/rm) are timed by benches/sandbox-baseline.sh.

use cairn_sandbox::idmap::IdMapping;
use cairn_sandbox::{
    init_hook, Launcher, Network, ProcessSpec, RootfsSpec, RunOutcome, RunSpec, RunStdio,
};
use criterion::Criterion;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn main() {
    init_hook();
    let tmp = tempfile::tempdir().expect("tempdir");
    let layer = cairn_testsupport::busybox_layer_dir(tmp.path());
    let launcher = Launcher::current_exe().expect("current exe");
    let counter = AtomicUsize::new(0);
    let run = |network: Network| -> RunOutcome {
        let dir = tmp
            .path()
            .join(format!("s{}", counter.fetch_add(1, Ordering::Relaxed)));
        let outcome = launcher
            .run(&spec(&layer, &dir, network), null_stdin(), None)
            .expect("run");
        assert_eq!(outcome.exit_code, 0, "{outcome:?}");
        outcome
    };
    let mut c = Criterion::default().configure_from_args().sample_size(100);
    for network in [Network::Host, Network::None] {
        let suffix = format!("{network:?}").to_lowercase();
        c.bench_function(&format!("sandbox_start_true/{suffix}"), |b| {
            b.iter(|| run(network))
        });
        c.bench_function(&format!("sandbox_start_to_exec/{suffix}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run(network).exec_after.expect("PID 1 reports the exec"))
                    .sum::<Duration>()
            })
        });
    }
    c.final_summary();
}

/// `true` over `layer`, in fresh dirs under `dir`.
fn spec(layer: &Path, dir: &Path, network: Network) -> RunSpec {
    for sub in ["upper", "work", "merged"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    RunSpec {
        rootfs: RootfsSpec {
            layers: vec![layer.to_path_buf()],
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            volatile: true,
        },
        process: ProcessSpec {
            args: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: String::new(),
        },
        network,
        hostname: "bench".into(),
        bind_files: vec![],
        mounts: vec![],
        id_mapping: IdMapping::for_current_user(),
        pids_limit: Some(2048),
        security: Default::default(),
    }
}

fn null_stdin() -> RunStdio {
    RunStdio {
        stdin: Some(Stdio::null()),
        ..RunStdio::default()
    }
}
