//! The differential suite: every case in `fixtures/buildah-diff/<case>/` is
//! built by Cairn and by `buildah build --layers`, and the two images must
//! have the same flattened filesystem (paths, types, modes, owners, sizes,
//! content digests, link targets, hard links) and the same config fields
//! (Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts, Volumes,
//! StopSignal, Healthcheck, OnBuild, Shell), except for the fields a case's
//! `case.json` lists as expected differences (where BuildKit, which wins,
//! departs from buildah), each with its reason and Cairn's expected value.
//!
//! A case is a directory with a `Dockerfile` and its context; optionally:
//! - `setup.sh`: run (sh, umask 022) in a copy of the case before building,
//!   for what git cannot hold (empty dirs, setuid bits, hard links, archives);
//! - `case.json`: `build_args`, `target`, `base` (a Dockerfile built first
//!   and tagged `diff-<case>-base:latest`, for ONBUILD triggers),
//!   `buildah_dockerfile` (what buildah builds instead, where buildah 1.28
//!   cannot read BuildKit syntax such as heredocs) and
//!   `expected_differences` (`{"config.Cmd" | "/path": {"reason", "cairn"}}`).
//!
//! buildah runs as root with a private vfs store and chroot isolation. As
//! root, this suite computes buildah's results once (kept in
//! CARGO_TARGET_TMPDIR, keyed by the case's content and buildah's version)
//! and hands them to the rerun as the unprivileged test user, whose Cairn
//! builds must match them too. (harness = false: `main` calls the init hook.)

#[path = "diff/image.rs"]
mod image;

use cairn_builder::{BuildRequest, Builder};
use cairn_layer::Compression;
use cairn_sandbox::{init_hook, Launcher, Network};
use cairn_store::transport::Transport;
use cairn_store::Store;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const REFERENCE_ENV: &str = "CAIRN_BUILDAH_DIFF_REFERENCE";
/// Bump when the reference format or the buildah invocation changes.
const HARNESS_VERSION: &str = "buildah-diff-v1";

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/buildah-diff")
}

/// `CAIRN_BUILDAH_DIFF_ONLY=a,b` limits a run to some cases (for work on them).
fn selected(name: &str) -> bool {
    match std::env::var("CAIRN_BUILDAH_DIFF_ONLY") {
        Ok(only) => only.split(',').any(|n| n == name),
        Err(_) => true,
    }
}

fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("fixtures/buildah-diff")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Dockerfile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A case's `case.json`.
#[derive(Default, Clone)]
struct CaseSpec {
    build_args: HashMap<String, String>,
    target: Option<String>,
    base: Option<String>,
    buildah_dockerfile: Option<String>,
    expected: BTreeMap<String, Value>,
}

