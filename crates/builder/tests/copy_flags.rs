//! COPY/ADD flags: wildcards in `--from` sources, `--exclude`, `--parents`
//! (with the `/./` pivot) and `--link`, checked on the built image's
//! filesystem, and the rootless COPY (no staging copy: files read straight
//! into the extract task's tar) pinned to the same layer as root's; as root
//! and again as the unprivileged test user (harness = false: `main` calls
//! the init hook).

mod common;

use cairn_builder::Builder;
use cairn_sandbox::{init_hook, Launcher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::Fixture;

impl Fixture {
    /// Build; the manifest digest and the lines of the steps that ran.
    fn build(&self, context: &Path) -> Result<(String, Vec<usize>), cairn_builder::BuildError> {
        let req = common::request(context, "localhost/copy-flags:latest");
        let builder = Builder::new(&self.store, Launcher::current_exe().unwrap());
        let result = builder.build(&req, &mut |_| {})?;
        Ok((result.manifest.to_string(), common::ran_lines(&result)))
    }

    /// Build and `umoci unpack` the result, as a real peer reads it.
    fn rootfs(&self, context: &Path) -> (String, PathBuf) {
        let (manifest, _) = self.build(context).unwrap();
        let rootfs = common::unpack(&self.store, self.tmp.path(), &manifest);
        (manifest, rootfs)
    }
}

/// The paths below `dir`, relative and sorted (dirs end with `/`).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(dir)
            .unwrap()
            .display()
            .to_string();
        let is_dir = entry.path().symlink_metadata().unwrap().is_dir();
        out.push(if is_dir { format!("{rel}/") } else { rel });
    }
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

const SOURCE_STAGE: &str = "FROM busybox:fixture AS src
RUN mkdir -p /src/sub /src/deep/er && echo 1 > /src/a1.txt && echo 2 > /src/a2.txt && echo b > /src/b.txt && echo abc > /src/abc.txt && echo c > /src/sub/c.txt && echo d > /src/deep/er/d.txt && echo gone > /src/a3.txt
RUN rm /src/a3.txt
";

fn from_wildcards(f: &Fixture) {
    let df = format!(
        "{SOURCE_STAGE}FROM busybox:fixture
COPY --from=src /src/a*.txt /star/
COPY --from=src /src/a?.txt /question/
COPY --from=src /src/*/c.txt /src/[b]* /nested/
COPY --from=src /src/s* /dir/
"
    );
    let ctx = f.context("from-wildcards", &df, &[]);
    let (_, root) = f.rootfs(&ctx);
    // a3.txt was deleted by a later layer of the stage: the whiteout holds.
    assert_eq!(tree(&root.join("star")), ["a1.txt", "a2.txt", "abc.txt"]);
    assert_eq!(tree(&root.join("question")), ["a1.txt", "a2.txt"]);
    assert_eq!(tree(&root.join("nested")), ["b.txt", "c.txt"]);
    assert_eq!(
        std::fs::read_to_string(root.join("star/a2.txt")).unwrap(),
        "2\n"
    );
    // A matched dir copies its contents, as a context wildcard does.
    assert_eq!(tree(&root.join("dir")), ["c.txt"]);
}

fn from_wildcard_without_match_fails(f: &Fixture) {
    let df = format!("{SOURCE_STAGE}FROM busybox:fixture\nCOPY --from=src /src/*.none /x/\n");
    let ctx = f.context("from-nomatch", &df, &[]);
    let err = f.build(&ctx).unwrap_err();
    assert!(err.is_bad_input(), "{err:?}");
    assert!(err.to_string().contains("/src/*.none"), "{err}");
    let df = format!("{SOURCE_STAGE}FROM busybox:fixture\nCOPY --from=src /src/a3.tx? /x/\n");
    let err = f
        .build(&f.context("from-nomatch-deleted", &df, &[]))
        .unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("a3.tx?"),
        "{err}"
    );
}

fn exclude_from_context(f: &Fixture) {
    let df = "FROM busybox:fixture
COPY --exclude=*.txt --exclude=skip dir /d/
COPY --exclude=*.md hom* /h/
COPY --exclude=**/*.txt dir /all/
";
    let files = [
        ("dir/a.txt", "a"),
        ("dir/b.md", "b"),
        ("dir/sub/c.txt", "c"),
        ("dir/skip/s.md", "s"),
        ("home.txt", "h"),
        ("homer.md", "m"),
    ];
    let ctx = f.context("exclude-context", df, &files);
    let (_, root) = f.rootfs(&ctx);
    assert_eq!(tree(&root.join("d")), ["b.md", "sub/", "sub/c.txt"]);
    assert_eq!(tree(&root.join("h")), ["home.txt"]);
    assert_eq!(
        tree(&root.join("all")),
        ["b.md", "skip/", "skip/s.md", "sub/"]
    );

    // The excluded file is not part of the key: changing it reruns nothing.
    std::fs::write(ctx.join("dir/a.txt"), "changed").unwrap();
    let (_, ran) = f.build(&ctx).unwrap();
    assert_eq!(ran, Vec::<usize>::new(), "an excluded file changed");
    std::fs::write(ctx.join("dir/b.md"), "changed").unwrap();
    let (_, ran) = f.build(&ctx).unwrap();
    // Line 3 reruns too: its key chains line 2's.
    assert_eq!(ran, vec![2, 3, 4], "a copied file changed");
}

/// `ADD --unpack=false` copies a local archive as it is; plain ADD unpacks it.
fn add_unpack_false_keeps_the_archive(f: &Fixture) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    tar.append_data(&mut header, "inside.txt", &b"hello"[..])
        .unwrap();
    let archive = String::from_utf8(tar.into_inner().unwrap()).unwrap();
    let df = "FROM busybox:fixture
ADD --unpack=false a.tar /kept/
ADD a.tar /unpacked/
";
    let ctx = f.context("unpack", df, &[("a.tar", archive.as_str())]);
    let (_, root) = f.rootfs(&ctx);
    assert_eq!(tree(&root.join("kept")), ["a.tar"]);
    assert_eq!(
        std::fs::read(root.join("kept/a.tar")).unwrap(),
        archive.as_bytes()
    );
    assert_eq!(tree(&root.join("unpacked")), ["inside.txt"]);
}

