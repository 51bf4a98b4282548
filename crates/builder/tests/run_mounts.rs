//! `RUN --mount` (bind, cache, tmpfs, secret) through the library over a
//! real store, as root and again as the unprivileged test user (harness =
//! false: `main` calls the init hook).

mod common;

use cairn_builder::{BuildError, BuildEvent, Builder, OutputStream, Secret};
use cairn_sandbox::{init_hook, Launcher};
use std::collections::BTreeMap;
use std::path::Path;

use common::Fixture;

/// What a build gave: its result (or error), the RUN output lines, and
/// which lines ran.
struct Outcome {
    result: Result<cairn_builder::BuildResult, BuildError>,
    output: Vec<String>,
    ran: Vec<usize>,
}

impl Fixture {
    fn build_with(&self, context: &Path, secrets: &[(&str, Secret)], no_cache: bool) -> Outcome {
        let mut req = common::request(context, "localhost/mounts:latest");
        req.no_cache = no_cache;
        let secrets: BTreeMap<String, Secret> = secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let builder =
            Builder::new(&self.store, Launcher::current_exe().unwrap()).with_secrets(secrets);
        let mut output = Vec::new();
        let result = builder.build_with_events(&req, &mut |e| {
            if let BuildEvent::Output { text, stream, .. } = e {
                if *stream == OutputStream::Stdout {
                    output.push(text.clone());
                }
            }
        });
        let ran = result.as_ref().map(common::ran_lines).unwrap_or_default();
        Outcome {
            result,
            output,
            ran,
        }
    }

    fn build(&self, context: &Path) -> Outcome {
        self.build_with(context, &[], false)
    }

    /// Every path in the built image's layers (as their tar entries name
    /// them): what a mount must not leave behind.
    fn layer_paths(&self, manifest: &str) -> Vec<String> {
        let (_, parsed) = self.store.manifest(&manifest.parse().unwrap()).unwrap();
        let mut paths = Vec::new();
        // The busybox base is the first layer; only the build's own count.
        for layer in parsed.children.iter().skip(1) {
            let blob = self.store.blob_path(&layer.digest);
            let out = std::process::Command::new("tar")
                .arg("-tzf")
                .arg(&blob)
                .output()
                .unwrap();
            assert!(out.status.success());
            paths.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| l.trim_end_matches('/').to_string()),
            );
        }
        paths
    }
}

fn ok(o: &Outcome) -> String {
    match &o.result {
        Ok(r) => r.manifest.to_string(),
        Err(e) => panic!("build failed: {e}\noutput: {:?}", o.output),
    }
}

fn bind_mounts_see_context_and_stages_and_write_nothing(f: &Fixture) {
    let df = "FROM busybox:fixture AS base
RUN mkdir /data && echo from-base > /data/f
FROM busybox:fixture
RUN --mount=target=/ctx cat /ctx/src/a.txt && ls /ctx
RUN --mount=type=bind,source=src,target=/s,rw echo changed > /s/a.txt && cat /s/a.txt
RUN --mount=type=bind,from=base,source=/data,target=/mnt/d cat /mnt/d/f
RUN --mount=type=bind,source=src/a.txt,target=/one.txt cat /one.txt
";
    let ctx = f.context(
        "bind",
        df,
        &[
            ("src/a.txt", "hello\n"),
            ("secret-stuff/x", "hidden\n"),
            (".dockerignore", "secret-stuff\n"),
        ],
    );
    let o = f.build(&ctx);
    let manifest = ok(&o);
    assert_eq!(o.output[0], "hello");
    assert!(o.output.contains(&"src".to_string()));
    assert!(
        !o.output.iter().any(|l| l == "secret-stuff"),
        "a .dockerignored dir showed in the bind mount: {:?}",
        o.output
    );
    assert!(
        o.output.contains(&"changed".to_string()),
        "rw bind not writable"
    );
    assert!(o.output.contains(&"from-base".to_string()));
    assert_eq!(o.output.last().unwrap(), "hello");
    assert_eq!(
        std::fs::read_to_string(ctx.join("src/a.txt")).unwrap(),
        "hello\n",
        "an rw bind mount wrote to the context"
    );
    let paths = f.layer_paths(&manifest);
    for stub in ["ctx", "s", "mnt", "mnt/d", "one.txt"] {
        assert!(
            !paths.iter().any(|p| p == stub),
            "mount point {stub} left in a layer: {paths:?}"
        );
    }

    // The bind source's content is in the key: unchanged reruns nothing,
    // a changed file reruns the steps that mount it.
    assert_eq!(f.build(&ctx).ran, Vec::<usize>::new());
    std::fs::write(ctx.join("src/a.txt"), "hello again\n").unwrap();
    // Later steps rerun too: each key chains the one before.
    assert_eq!(f.build(&ctx).ran, vec![4, 5, 6, 7]);
    // An ignored file is not part of any mount: nothing reruns.
    std::fs::write(ctx.join("secret-stuff/x"), "changed\n").unwrap();
    assert_eq!(f.build(&ctx).ran, Vec::<usize>::new());
}

