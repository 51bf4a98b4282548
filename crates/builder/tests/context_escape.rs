//! Every path a Dockerfile names in the build context stays inside it:
//! symlinks in the middle or at the end of a COPY source or a bind-mount
//! source resolve inside the context root, `..` clamps at the root, and
//! `.dockerignore` applies to the path reached through an alias. A sentinel
//! file outside the context must never reach the image. As root and again as
//! the unprivileged test user (harness = false: `main` calls the init hook).

mod common;

use cairn_builder::Builder;
use cairn_sandbox::{init_hook, Launcher};
use std::path::{Path, PathBuf};

use common::Fixture;

const HOST_SECRET: &str = "HOST SECRET, never in an image\n";

impl Fixture {
    fn build(&self, context: &Path) -> Result<String, cairn_builder::BuildError> {
        let req = common::request(context, "localhost/context-escape:latest");
        let builder = Builder::new(&self.store, Launcher::current_exe().unwrap());
        Ok(builder.build(&req, &mut |_| {})?.manifest.to_string())
    }

    fn file_in_image(&self, context: &Path, path: &str) -> String {
        let manifest = self.build(context).unwrap();
        let rootfs = common::unpack(&self.store, self.tmp.path(), &manifest);
        std::fs::read_to_string(rootfs.join(path)).unwrap()
    }

    /// A host dir outside every context, holding `secret.txt`; its absolute
    /// path without the leading `/`.
    fn sentinel(&self) -> String {
        let dir = self.tmp.path().join("host-only");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret.txt"), HOST_SECRET).unwrap();
        dir.to_str().unwrap().trim_start_matches('/').to_string()
    }

    /// A context named `name` with `Dockerfile` and `files`, plus symlinks.
    fn linked_context(
        &self,
        name: &str,
        dockerfile: &str,
        files: &[(&str, &str)],
        links: &[(&str, &str)],
    ) -> PathBuf {
        let dir = self.context(name, dockerfile, files);
        for (link, target) in links {
            std::os::unix::fs::symlink(target, dir.join(link)).unwrap();
        }
        dir
    }
}

fn symlink_in_the_middle_stays_in_the_context(f: &Fixture) {
    let host = f.sentinel();
    // The host's file is not in the context: nothing to copy.
    let df = format!("FROM busybox:fixture\nCOPY h/{host}/secret.txt /p\n");
    let ctx = f.linked_context("mid-missing", &df, &[], &[("h", "/")]);
    let err = f.build(&ctx).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("not found in the build context"),
        "{err}"
    );
    let df = "FROM busybox:fixture\nCOPY h/root/secret.txt /p\n";
    let ctx = f.linked_context("mid-root", df, &[], &[("h", "/")]);
    assert!(f.build(&ctx).unwrap_err().is_bad_input());
    // The same path inside the context is what `h/...` reaches.
    let inside = format!("{host}/secret.txt");
    let df =
        format!("FROM busybox:fixture\nCOPY h/{host}/secret.txt /p\nCOPY h/{host}/*.txt /w/\n");
    let ctx = f.linked_context(
        "mid-inside",
        &df,
        &[(&inside, "context copy\n")],
        &[("h", "/")],
    );
    assert_eq!(f.file_in_image(&ctx, "p"), "context copy\n");
    assert_eq!(f.file_in_image(&ctx, "w/secret.txt"), "context copy\n");
}

fn last_component_link_stays_in_the_context(f: &Fixture) {
    let host = f.sentinel();
    let inside = format!("{host}/secret.txt");
    // An absolute link target is taken from the context root.
    let df = "FROM busybox:fixture\nCOPY s /p\n";
    let ctx = f.linked_context(
        "last",
        df,
        &[(&inside, "context copy\n")],
        &[("s", &format!("/{inside}"))],
    );
    assert_eq!(f.file_in_image(&ctx, "p"), "context copy\n");
    let ctx = f.linked_context("last-out", df, &[], &[("s", "../../../../../etc/hostname")]);
    assert!(f.build(&ctx).unwrap_err().is_bad_input());
}

fn dotdot_clamps_at_the_root(f: &Fixture) {
    let df =
        "FROM busybox:fixture\nCOPY ../../etc/passwd /p\nCOPY ./../x/../etc/../../etc/passwd /q\n";
    let ctx = f.context("dotdot", df, &[("etc/passwd", "context passwd\n")]);
    assert_eq!(f.file_in_image(&ctx, "p"), "context passwd\n");
    assert_eq!(f.file_in_image(&ctx, "q"), "context passwd\n");
}

fn dockerignore_applies_through_an_alias(f: &Fixture) {
    let files = [
        ("secret/token", "TOKEN\n"),
        (".dockerignore", "secret\n"),
        ("ok.txt", "ok\n"),
    ];
    for (i, line) in [
        "COPY alias/token /p",
        "COPY alias /p/",
        "COPY alias/* /p/",
        "COPY deep/alias/token /p",
        "RUN --mount=type=bind,source=alias,target=/m cat /m/token",
        "RUN --mount=type=bind,source=alias/token,target=/m cat /m",
    ]
    .iter()
    .enumerate()
    {
        let df = format!("FROM busybox:fixture\n{line}\n");
        let ctx = f.linked_context(
            &format!("ignore-{i}"),
            &df,
            &files,
            &[("alias", "secret"), ("deep", "/")],
        );
        let err = f.build(&ctx).unwrap_err();
        assert!(
            err.is_bad_input() && err.to_string().contains("excluded by .dockerignore"),
            "{line}: {err}"
        );
    }
    // A link to an offered file is fine.
    let df = "FROM busybox:fixture\nCOPY alias /p\n";
    let ctx = f.linked_context("ignore-ok", df, &files, &[("alias", "ok.txt")]);
    assert_eq!(f.file_in_image(&ctx, "p"), "ok\n");
}

fn bind_mount_source_stays_in_the_context(f: &Fixture) {
    let host = f.sentinel();
    let inside = format!("{host}/secret.txt");
    for (i, source) in ["h", &format!("h/{host}")].iter().enumerate() {
        let path = if i == 0 {
            format!("/m/{inside}")
        } else {
            "/m/secret.txt".into()
        };
        let df = format!(
            "FROM busybox:fixture\nRUN --mount=type=bind,source={source},target=/m cat {path} > /out\n"
        );
        let ctx = f.linked_context(
            &format!("bind-{i}"),
            &df,
            &[(&inside, "context copy\n")],
            &[("h", "/")],
        );
        assert_eq!(f.file_in_image(&ctx, "out"), "context copy\n", "{source}");
    }
    let df = format!(
        "FROM busybox:fixture\nRUN --mount=type=bind,source=h/{host},target=/m cat /m/secret.txt\n"
    );
    let ctx = f.linked_context("bind-missing", &df, &[], &[("h", "/")]);
    let err = f.build(&ctx).unwrap_err();
    assert!(err.is_bad_input(), "{err}");
}

cairn_testsupport::suite_main![Fixture;
    symlink_in_the_middle_stays_in_the_context,
    last_component_link_stays_in_the_context,
    dotdot_clamps_at_the_root,
    dockerignore_applies_through_an_alias,
    bind_mount_source_stays_in_the_context,
];