fn exclude_from_stage(f: &Fixture) {
    let df = "FROM busybox:fixture AS src
RUN mkdir -p /out/sub && echo k > /out/keep.txt && echo d > /out/drop.log && echo x > /out/sub/x.log && echo y > /out/sub/y.txt && chown -R 1000:1000 /out && chmod 705 /out/sub
FROM busybox:fixture
COPY --from=src --exclude=*.log --exclude=sub/x.log /out /o/
COPY --from=src --exclude=keep.txt /out/keep.txt /out/sub/y.txt /single/
";
    let ctx = f.context("exclude-stage", df, &[]);
    let (manifest, root) = f.rootfs(&ctx);
    assert_eq!(tree(&root.join("o")), ["keep.txt", "sub/", "sub/y.txt"]);
    assert_eq!(tree(&root.join("single")), ["y.txt"]);
    // The dirs of the mask layer stand in for the stage's: owner and mode kept.
    let mapping = cairn_sandbox::idmap::IdMapping::for_current_user();
    assert_eq!(mode(&root.join("o/sub")), 0o705, "the stage's mode is kept");
    let layer = layer_holding(f, &manifest, "o/sub");
    let sub = std::fs::symlink_metadata(layer.join("o/sub")).unwrap();
    assert_eq!(
        Some(sub.uid()),
        mapping.host_uid(1000),
        "the stage's owner is kept"
    );
    let kept = std::fs::symlink_metadata(layer.join("o/sub/y.txt")).unwrap();
    assert_eq!(Some(kept.uid()), mapping.host_uid(1000));
}