fn cache_mounts_persist_between_builds(f: &Fixture) {
    let df = "FROM busybox:fixture
RUN --mount=type=cache,target=/var/cache/app,id=counter sh -c 'echo x >> /var/cache/app/n; wc -l < /var/cache/app/n'
RUN --mount=type=cache,target=/c2,mode=0700,uid=1000,gid=1000,sharing=locked stat -c '%a %u %g' /c2
RUN --mount=type=cache,target=/var/cache/app,id=counter,ro sh -c 'wc -l < /var/cache/app/n; ! touch /var/cache/app/m'
";
    let ctx = f.context("cache", df, &[]);
    let first = f.build_with(&ctx, &[], true);
    let manifest = ok(&first);
    assert_eq!(first.output, vec!["1", "700 1000 1000", "1"]);
    let second = f.build_with(&ctx, &[], true);
    ok(&second);
    assert_eq!(
        second.output,
        vec!["2", "700 1000 1000", "2"],
        "the cache mount did not keep its content"
    );
    let paths = f.layer_paths(&manifest);
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("var/cache") || p == "c2"),
        "cache mount content or mount point in a layer: {paths:?}"
    );
    // A cached step does not run, so the cache dir is not touched.
    assert_eq!(f.build(&ctx).ran, Vec::<usize>::new());
    // Pruned (rootless too: the 1000-owned dir needs the user namespace),
    // the count starts again.
    let launcher = Launcher::current_exe().unwrap();
    assert_eq!(
        cairn_builder::remove_cache_mounts(&f.store, &launcher).unwrap(),
        2
    );
    let third = f.build_with(&ctx, &[], true);
    ok(&third);
    assert_eq!(third.output[0], "1", "the cache mount survived its removal");
}

fn tmpfs_and_secret_mounts(f: &Fixture) {
    let df = "FROM busybox:fixture
RUN --mount=type=tmpfs,target=/scratch,size=1m sh -c 'echo t > /scratch/f && grep -c scratch /proc/mounts'
RUN --mount=type=secret,id=token cat /run/secrets/token && stat -c '%a %u' /run/secrets/token
RUN --mount=type=secret,id=token,target=/etc/app.key,mode=0440,uid=7 stat -c '%a %u' /etc/app.key
RUN --mount=type=secret,id=token,env=TOKEN sh -c 'printf \"env:%s\" \"$TOKEN\"; test ! -e /run/secrets/token'
RUN --mount=type=secret,id=absent echo no-secret-is-fine
";
    let ctx = f.context("secret", df, &[]);
    let token_file = f.tmp.path().join("token.txt");
    std::fs::write(&token_file, "s3cr3t\n").unwrap();
    let secrets = [("token", Secret::File(token_file.clone()))];
    let o = f.build_with(&ctx, &secrets, false);
    let manifest = ok(&o);
    assert_eq!(
        o.output,
        vec![
            "1",
            "s3cr3t",
            "400 0",
            "440 7",
            "env:s3cr3t",
            "no-secret-is-fine"
        ]
    );
    let paths = f.layer_paths(&manifest);
    assert!(
        !paths.iter().any(|p| p.starts_with("scratch")
            || p.starts_with("run/secrets")
            || p == "etc/app.key"),
        "a tmpfs or secret left something in a layer: {paths:?}"
    );
    for blob in f.store.layout().blobs().read_dir().unwrap() {
        let bytes = std::fs::read(blob.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(6).any(|w| w == b"s3cr3t"),
            "the secret reached a blob"
        );
    }
    // A secret's value is not in the key: a new value reruns nothing.
    std::fs::write(&token_file, "other").unwrap();
    assert_eq!(f.build_with(&ctx, &secrets, false).ran, Vec::<usize>::new());
    let value = [("token", Secret::Value(b"v\n".to_vec()))];
    assert_eq!(f.build_with(&ctx, &value, true).output[1], "v");
}

fn bad_mounts_are_clear(f: &Fixture) {
    for (name, df, want) in [
        (
            "nosrc",
            "FROM busybox:fixture\nRUN --mount=source=nope,target=/x true\n",
            "source \"nope\" not found in the build context",
        ),
        (
            "badtype",
            "FROM busybox:fixture\nRUN --mount=type=nfs,target=/x true\n",
            "\"nfs\"",
        ),
        (
            "nostage",
            "FROM busybox:fixture\nRUN --mount=from=nosuch,target=/x true\n",
            "nosuch",
        ),
        (
            "required",
            "FROM busybox:fixture\nRUN --mount=type=secret,id=k,required true\n",
            "secret \"k\" is required",
        ),
        (
            "badfield",
            "FROM busybox:fixture\nRUN --mount=type=cache,target=/c,sharing=sometimes true\n",
            "sharing=sometimes",
        ),
    ] {
        let ctx = f.context(name, df, &[]);
        let err = f.build(&ctx).result.unwrap_err();
        assert!(err.is_bad_input(), "{name}: {err} is not bad input");
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    // The failure left nothing tagged and the store sound.
    assert!(f.store.fsck().unwrap().is_empty());
}

cairn_testsupport::suite_main![Fixture;
    bind_mounts_see_context_and_stages_and_write_nothing,
    cache_mounts_persist_between_builds,
    tmpfs_and_secret_mounts,
    bad_mounts_are_clear,
];
