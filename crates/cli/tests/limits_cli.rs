//! Untrusted archives and the durable, private store through the binary,
//! as root and as the unprivileged test user: a 200 GB sparse bomb refused
//! through ADD and through `cairn run` of an image holding it, `fsck --full`
//! finding a truncated file in a layer dir, `prune` removing layer dirs
//! whose files belong to subordinate IDs, 0700 store dirs.

mod cli_env;

use cli_env::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BOMB_SIZE: u64 = 200_000_000_000;

/// A gzipped tar holding one GNU sparse file of `BOMB_SIZE` bytes that are
/// all hole: a few hundred bytes.
fn sparse_bomb_tgz() -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    let base256 = |field: &mut [u8; 12], v: u64| {
        *field = [0; 12];
        field[0] = 0x80;
        field[4..].copy_from_slice(&v.to_be_bytes());
    };
    let gnu = h.as_gnu_mut().unwrap();
    base256(&mut gnu.sparse[0].offset, BOMB_SIZE);
    base256(&mut gnu.sparse[0].numbytes, 0);
    base256(&mut gnu.realsize, BOMB_SIZE);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend(vec![0u8; 1024]);
    let mut child = Command::new("gzip")
        .arg("-9c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)[..64].to_string()
}

/// `cairn ARGS` as the env's user, with extra environment.
fn cairn_env(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = match env.user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", env!("CARGO_BIN_EXE_cairn")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_cairn")),
    };
    cmd.args(args)
        .env("CAIRN_STORE", &env.store)
        .envs(vars.iter().copied())
        .current_dir("/tmp")
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

fn chown_to(env: &Env, path: &Path) {
    env.give_to_user(path);
}

/// Bytes the store's files use on disk (holes not counted).
fn disk_use(path: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn context(env: &Env, name: &str, dockerfile: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = env.dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (n, body) in files {
        std::fs::write(dir.join(n), body).unwrap();
    }
    chown_to(env, &dir);
    dir
}

fn layer_entries(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.store.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn add_of_a_sparse_bomb_is_refused() {
    let bomb = sparse_bomb_tgz();
    assert!(bomb.len() < 1024, "{} bytes", bomb.len());
    for user in users() {
        let env = Env::new(user);
        let ctx = context(
            &env,
            "bomb",
            "FROM busybox:fixture\nADD bomb.tgz /x/\n",
            &[("bomb.tgz", &bomb)],
        );
        let before = disk_use(&env.store);
        let out = cairn_env(
            &env,
            &[("CAIRN_MAX_EXTRACT_SIZE", "1GiB")],
            &["build", "-t", "bomb:1", ctx.to_str().unwrap()],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{user:?}: {stderr}");
        assert!(stderr.contains("bomb.tgz"), "{stderr}");
        assert!(stderr.contains("1073741824"), "{stderr}");
        assert!(stderr.contains("CAIRN_MAX_EXTRACT_SIZE"), "{stderr}");
        let grown = disk_use(&env.store).saturating_sub(before);
        assert!(
            grown < 64 << 20,
            "{user:?}: the store grew by {grown} bytes"
        );
        let out = env.cairn(&["images"]);
        assert!(!text(&out.stdout).contains("bomb"), "nothing tagged");
        // A bad limit is bad input too.
        let out = cairn_env(
            &env,
            &[("CAIRN_MAX_EXTRACT_SIZE", "lots")],
            &["build", ctx.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("CAIRN_MAX_EXTRACT_SIZE"));
    }
}

/// An OCI layout whose only layer is the bomb.
fn bomb_layout(dir: &Path, bomb: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut tar = Vec::new();
    let mut gz = flate2_decode(bomb);
    std::io::Read::read_to_end(&mut gz, &mut tar).unwrap();
    let layer = sha256(bomb);
    std::fs::write(blobs.join(&layer), bomb).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/huge"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&tar))]},
    })
    .to_string();
    let config_hex = sha256(config.as_bytes());
    std::fs::write(blobs.join(&config_hex), &config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{layer}"), "size": bomb.len()}],
    })
    .to_string();
    let manifest_hex = sha256(manifest.as_bytes());
    std::fs::write(blobs.join(&manifest_hex), &manifest).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{manifest_hex}"), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "bomb"}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// The bomb's tar, through the system's gzip.
fn flate2_decode(gz: &[u8]) -> std::io::Cursor<Vec<u8>> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), gz).unwrap();
    std::io::Cursor::new(child.wait_with_output().unwrap().stdout)
}

