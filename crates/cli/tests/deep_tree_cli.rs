//! Hostile deep trees through the binary, as root and as the unprivileged
//! test user: a RUN that makes a tree deeper than PATH_MAX allows (2,100
//! levels, 4,200 bytes of path) commits it as a layer, `COPY --from` of it
//! carries it into another stage, `sandbox commit` of a sandbox holding it
//! works, `fsck --full` finds the store clean, and a tree past the depth
//! limit (4,096 nested directories) fails the build with exit 2 naming the
//! entry, leaving no layer, no blob and nothing in tmp/.

mod cli_env;

use cli_env::*;
use std::path::Path;
use std::process::Command;

/// Levels of the deep tree: past PATH_MAX.
const LEVELS: usize = 2100;

/// Shell that goes (`mkdir -p` first when `make`) `levels` levels of `d`
/// down from the current dir, in steps of 1,000 (each a path one call
/// takes), and leaves the shell there.
fn descend(levels: usize, make: bool) -> String {
    let mk = if make { "mkdir -p $p && " } else { "" };
    format!(
        "n={levels}; while [ $n -gt 0 ]; do k=$n; [ $k -gt 1000 ] && k=1000; \
         p=d; i=1; while [ $i -lt $k ]; do p=$p/d; i=$((i+1)); done; \
         {mk}cd -P $p || exit 1; n=$((n-k)); done"
    )
}

fn deep_file() -> String {
    format!("{}f", "d/".repeat(LEVELS))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The paths in the layers of `image`, exported to an OCI layout.
fn layer_paths(env: &Env, image: &str) -> Vec<String> {
    let layout = env.subdir(&format!("export-{}", image.replace(':', "-")));
    let dest = format!("oci:{}", layout.join("oci").display());
    ok(&env.cairn(&["export", image, &dest]), "export");
    let blobs = layout.join("oci/blobs/sha256");
    let mut paths = Vec::new();
    for blob in names(&blobs) {
        let out = Command::new("tar")
            .arg("-tzf")
            .arg(blobs.join(&blob))
            .output()
            .unwrap();
        if out.status.success() {
            paths.extend(text(&out.stdout).lines().map(String::from));
        }
    }
    paths
}

#[test]
fn a_run_past_path_max_commits_copies_and_passes_fsck() {
    for user in users() {
        let env = Env::new(user);
        let dockerfile = format!(
            "FROM busybox:fixture AS deep\n\
             RUN mkdir /deep && cd /deep && {make} && echo deep > f\n\
             FROM busybox:fixture\n\
             COPY --from=deep /deep /copied\n\
             RUN cd /copied && {go} && test \"$(cat f)\" = deep\n",
            make = descend(LEVELS, true),
            go = descend(LEVELS, false),
        );
        let ctx = env.context_dir("ctx", &[("Dockerfile", &dockerfile)]);
        let out = env.cairn(&[
            "build",
            "--target",
            "deep",
            "-t",
            "deep:1",
            ctx.to_str().unwrap(),
        ]);
        ok(&out, &format!("{user:?}: build of the deep stage"));
        let out = env.cairn(&["build", "-t", "copied:1", ctx.to_str().unwrap()]);
        ok(&out, &format!("{user:?}: build with COPY --from"));
        let want = format!("deep/{}", deep_file());
        assert!(
            layer_paths(&env, "deep:1").contains(&want),
            "{user:?}: the RUN's layer holds the deep file"
        );
        let want = format!("copied/{}", deep_file());
        assert!(
            layer_paths(&env, "copied:1").contains(&want),
            "{user:?}: the COPY --from layer holds the deep file"
        );

        // A sandbox holding the tree commits.
        let out = env.cairn(&["sandbox", "create", "busybox:fixture"]);
        let id = ok(&out, "sandbox create")
            .lines()
            .last()
            .unwrap()
            .to_string();
        let script = format!(
            "mkdir /s && cd /s && {} && echo sand > f",
            descend(LEVELS, true)
        );
        ok(
            &env.cairn(&["sandbox", "exec", &id, "sh", "-c", &script]),
            "exec",
        );
        ok(
            &env.cairn(&["sandbox", "commit", &id, "sand:1"]),
            "sandbox commit",
        );
        ok(&env.cairn(&["sandbox", "rm", &id]), "sandbox rm");
        let script = format!("cd /s && {} && cat f", descend(LEVELS, false));
        let out = env.cairn(&["run", "--rm", "sand:1", "--", "sh", "-c", &script]);
        assert_eq!(
            ok(&out, "run of the committed sandbox"),
            "sand\n",
            "{user:?}"
        );

        let out = env.cairn(&["fsck", "--full"]);
        assert_eq!(ok(&out, "fsck --full"), "ok\n", "{user:?}");
        let left = names(&env.store.join("tmp"));
        assert!(
            left.iter().all(|n| n.starts_with("trash-")),
            "{user:?}: {left:?}"
        );
    }
}

#[test]
fn a_run_past_the_depth_limit_fails_the_build_leaving_nothing() {
    for user in users() {
        let env = Env::new(user);
        let dockerfile = format!(
            "FROM busybox:fixture\nRUN mkdir /deep && cd /deep && {} && echo x > f\n",
            descend(4096, true)
        );
        let ctx = env.context_dir("ctx", &[("Dockerfile", &dockerfile)]);
        // The base layer's dir is made by the build's first RUN: made here
        // first, so what the failed build leaves is what is compared.
        ok(
            &env.cairn(&["run", "--rm", "busybox:fixture", "--", "true"]),
            "run",
        );
        let layers = names(&env.store.join("layers"));
        let blobs = names(&env.store.join("blobs/sha256"));
        let out = env.cairn(&["build", "-t", "toodeep:1", ctx.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{user:?}: {}",
            &stderr[..stderr.len().min(2000)]
        );
        assert!(
            stderr.contains("more than the limit of 4096 nested directories"),
            "{user:?}"
        );
        assert!(
            stderr.contains("(at entry \"deep/d/d/d/"),
            "{user:?}: names the entry"
        );
        assert!(
            stderr.contains("Dockerfile:2: the RUN's changes:"),
            "{user:?}: names the RUN's line"
        );
        assert_eq!(
            names(&env.store.join("layers")),
            layers,
            "{user:?}: no layer"
        );
        assert_eq!(
            names(&env.store.join("blobs/sha256")),
            blobs,
            "{user:?}: no blob"
        );
        assert_eq!(
            names(&env.store.join("tmp")),
            Vec::<String>::new(),
            "{user:?}: tmp/"
        );
        let out = env.cairn(&["images"]);
        assert!(!text(&out.stdout).contains("toodeep"), "nothing tagged");
    }
}