fn case_spec(name: &str) -> CaseSpec {
    let path = cases_dir().join(name).join("case.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return CaseSpec::default();
    };
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}/case.json: {e}"));
    let strings = |k: &str| -> HashMap<String, String> {
        v[k].as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let expected: BTreeMap<String, Value> = v["expected_differences"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    for (k, e) in &expected {
        assert!(
            e["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{name}/case.json: expected difference {k} needs a reason"
        );
    }
    CaseSpec {
        build_args: strings("build_args"),
        target: v["target"].as_str().map(String::from),
        base: v["base"].as_str().map(String::from),
        buildah_dockerfile: v["buildah_dockerfile"].as_str().map(String::from),
        expected,
    }
}

/// Copy a case into `dest` and run its `setup.sh` there.
fn prepare_context(name: &str, dest: &Path) {
    std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
    let st = Command::new("cp")
        .arg("-a")
        .arg(cases_dir().join(name))
        .arg(dest)
        .status()
        .expect("cp");
    assert!(st.success(), "copying case {name}");
    if dest.join("setup.sh").exists() {
        let out = Command::new("sh")
            .arg("-c")
            .arg("umask 022 && sh ./setup.sh && rm setup.sh")
            .current_dir(dest)
            .output()
            .expect("setup.sh");
        assert!(
            out.status.success(),
            "{name}/setup.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Digest of a case's files (names, modes, contents), for the reference cache.
fn case_digest(name: &str, buildah_version: &str, layout: &Path) -> String {
    let mut h = Sha256::new();
    h.update(HARNESS_VERSION);
    h.update(buildah_version);
    h.update(if nix::unistd::geteuid().is_root() {
        "overlay"
    } else {
        "vfs"
    });
    h.update(std::fs::read(layout.join("index.json")).expect("layout index"));
    let root = cases_dir().join(name);
    for e in walkdir::WalkDir::new(&root).sort_by_file_name() {
        let e = e.expect("walk");
        use std::os::unix::fs::PermissionsExt;
        let meta = e.path().symlink_metadata().expect("stat");
        h.update(
            e.path()
                .strip_prefix(&root)
                .expect("prefix")
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(meta.permissions().mode().to_le_bytes());
        if meta.is_file() {
            h.update(std::fs::read(e.path()).expect("read"));
        } else if meta.is_symlink() {
            h.update(
                std::fs::read_link(e.path())
                    .expect("readlink")
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        }
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// buildah with a private store under `root`.
struct Buildah {
    root: PathBuf,
    version: String,
    /// overlay as root (a RUN step costs a third of what it does with vfs).
    driver: &'static str,
}

impl Buildah {
    fn new(root: &Path, layout: &Path) -> Result<Buildah, String> {
        let version = Command::new("buildah")
            .arg("--version")
            .output()
            .map_err(|e| format!("buildah: {e}"))?;
        let b = Buildah {
            root: root.to_path_buf(),
            version: String::from_utf8_lossy(&version.stdout).trim().to_string(),
            driver: if nix::unistd::geteuid().is_root() {
                "overlay"
            } else {
                "vfs"
            },
        };
        let id = b.run(&["pull", "-q", &format!("oci:{}:fixture", layout.display())])?;
        b.run(&["tag", id.trim(), "localhost/busybox:fixture"])?;
        Ok(b)
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", self.driver])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("buildah: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "buildah {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn build(
        &self,
        ctx: &Path,
        dockerfile: &str,
        tag: &str,
        spec: &CaseSpec,
    ) -> Result<(), String> {
        let ctx_s = ctx.display().to_string();
        let file = ctx.join(dockerfile).display().to_string();
        let mut args: Vec<String> = [
            "build",
            "-q",
            "--layers",
            "--pull=never",
            "--isolation",
            "chroot",
            "--format",
            "docker",
            "-f",
            &file,
            "-t",
            tag,
        ]
        .map(String::from)
        .to_vec();
        for (k, v) in &spec.build_args {
            args.push("--build-arg".into());
            args.push(format!("{k}={v}"));
        }
        if let Some(t) = &spec.target {
            args.push("--target".into());
            args.push(t.clone());
        }
        args.push(ctx_s);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).map(|_| ())
    }

    /// Build a case and read the result (`--format docker` and `dir:` keep
    /// Healthcheck, OnBuild and Shell).
    fn reference(&self, name: &str, work: &Path) -> Result<Value, String> {
        let spec = case_spec(name);
        let ctx = work.join(format!("{name}-buildah"));
        prepare_context(name, &ctx);
        if let Some(base) = &spec.base {
            let base_spec = CaseSpec::default();
            self.build(&ctx, base, &format!("diff-{name}-base:latest"), &base_spec)?;
        }
        let dockerfile = spec.buildah_dockerfile.as_deref().unwrap_or("Dockerfile");
        let tag = format!("diff-{name}:latest");
        self.build(&ctx, dockerfile, &tag, &spec)?;
        let out = work.join(format!("{name}-buildah-out"));
        self.run(&["push", "-q", &tag, &format!("dir:{}", out.display())])?;
        let image = image::read_dir_transport(&out);
        let _ = std::fs::remove_dir_all(&out);
        Ok(image)
    }
}

/// buildah's result for every case, from the cache or built now (3 at a time).
fn buildah_references(layout: &Path) -> BTreeMap<String, Value> {
    // buildah names a pulled layout after its path, which must be lowercase.
    let work = std::env::temp_dir().join(format!("cairn-buildah-diff-{}", std::process::id()));
    let refs = buildah_references_in(&work, layout);
    // containers/storage's overlay driver may leave its home bind-mounted.
    let _ = Command::new("umount")
        .arg("--lazy")
        .arg(work.join("buildah/root/overlay"))
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(&work);
    refs
}

fn buildah_references_in(work: &Path, layout: &Path) -> BTreeMap<String, Value> {
    let _ = std::fs::create_dir_all(work);
    let copy = work.join("layout");
    let copied = Command::new("cp").arg("-a").arg(layout).arg(&copy).status();
    if !copied.is_ok_and(|s| s.success()) {
        println!("copying the busybox layout failed: the differential cases fail");
        return BTreeMap::new();
    }
    let layout = copy.as_path();
    let buildah = match Buildah::new(&work.join("buildah"), layout) {
        Ok(b) => b,
        Err(e) => {
            println!("buildah is not usable here ({e}): the differential cases fail");
            return BTreeMap::new();
        }
    };
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("buildah-diff");
    let _ = std::fs::create_dir_all(&cache);
    let fresh = std::env::var_os("CAIRN_BUILDAH_DIFF_FRESH").is_some();
    let names: Vec<String> = case_names().into_iter().filter(|n| selected(n)).collect();
    let results = Mutex::new(BTreeMap::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(name) = names.get(i) else { break };
                let key = case_digest(name, &buildah.version, layout);
                let cached = cache.join(format!("{name}-{key}.json"));
                let value = match std::fs::read(&cached) {
                    Ok(bytes) if !fresh => {
                        serde_json::from_slice(&bytes).expect("cached reference")
                    }
                    _ => {
                        let v = match buildah.reference(name, work) {
                            Ok(v) => v,
                            Err(e) => json!({ "error": e }),
                        };
                        if v.get("error").is_none() {
                            let _ = std::fs::write(&cached, v.to_string());
                        }
                        v
                    }
                };
                results.lock().expect("lock").insert(name.clone(), value);
            });
        }
    });
    results.into_inner().expect("lock")
}

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
    references: BTreeMap<String, Value>,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = cairn_testsupport::store_with_busybox(tmp.path());
        let references = match std::env::var_os(REFERENCE_ENV) {
            Some(file) => serde_json::from_slice(&std::fs::read(file).expect("references"))
                .expect("references JSON"),
            None => {
                let started = std::time::Instant::now();
                let refs = buildah_references(&tmp.path().join("layout"));
                println!(
                    "buildah references for {} cases in {:.1}s",
                    refs.len(),
                    started.elapsed().as_secs_f64()
                );
                refs
            }
        };
        Fixture {
            tmp,
            store,
            references,
        }
    }

    fn cairn_builder(
        &self,
        ctx: &Path,
        dockerfile: &str,
        tag: &str,
        spec: &CaseSpec,
    ) -> Result<String, String> {
        let path = ctx.join(dockerfile);
        let req = BuildRequest {
            dockerfile: std::fs::read_to_string(&path).map_err(|e| e.to_string())?,
            dockerfile_path: path,
            context: ctx.to_path_buf(),
            tags: vec![tag.to_string()],
            build_args: spec.build_args.clone(),
            target: spec.target.clone(),
            no_cache: false,
            compression: Compression::Gzip,
            timestamp: None,
            network: Network::Host,
            run_policy: Default::default(),
            organization: None,
            cache_from: vec![],
            cache_to: vec![],
            cancel: None,
        };
        let builder = Builder::new(&self.store, Launcher::current_exe().expect("launcher"));
        builder
            .build(&req, &mut |_| {})
            .map(|r| r.manifest.to_string())
            .map_err(|e| e.to_string())
    }

    /// Build a case with Cairn and read the result from an OCI layout export.
    fn cairn_image(&self, name: &str) -> Result<Value, String> {
        let spec = case_spec(name);
        let ctx = self.tmp.path().join(format!("{name}-cairn"));
        prepare_context(name, &ctx);
        if let Some(base) = &spec.base {
            self.cairn_builder(
                &ctx,
                base,
                &format!("diff-{name}-base:latest"),
                &CaseSpec::default(),
            )?;
        }
        let manifest =
            self.cairn_builder(&ctx, "Dockerfile", &format!("diff-{name}:latest"), &spec)?;
        let out = self.tmp.path().join(format!("{name}-cairn-out"));
        self.store
            .export(
                &manifest,
                &Transport::parse(&format!("oci:{}:t", out.display())).expect("transport"),
            )
            .map_err(|e| e.to_string())?;
        Ok(image::read_oci_layout(&out))
    }

    fn check(&self, name: &str) {
        if !selected(name) {
            return;
        }
        let reference = self
            .references
            .get(name)
            .unwrap_or_else(|| panic!("{name}: no buildah result"));
        if let Some(e) = reference.get("error") {
            panic!("{name}: buildah failed: {}", e.as_str().unwrap_or_default());
        }
        let cairn = self
            .cairn_image(name)
            .unwrap_or_else(|e| panic!("{name}: cairn build failed: {e}"));
        let spec = case_spec(name);
        let problems = compare(&cairn, reference, &spec.expected);
        if !problems.is_empty() {
            panic!(
                "{name}: {} difference(s) from buildah:\n  {}",
                problems.len(),
                problems.join("\n  ")
            );
        }
    }
}

/// Differences between Cairn's image and buildah's, minus the expected ones
/// (for which Cairn's value must be the one `case.json` gives) and buildah's
/// noise (DESIGN.md): empty /etc/hosts, /etc/hostname and /etc/resolv.conf, empty /proc,
/// /sys, /run, /dev left by its RUN mounts.
fn compare(cairn: &Value, buildah: &Value, expected: &BTreeMap<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    let seen_expected = std::cell::RefCell::new(Vec::new());
    let check = |key: String, ours: &Value, theirs: &Value, problems: &mut Vec<String>| {
        if let Some(e) = expected.get(&key) {
            seen_expected.borrow_mut().push(key.clone());
            let want = e.get("cairn").unwrap_or(&Value::Null);
            if ours != want {
                problems.push(format!(
                    "{key}: expected difference, but Cairn has {ours} instead of {want} ({})",
                    e["reason"].as_str().unwrap_or_default()
                ));
            }
            return;
        }
        if ours != theirs {
            problems.push(format!("{key}: cairn {ours} / buildah {theirs}"));
        }
    };
    let fields = cairn["config"].as_object().expect("config");
    for (field, ours) in fields {
        check(
            format!("config.{field}"),
            ours,
            &buildah["config"][field],
            &mut problems,
        );
    }
    let empty = Map::new();
    let ours = cairn["fs"].as_object().unwrap_or(&empty);
    let theirs = buildah["fs"].as_object().unwrap_or(&empty);
    let mut paths: Vec<&String> = ours.keys().chain(theirs.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let (o, t) = (ours.get(path), theirs.get(path));
        if o.is_none() && t.is_some_and(|t| is_buildah_noise(path, t)) {
            continue;
        }
        check(
            path.clone(),
            o.unwrap_or(&Value::Null),
            t.unwrap_or(&Value::Null),
            &mut problems,
        );
    }
    let unseen: Vec<String> = expected
        .keys()
        .filter(|k| !seen_expected.borrow().contains(k))
        .cloned()
        .collect();
    for key in unseen {
        check(key, &Value::Null, &Value::Null, &mut problems);
    }
    problems
}

use serde_json::Map;

fn is_buildah_noise(path: &str, e: &Value) -> bool {
    match path {
        "/etc/hosts" | "/etc/resolv.conf" | "/etc/hostname" => {
            e["kind"] == "file" && e["size"] == 0
        }
        "/proc" | "/sys" | "/run" | "/dev" => e["kind"] == "dir",
        _ => false,
    }
}

/// Every directory under fixtures/buildah-diff is a case of this suite.
fn every_case_is_listed(_: &Fixture) {
    let listed: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
    let names = case_names();
    assert!(names.len() >= 25, "only {} cases", names.len());
    for name in &names {
        assert!(
            listed.contains(&name.as_str()),
            "case {name} is not in CASES"
        );
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(fn $name(f: &Fixture) { f.check(stringify!($name)) })*
        const CASES: &[cairn_testsupport::TestCase<Fixture>] = &[
            ("every_case_is_listed", every_case_is_listed as fn(&Fixture)),
            $((stringify!($name), $name as fn(&Fixture))),*
        ];
    };
}

cases![
    add_files,
    add_local_archives,
    arg_scoping,
    cmd_then_entrypoint_same_stage,
    copy_chmod,
    copy_chmod_symbolic,
    copy_chown,
    copy_chown_numeric,
    copy_dir_vs_contents,
    copy_from_wildcards,
    copy_over_symlink,
    copy_trailing_slash,
    copy_wildcards,
    dockerignore,
    empty_dirs,
    entrypoint_cmd,
    entrypoint_resets_inherited_cmd,
    env_expansion,
    env_scope_expanded,
    escape_first_instruction,
    healthcheck,
    heredoc_spaced_operator,
    heredocs,
    links_in_context,
    multistage_copy_from,
    multistage_target,
    onbuild_stored,
    onbuild_triggered,
    opaque_dirs,
    quoting_unbuilt_stage,
    run_env,
    scratch_final,
    scratch_path,
    setuid_bits,
    shell_exec_forms,
    shell_instruction,
    user_instruction,
    volume_expose_label,
    whiteouts_files,
    workdir_owner,
];

fn main() {
    init_hook();
    let fixture = Fixture::new();
    if std::env::var_os(REFERENCE_ENV).is_none() {
        // The rerun as the test user compares against these same results.
        let file = fixture.tmp.path().join("buildah-references.json");
        std::fs::write(
            &file,
            serde_json::to_vec(&fixture.references).expect("json"),
        )
        .expect("write references");
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(fixture.tmp.path(), std::fs::Permissions::from_mode(0o755));
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644));
        std::env::set_var(REFERENCE_ENV, &file);
    }
    cairn_testsupport::run_suite(fixture, CASES)
}
