//! Long-lived sandboxes over a real store: create from the busybox fixture,
//! exec twice into the same state, commit, start a new sandbox from the
//! committed image, remove. Runs as root and again as the unprivileged test
//! user (harness = false: `main` calls the init hook first).

use cairn_layer::Compression;
use cairn_sandbox::manager::{Argv, CreateOptions, ExecOptions, Resources, SandboxManager};
use cairn_sandbox::{init_hook, Launcher, RunStdio};
use cairn_store::transport::Transport;
use std::process::{Command, Stdio};

fn capture(manager: &SandboxManager, id: &str, argv: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let opts = ExecOptions {
        argv: Argv::Direct(argv.iter().map(|s| s.to_string()).collect()),
        stdio: RunStdio {
            stdin: Some(Stdio::null()),
            stdout: Some(std::fs::File::create(&out_path).unwrap().into()),
            stderr: None,
        },
        ..ExecOptions::default()
    };
    let outcome = manager.exec(id, opts).unwrap();
    (
        outcome.exit_code,
        std::fs::read_to_string(out_path).unwrap(),
    )
}

fn lifecycle(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap());
    let single = manager.id_mapping().single_id;

    let opts = CreateOptions {
        name: Some("first".into()),
        resources: Resources {
            cpu: Some(2.0),
            memory_gb: Some(1.0),
            pids: Some(200),
            ..Resources::default()
        },
        ..CreateOptions::default()
    };
    let sb = manager.create("busybox:fixture", opts).unwrap();
    assert_eq!(
        sb.resources.not_applied.len(),
        2,
        "cpu and memory must be reported as not applied"
    );
    assert!(
        store.has_layer_dir(&sb.layers[0]),
        "layer not extracted into the store"
    );

    // Two execs see one filesystem.
    let owner = if single { "0:0" } else { "1000:1000" };
    let script = format!(
        "echo hello > /greeting && mkdir /data && chown {owner} /data && rm /etc/nsswitch.conf"
    );
    assert_eq!(capture(&manager, "first", &["/bin/sh", "-c", &script]).0, 0);
    let (code, out) = capture(
        &manager,
        &sb.id,
        &[
            "/bin/sh",
            "-c",
            "cat /greeting; stat -c %u:%g /data; ls /etc",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("hello\n{owner}\n")), "{out}");
    assert!(
        !out.contains("nsswitch.conf"),
        "deletion lost between execs: {out}"
    );

    // Commit, and start a new sandbox from the committed image.
    let manifest = manager
        .commit("first", "localhost/committed:v1", Compression::Gzip)
        .unwrap();
    assert_eq!(store.resolve("localhost/committed:v1").unwrap(), manifest);
    let second = manager
        .create("localhost/committed:v1", CreateOptions::default())
        .unwrap();
    assert_eq!(second.layers.len(), 2);
    let (code, out) = capture(
        &manager,
        &second.id,
        &[
            "/bin/sh",
            "-c",
            "cat /greeting; stat -c %u:%g /data; ls /etc; ls -a /",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("hello\n{owner}\n")), "{out}");
    assert!(
        !out.contains("nsswitch.conf"),
        "whiteout lost in the commit: {out}"
    );
    // The /etc/hosts and /etc/hostname mount stubs were not committed
    // (the fixture has neither; they are bind mounts again in this run).
    let layer = store.layer_dir(&second.layers[1]);
    assert!(
        !layer.join("etc/hosts").exists() && !layer.join("etc/hostname").exists(),
        "mount stubs committed"
    );

    // The first sandbox carries on from its commit.
    let (code, out) = capture(&manager, "first", &["cat", "/greeting"]);
    assert_eq!((code, out.as_str()), (0, "hello\n"));

    // The committed image is readable by a real peer.
    let export = tmp.path().join("export");
    store
        .export(
            "localhost/committed:v1",
            &Transport::parse(&format!("oci:{}:v1", export.display())).unwrap(),
        )
        .unwrap();
    let umoci = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", export.display()))
        .arg(tmp.path().join("bundle"))
        .output();
    if let Ok(out) = umoci {
        assert!(
            out.status.success(),
            "umoci: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let greeting = std::fs::read_to_string(tmp.path().join("bundle/rootfs/greeting")).unwrap();
        assert_eq!(greeting, "hello\n");
        assert!(!tmp.path().join("bundle/rootfs/etc/nsswitch.conf").exists());
    }

    // Listing and removal.
    let ids: Vec<String> = manager.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 2);
    manager.remove("first").unwrap();
    manager.remove(&second.id).unwrap();
    assert!(manager.list().unwrap().is_empty());
    assert!(
        std::fs::read_dir(store.layout().sandboxes())
            .unwrap()
            .next()
            .is_none(),
        "sandbox dirs left behind"
    );
    assert!(manager.get("first").is_err());
}

fn main() {
    init_hook();
    cairn_testsupport::run_suite(&(), cairn_testsupport::test_cases![(); lifecycle])
}
