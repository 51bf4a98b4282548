//! Exec with captured and streamed output, and file writes and reads into
//! a sandbox without a shell. Runs as root and again as the unprivileged
//! test user (harness = false: `main` calls the init hook first).

use cairn_sandbox::manager::{Argv, CreateOptions, ExecOptions, ManagerError, SandboxManager};
use cairn_sandbox::{init_hook, Launcher, StdStream};

fn argv(args: &[&str]) -> ExecOptions {
    ExecOptions {
        argv: Argv::Direct(args.iter().map(|s| s.to_string()).collect()),
        ..ExecOptions::default()
    }
}

/// 1 MiB on each stream, interleaved: reading one pipe after the other (or
/// after the command ends) would deadlock past 64 KiB.
fn output_past_a_pipe_is_captured(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap());
    let sb = manager
        .create("busybox:fixture", CreateOptions::default())
        .unwrap();
    let script = "i=0; while [ $i -lt 16 ]; do head -c 65536 /dev/zero; head -c 65536 /dev/zero >&2; i=$((i+1)); done; exit 3";
    let out = manager
        .exec_output(&sb.id, argv(&["/bin/sh", "-c", script]))
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout.len(), 1 << 20);
    assert_eq!(out.stderr.len(), 1 << 20);

    let mut seen = Vec::new();
    let outcome = manager
        .exec_streaming(
            &sb.id,
            argv(&["/bin/sh", "-c", "echo out; echo err >&2"]),
            &mut |stream, bytes| seen.push((stream, bytes.to_vec())),
        )
        .unwrap();
    assert_eq!(outcome.exit_code, 0);
    assert!(
        seen.contains(&(StdStream::Stdout, b"out\n".to_vec())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(StdStream::Stderr, b"err\n".to_vec())),
        "{seen:?}"
    );
    manager.remove(&sb.id).unwrap();
}

/// write_file makes the file as the sandbox user with the mode asked for;
/// read_file returns it; a missing file is "not found".
fn files_are_written_as_the_sandbox_user(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap());
    let single = manager.id_mapping().single_id;
    let sb = manager
        .create("busybox:fixture", CreateOptions::default())
        .unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    manager
        .write_file(&sb.id, "/tmp/blob.bin", &data, 0o640, None)
        .unwrap();
    assert_eq!(
        manager.read_file(&sb.id, "/tmp/blob.bin", None).unwrap(),
        data
    );
    let out = manager
        .exec_output(&sb.id, argv(&["stat", "-c", "%a %u:%g", "/tmp/blob.bin"]))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "640 0:0\n");
    if !single {
        // As a non-root user of the image: the file is that user's, and the
        // user's permissions apply (no writing into root's /etc).
        manager
            .write_file(&sb.id, "/tmp/mine", b"x", 0o600, Some("1000:1000"))
            .unwrap();
        let out = manager
            .exec_output(&sb.id, argv(&["stat", "-c", "%a %u:%g", "/tmp/mine"]))
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "600 1000:1000\n");
        let denied = manager
            .write_file(&sb.id, "/etc/passwd", b"x", 0o644, Some("1000:1000"))
            .unwrap_err();
        assert!(
            matches!(
                denied,
                ManagerError::File {
                    not_found: false,
                    ..
                }
            ),
            "{denied}"
        );
    }
    let missing = manager.read_file(&sb.id, "/no/such", None).unwrap_err();
    assert!(
        matches!(
            missing,
            ManagerError::File {
                not_found: true,
                ..
            }
        ),
        "{missing}"
    );
    manager.remove(&sb.id).unwrap();
}

/// A symlink planted in the sandbox towards the host's /etc/passwd (by an
/// absolute path and by `..`) resolves inside the sandbox: the host's file
/// is untouched, the sandbox's own copy is what is written.
fn symlinks_cannot_reach_the_host(_: &()) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let manager = SandboxManager::new(&store, Launcher::current_exe().unwrap());
    let sb = manager
        .create("busybox:fixture", CreateOptions::default())
        .unwrap();
    let host_before = std::fs::read("/etc/passwd").unwrap();
    let plant = "ln -s /etc/passwd /tmp/abs && ln -s ../../../../../../../../etc/passwd /tmp/rel";
    assert_eq!(
        manager
            .exec_output(&sb.id, argv(&["/bin/sh", "-c", plant]))
            .unwrap()
            .exit_code,
        0
    );
    for link in ["/tmp/abs", "/tmp/rel", "/../../../../tmp/abs"] {
        manager
            .write_file(&sb.id, link, b"owned::0:0::/:/bin/sh\n", 0o644, None)
            .unwrap();
    }
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), host_before);
    let inside = manager.read_file(&sb.id, "/etc/passwd", None).unwrap();
    assert_eq!(inside, b"owned::0:0::/:/bin/sh\n");
    manager.remove(&sb.id).unwrap();
}

fn main() {
    init_hook();
    cairn_testsupport::run_suite(
        (),
        cairn_testsupport::test_cases![();
            output_past_a_pipe_is_captured,
            files_are_written_as_the_sandbox_user,
            symlinks_cannot_reach_the_host,
        ],
    )
}