/// The extracted layer of `manifest` that has `rel`.
fn layer_holding(f: &Fixture, manifest: &str, rel: &str) -> PathBuf {
    let (_, parsed) = f.store.manifest(&manifest.parse().unwrap()).unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(
        &f.store
            .read_blob_bytes(&parsed.config.unwrap().digest)
            .unwrap(),
    )
    .unwrap();
    cfg["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| f.store.layer_dir(&d.as_str().unwrap().parse().unwrap()))
        .rfind(|dir| dir.join(rel).symlink_metadata().is_ok())
        .unwrap_or_else(|| panic!("no layer has {rel}"))
}

fn parents_from_context(f: &Fixture) {
    let df = "FROM busybox:fixture
COPY --parents ./x/./y/*.txt /p1/
COPY --parents x/y/a.txt x/z/c.md /p2/
COPY --parents x/z /p3
COPY --parents ./x/./z/ /p4/
";
    let files = [("x/y/a.txt", "a"), ("x/y/b.txt", "b"), ("x/z/c.md", "c")];
    let ctx = f.context("parents-context", df, &files);
    std::fs::set_permissions(
        ctx.join("x/y"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    let (_, root) = f.rootfs(&ctx);
    assert_eq!(tree(&root.join("p1")), ["y/", "y/a.txt", "y/b.txt"]);
    assert_eq!(
        tree(&root.join("p2")),
        ["x/", "x/y/", "x/y/a.txt", "x/z/", "x/z/c.md"]
    );
    assert_eq!(tree(&root.join("p3")), ["x/", "x/z/", "x/z/c.md"]);
    assert_eq!(tree(&root.join("p4")), ["z/", "z/c.md"]);
    assert_eq!(
        mode(&root.join("p2/x/y")),
        0o750,
        "parents keep the context's mode"
    );
}

fn parents_from_stage(f: &Fixture) {
    let df = "FROM busybox:fixture AS src
RUN mkdir -p /s/a /s/b && echo 1 > /s/a/f1 && echo 2 > /s/b/f2 && echo g > /s/b/g && chmod 705 /s/b
FROM busybox:fixture
COPY --from=src --parents /s/./a/f1 /s/./b/f2 /pf/
COPY --from=src --parents /s/*/f? /pg/
COPY --from=src --parents --exclude=s/b/g /s/b /ph/
";
    let ctx = f.context("parents-stage", df, &[]);
    let (_, root) = f.rootfs(&ctx);
    assert_eq!(tree(&root.join("pf")), ["a/", "a/f1", "b/", "b/f2"]);
    assert_eq!(
        tree(&root.join("pg")),
        ["s/", "s/a/", "s/a/f1", "s/b/", "s/b/f2"]
    );
    assert_eq!(
        mode(&root.join("pg/s/b")),
        0o705,
        "parents keep the stage's mode"
    );
    assert_eq!(tree(&root.join("ph")), ["s/", "s/b/", "s/b/f2"]);
}

fn link_does_not_follow_the_base(f: &Fixture) {
    let df = "FROM busybox:fixture
RUN mkdir -p /opt/real && ln -s /opt/real /opt/link && mkdir -m 700 /opt/private && ln -s /opt/real /opt/nolink
COPY --link f.txt /opt/link/
COPY --link f.txt /opt/private/
COPY --link dir /opt/d/
COPY f.txt /opt/nolink/
";
    let ctx = f.context("link", df, &[("f.txt", "f"), ("dir/in.txt", "i")]);
    std::fs::set_permissions(
        ctx.join("dir"),
        std::os::unix::fs::PermissionsExt::from_mode(0o710),
    )
    .unwrap();
    let (_, root) = f.rootfs(&ctx);
    // The destination path is made of dirs, replacing the base's symlink.
    let link = std::fs::symlink_metadata(root.join("opt/link")).unwrap();
    assert!(link.is_dir(), "--link followed the base's symlink");
    assert_eq!(
        std::fs::read_to_string(root.join("opt/link/f.txt")).unwrap(),
        "f"
    );
    // Without --link the same copy goes through the link.
    assert!(std::fs::symlink_metadata(root.join("opt/nolink"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(tree(&root.join("opt/real")), ["f.txt"]);
    // Parent dirs of a --link layer are 0755 and replace the base's mode.
    assert_eq!(mode(&root.join("opt/private")), 0o755);
    // A copied dir's mode overrides the destination dir's.
    assert_eq!(mode(&root.join("opt/d")), 0o710);
    assert_eq!(tree(&root.join("opt/d")), ["in.txt"]);
}

/// Rootless, the caller lists the source stage: a dir of another container
/// user that others may not read cannot be listed, and `--exclude` below it
/// must fail with a clear message rather than copy what it should leave out.
fn unreadable_stage_dirs(f: &Fixture) {
    let df = "FROM busybox:fixture AS src
RUN mkdir /priv && echo a > /priv/a && echo l > /priv/b.log && chown -R 1000:1000 /priv && chmod 700 /priv
FROM busybox:fixture
COPY --from=src --exclude=*.log /priv /p/
";
    let ctx = f.context("unreadable", df, &[]);
    if nix::unistd::geteuid().is_root() {
        let (_, root) = f.rootfs(&ctx);
        assert_eq!(tree(&root.join("p")), ["a"]);
    } else {
        let err = f.build(&ctx).unwrap_err();
        assert!(
            err.is_bad_input() && err.to_string().contains("cannot list /priv"),
            "{err}"
        );
    }
}

/// The entries of a layer blob (gzip tar), one line each: path, type,
/// mode, owner, mtime, size, link target, PAX records, content sha256.
fn layer_listing(blob: &[u8]) -> Vec<String> {
    use sha2::Digest as _;
    use std::io::Read;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let mut pax = Vec::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                pax.push(format!("{}={}", ext.key().unwrap(), ext.value().unwrap()));
            }
        }
        let mut body = Vec::new();
        entry.read_to_end(&mut body).unwrap();
        let sum = hex::encode(sha2::Sha256::digest(&body));
        out.push(format!(
            "{path} {:?} {:o} {}:{} {} {} {link} [{}] {}",
            h.entry_type(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mtime().unwrap(),
            h.size().unwrap(),
            pax.join(","),
            &sum[..12],
        ));
    }
    out
}

/// Set the time of `path` (a link itself, not its target).
fn set_time(path: &Path, secs: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", path.display());
}

/// Root writes a COPY straight into the upper dir; rootless reads the
/// context files straight into a tar extracted in the user namespace
/// (no staging copy). Both must give the same layer, byte for byte:
/// owners from --chown, modes from --chmod (dirs without x included, which
/// the old staging tree could not read back), times, a symlink inside and
/// one pointing out of the context (copied as links, never followed), a
/// hard-link pair (one file, two names), an empty dir, a file with an
/// xattr (not copied, either way) and a .dockerignore'd file left out.
/// Each run checks the layer against the same pinned listing and diffID.
fn rootless_copy_matches_root(f: &Fixture) {
    let df = "FROM busybox:fixture\nCOPY --chown=10:20 --chmod=0640 tree /app/\n";
    let ctx = f.context(
        "rootless-copy",
        df,
        &[
            (".dockerignore", "tree/ignored\n"),
            ("tree/a", "aaa\n"),
            ("tree/ignored", "secret\n"),
            ("tree/sub/b", "bbbb\n"),
            ("tree/attr", "with an xattr\n"),
        ],
    );
    let tree = ctx.join("tree");
    std::fs::hard_link(tree.join("a"), tree.join("a-hard")).unwrap();
    std::os::unix::fs::symlink("../a", tree.join("sub/sym")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("out")).unwrap();
    std::fs::create_dir(tree.join("empty")).unwrap();
    let attr = std::ffi::CString::new(tree.join("attr").as_os_str().as_encoded_bytes()).unwrap();
    // Best effort (the test file system may refuse user xattrs).
    unsafe {
        libc::setxattr(
            attr.as_ptr(),
            c"user.cairn".as_ptr(),
            b"v".as_ptr().cast(),
            1,
            0,
        )
    };
    for p in [
        "a", "ignored", "sub/b", "sub/sym", "out", "attr", "empty", "sub", "",
    ] {
        set_time(&tree.join(p), 1_600_000_000);
    }
    let mut req = common::request(&ctx, "localhost/rootless-copy:latest");
    req.timestamp = Some(1_700_000_000); // the new /app dir's time is "now"
    let builder = Builder::new(&f.store, Launcher::current_exe().unwrap());
    let result = builder.build(&req, &mut |_| {}).unwrap();
    let (_, parsed) = f.store.manifest(&result.manifest).unwrap();
    let layer = &parsed.children.last().unwrap().digest;
    let listing = layer_listing(&f.store.read_blob_bytes(layer).unwrap());
    let expected = [
        "app/ Directory 755 10:20 1700000000 0  [] e3b0c44298fc",
        "app/a Regular 640 10:20 1600000000 4  [] 17e682f060b5",
        "app/a-hard Link 640 10:20 1600000000 0 app/a [] e3b0c44298fc",
        "app/attr Regular 640 10:20 1600000000 14  [] 083bba71d388",
        "app/empty/ Directory 640 10:20 1600000000 0  [] e3b0c44298fc",
        "app/out Symlink 777 10:20 1600000000 0 /etc/passwd [] e3b0c44298fc",
        "app/sub/ Directory 640 10:20 1600000000 0  [] e3b0c44298fc",
        "app/sub/b Regular 640 10:20 1600000000 5  [] 4551db5fd4d5",
        "app/sub/sym Symlink 777 10:20 1600000000 0 ../a [] e3b0c44298fc",
    ];
    assert_eq!(listing, expected, "the COPY layer's entries");
    let config: serde_json::Value = serde_json::from_slice(
        &f.store
            .read_blob_bytes(&parsed.config.unwrap().digest)
            .unwrap(),
    )
    .unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(
        diff_ids.last().unwrap().as_str().unwrap(),
        "sha256:67a8b7d7575e56ccb610ac687b2f44d432eef6976c843beb63efc8a16c55779a",
        "the COPY layer's diffID (root and rootless pin the same one)"
    );
}

cairn_testsupport::suite_main![Fixture;
    from_wildcards,
    from_wildcard_without_match_fails,
    exclude_from_context,
    exclude_from_stage,
    add_unpack_false_keeps_the_archive,
    parents_from_context,
    parents_from_stage,
    link_does_not_follow_the_base,
    unreadable_stage_dirs,
    rootless_copy_matches_root,
];