/// `cairn run` of an image whose layer is the bomb: refused when the layer
/// is extracted, naming the layer, with no layer dir and nothing in tmp/.
#[test]
fn run_of_an_image_with_a_bomb_layer_is_refused() {
    let bomb = sparse_bomb_tgz();
    for user in users() {
        let env = Env::new(user);
        let layout = env.dir().join("bomb-layout");
        bomb_layout(&layout, &bomb);
        chown_to(&env, &layout);
        let out = env.cairn(&[
            "import",
            &format!("oci:{}:bomb", layout.display()),
            "bomb:1",
        ]);
        ok(&out, "import");
        let layers_before = layer_entries(&env);
        let before = disk_use(&env.store);
        for vars in [vec![("CAIRN_MAX_EXTRACT_SIZE", "1GiB")], vec![]] {
            let out = cairn_env(&env, &vars, &["run", "--rm", "bomb:1", "--", "/huge"]);
            let stderr = text(&out.stderr);
            // `run` exits 125 for Cairn's own errors, as docker run does.
            assert_eq!(out.status.code(), Some(125), "{user:?} {vars:?}: {stderr}");
            assert!(stderr.contains(&sha256(&bomb)), "names the layer: {stderr}");
            assert!(stderr.contains("uncompressed bytes"), "{stderr}");
        }
        assert!(disk_use(&env.store).saturating_sub(before) < 64 << 20);
        assert_eq!(layer_entries(&env), layers_before, "no layer dir left");
        let tmp: Vec<_> = std::fs::read_dir(env.store.join("tmp")).unwrap().collect();
        assert!(tmp.is_empty(), "{user:?}: left in tmp/: {tmp:?}");
    }
}

/// The layer dir of a build step, found by a file it holds.
fn layer_dir_holding(env: &Env, rel: &str) -> PathBuf {
    std::fs::read_dir(env.store.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join(rel).exists())
        .unwrap_or_else(|| panic!("no layer dir holds {rel}"))
}

#[test]
fn fsck_full_finds_a_truncated_file() {
    for user in users() {
        let env = Env::new(user);
        let ctx = context(
            &env,
            "data",
            "FROM busybox:fixture\nRUN dd if=/dev/zero of=/data bs=1024 count=100 && chown 1000:1000 /data && chmod 600 /data\n",
            &[],
        );
        ok(
            &env.cairn(&["build", "-t", "data:1", ctx.to_str().unwrap()]),
            "build",
        );
        let out = env.cairn(&["fsck", "--full"]);
        assert_eq!(ok(&out, "fsck --full").trim(), "ok");
        // As root (the test runner), cut the file short behind cairn's back.
        let dir = layer_dir_holding(&env, "data");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("data"))
            .unwrap();
        f.set_len(4096).unwrap();
        drop(f);
        ok(&env.cairn(&["fsck"]), "the quick fsck does not read layers");
        let out = env.cairn(&["fsck", "--full"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{user:?}: {}",
            text(&out.stdout)
        );
        let stdout = text(&out.stdout);
        assert!(stdout.contains(&dir.display().to_string()), "{stdout}");
    }
}

/// Rootless, a RUN as another container user leaves files of subordinate
/// IDs in the layer dir (and a 0700 dir the caller cannot enter): prune
/// removes them through the user namespace. The store stays private throughout
/// (0700; as root 0710, group = container root's subordinate gid).
#[test]
fn prune_removes_subordinate_owned_layer_dirs() {
    for user in users() {
        let env = Env::new(user);
        let ctx = context(
            &env,
            "owned",
            "FROM busybox:fixture\nRUN mkdir -p /d/e && touch /d/e/f && chown -R 1000:1000 /d && chmod 700 /d /d/e\n",
            &[],
        );
        ok(
            &env.cairn(&["build", "-t", "owned:1", ctx.to_str().unwrap()]),
            "build",
        );
        let dir = layer_dir_holding(&env, "d");
        for d in ["", "layers", "tmp", "sandboxes"] {
            let mode = std::fs::metadata(env.store.join(d))
                .unwrap()
                .permissions()
                .mode();
            // 0700, or 0710 as root: group search for container root's
            // subordinate gid only. Never readable or writable by others.
            assert_eq!(mode & 0o067, 0, "{user:?}: {d} is {:o}", mode & 0o777);
        }
        ok(&env.cairn(&["rmi", "owned:1"]), "rmi");
        // --keep-storage 0: the build cache also let go of the layer.
        let out = env.cairn(&["prune", "--keep-storage", "0"]);
        ok(&out, "prune");
        assert!(!dir.exists(), "{user:?}: {} still there", dir.display());
        assert!(std::fs::read_dir(env.store.join("tmp"))
            .unwrap()
            .next()
            .is_none());
        ok(&env.cairn(&["fsck"]), "fsck after prune");
        // busybox's layer is still used: running it works.
        ok(
            &env.cairn(&["run", "--rm", "busybox:fixture", "--", "true"]),
            "run",
        );
    }
}
