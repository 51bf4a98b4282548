//! Sandbox start latency: from the library call to `true` having run and
//! exited, over the busybox fixture's already-extracted layer. Each iteration
//! gets fresh upper/work/merged dirs (nothing is deleted until the end: see
//! DESIGN.md on ext4 after mass deletions).
//!
//! The peers (`unshare ... chroot`, buildah from/run/rm) are timed by
//! benches/sandbox-baseline.sh in the same session.

use cairn_sandbox::idmap::IdMapping;
use cairn_sandbox::{init_hook, Launcher, Network, ProcessSpec, RootfsSpec, RunSpec, RunStdio};
use criterion::Criterion;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

fn main() {
    init_hook();
    let tmp = tempfile::tempdir().expect("tempdir");
    let layer = cairn_testsupport::busybox_layer_dir(tmp.path());
    let launcher = Launcher::current_exe().expect("current exe");
    let mapping = IdMapping::for_current_user();
    let counter = AtomicUsize::new(0);
    let mut c = Criterion::default().configure_from_args().sample_size(100);
    for network in [Network::Host, Network::None] {
        let name = format!("sandbox_start_true/{network:?}").to_lowercase();
        c.bench_function(&name, |b| {
            b.iter(|| {
                let dir = tmp
                    .path()
                    .join(format!("s{}", counter.fetch_add(1, Ordering::Relaxed)));
                for sub in ["upper", "work", "merged"] {
                    std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
                }
                let spec = RunSpec {
                    rootfs: RootfsSpec {
                        layers: vec![layer.clone()],
                        upper: dir.join("upper"),
                        work: dir.join("work"),
                        merged: dir.join("merged"),
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
                    id_mapping: mapping.clone(),
                    pids_limit: None,
                    security: Default::default(),
                };
                let stdio = RunStdio {
                    stdin: Some(Stdio::null()),
                    stdout: None,
                    stderr: None,
                    ..RunStdio::default()
                };
                let outcome = launcher.run(&spec, stdio, None).expect("run");
                assert_eq!(outcome.exit_code, 0);
            })
        });
    }
    c.final_summary();
}
