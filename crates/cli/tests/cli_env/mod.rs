//! The CLI tests' shared environment: a store holding the busybox fixture,
//! owned by and used as either root or the unprivileged test user.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const TEST_USER: &str = "cairntest";

/// A store with the busybox fixture imported as busybox:fixture, owned by `user`.
pub struct Env {
    pub _tmp: tempfile::TempDir,
    pub store: PathBuf,
    pub user: Option<&'static str>,
}

impl Env {
    pub fn new(user: Option<&'static str>) -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("cairn-cli-")
            .tempdir_in("/tmp")
            .unwrap();
        if let Some(u) = user {
            let st = Command::new("chown")
                .arg(u)
                .arg(tmp.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let env = Env {
            store: tmp.path().join("store"),
            _tmp: tmp,
            user,
        };
        let layout = env._tmp.path().join("layout");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/busybox/make-image.sh");
        let out = env.command(
            "bash",
            &[script.to_str().unwrap(), layout.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = env.cairn(&[
            "import",
            &format!("oci:{}:fixture", layout.display()),
            "busybox:fixture",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// The test's temp dir (owned by the test user when there is one).
    pub fn dir(&self) -> &Path {
        self._tmp.path()
    }

    pub fn command(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = match self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", program]);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .env("CAIRN_STORE", &self.store)
            .current_dir("/tmp")
            .stdin(Stdio::null());
        cmd.output().unwrap()
    }

    pub fn cairn(&self, args: &[&str]) -> Output {
        self.command(env!("CARGO_BIN_EXE_cairn"), args)
    }

    /// `cairn ARGS` run in `cwd` with `input` on its stdin.
    pub fn cairn_at(&self, cwd: &Path, input: &[u8], args: &[&str]) -> Output {
        self.program_at(env!("CARGO_BIN_EXE_cairn"), cwd, input, args)
    }

    /// `PROGRAM ARGS` in the test dir with `input` on its stdin.
    pub fn cairn_at_cmd(&self, program: &str, input: &[u8], args: &[&str]) -> Output {
        self.program_at(program, self.dir(), input, args)
    }

    fn program_at(&self, program: &str, cwd: &Path, input: &[u8], args: &[&str]) -> Output {
        use std::io::Write;
        let mut cmd = match self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", program]);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .env("CAIRN_STORE", &self.store)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }

    /// A directory in the test dir that the test user may use.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let d = self.dir().join(name);
        std::fs::create_dir_all(&d).unwrap();
        self.give_to_user(&d);
        d
    }

    /// Give `path`, recursively, to the test user (when the test runs as one).
    pub fn give_to_user(&self, path: &Path) {
        if let Some(u) = self.user {
            assert!(Command::new("chown")
                .args(["-R", u])
                .arg(path)
                .status()
                .unwrap()
                .success());
        }
    }

    /// A context dir `name` in the test dir holding `files` (relative path,
    /// body; parents made), the test user's.
    pub fn context_dir(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (path, body) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        self.give_to_user(&dir);
        dir
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn users() -> Vec<Option<&'static str>> {
    let mut users = vec![None];
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    let has_user = Command::new("id")
        .arg(TEST_USER)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if is_root && has_user {
        users.push(Some(TEST_USER));
    } else {
        eprintln!("note: rootless half skipped (needs root and user {TEST_USER})");
    }
    users
}

/// The stdout of a command that must have succeeded (else its stderr in the panic).
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A regions file in the test dir naming `regions` (id, registry host), each
/// at `<host>/snap`, with an optional default region; returns its path.
pub fn write_regions(env: &Env, default: Option<&str>, regions: &[(&str, String)]) -> PathBuf {
    let mut text = default.map_or_else(String::new, |d| format!("default = \"{d}\"\n"));
    for (id, host) in regions {
        text.push_str(&format!("[regions.{id}]\nregistry = \"{host}/snap\"\n"));
    }
    let path = env.dir().join("regions.toml");
    std::fs::write(&path, text).unwrap();
    path
}
