//! Structured build errors: the kind and the Dockerfile position of bad
//! inputs are fields (`BuildError::kind`, `BuildError::position`), and the
//! text keeps its `FILE:LINE[:COL]: message` shape. No root needed: every
//! case fails before anything runs in a namespace.

mod common;

use cairn_builder::{BuildError, Builder, ErrorKind};
use cairn_sandbox::Launcher;
use cairn_store::Store;

/// Build `dockerfile` (with `files` in its context) in a fresh store.
fn fail(dockerfile: &str, files: &[(&str, &str)], target: Option<&str>) -> (BuildError, String) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let context = common::write_context(tmp.path(), "ctx", dockerfile, files);
    let mut req = common::request(&context, "localhost/errors:latest");
    req.target = target.map(String::from);
    let builder = Builder::new(&store, Launcher::current_exe().unwrap());
    let err = builder.build(&req, &mut |_| {}).unwrap_err();
    let file = context.join("Dockerfile").display().to_string();
    (err, file)
}

/// (line, column) of the error's position, which must name the Dockerfile.
fn place(err: &BuildError, file: &str) -> Option<(usize, Option<usize>)> {
    err.position().map(|p| {
        assert_eq!(p.file, file);
        (p.line, p.column)
    })
}

#[test]
fn flag_errors_are_bad_input_at_the_flag() {
    let (err, file) = fail("FROM scratch\nCOPY --foo a b\n", &[], None);
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert!(err.is_bad_input());
    assert_eq!(place(&err, &file), Some((2, Some(6))));
    assert_eq!(err.to_string(), format!("{file}:2:6: unknown flag: --foo"));
    assert_eq!(err.message(), "unknown flag: --foo");
}

#[test]
fn mount_field_errors_point_at_the_mount() {
    let (err, file) = fail(
        "FROM scratch\nRUN --network=none \\\n  --mount=type=cache,colour=red true\n",
        &[],
        None,
    );
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert_eq!(place(&err, &file), Some((3, Some(3))));
    assert!(err.to_string().starts_with(&format!(
        "{file}:3:3: RUN --mount=type=cache,colour=red: unknown field \"colour\""
    )));
}

#[test]
fn deferred_quote_errors_keep_their_column() {
    let (err, file) = fail("FROM scratch\nUSER \"open\n", &[], None);
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert_eq!(place(&err, &file), Some((2, Some(6))));
}

#[test]
fn missing_things_are_not_found() {
    let (err, file) = fail("FROM scratch\nCOPY nope /x\n", &[], None);
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.is_bad_input());
    assert_eq!(place(&err, &file), Some((2, None)));
    assert!(
        err.to_string().starts_with(&format!("{file}:2: COPY")),
        "{err}"
    );
    let (err, _) = fail("FROM scratch\n", &[], Some("nosuch"));
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.position(), None);
    assert!(err.to_string().contains("\"nosuch\""), "{err}");
}

#[test]
fn expansion_errors_are_bad_input_at_the_line() {
    let (err, file) = fail("FROM scratch\nWORKDIR ${X:?X is required}\n", &[], None);
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert_eq!(place(&err, &file).map(|p| p.0), Some(2));
}

#[test]
fn from_errors_point_at_the_from_line() {
    // Not in the store (and no registry to pull from).
    let (err, file) = fail("FROM scratch AS a\nFROM nosuch/image:1\n", &[], None);
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(place(&err, &file), Some((2, None)));
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{file}:2: no such image: ")) && text.contains("nosuch/image:1"),
        "{err}"
    );
    // Not a valid reference.
    let (err, file) = fail("FROM scratch\nRUN true\nFROM Bad_Name:x\n", &[], None);
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(place(&err, &file), Some((3, None)), "{err}");
    // An expansion that fails already did.
    let (err, file) = fail("FROM scratch\nFROM ${BASE:?unset}\n", &[], None);
    assert_eq!(place(&err, &file).map(|p| p.0), Some(2), "{err}");
}

#[test]
fn unsupported_features_carry_their_position() {
    let (err, file) = fail(
        "FROM scratch\nADD git@github.com:moby/buildkit.git /src\n",
        &[],
        None,
    );
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(matches!(err, BuildError::Unsupported(_)));
    assert_eq!(place(&err, &file), Some((2, None)));
    assert_eq!(
        err.to_string(),
        format!(
            "{file}:2: not supported yet: ADD of a git repository or a URL that is not http(s)"
        )
    );
    assert_eq!(
        err.message(),
        "not supported yet: ADD of a git repository or a URL that is not http(s)"
    );
    let (err, file) = fail(
        "FROM scratch\nENV A=1\nRUN --security=insecure true\n",
        &[],
        None,
    );
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert_eq!(place(&err, &file), Some((3, None)));
}

#[test]
fn add_url_errors_carry_their_position() {
    let (err, file) = fail("FROM scratch\n\nADD http://[::1/x /x\n", &[], None);
    assert!(matches!(err, BuildError::Fetch(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert_eq!(place(&err, &file), Some((3, None)));
    // The text keeps its shape.
    assert!(err.to_string().starts_with("line 3: ADD "), "{err}");
}

#[test]
fn tagging_another_organizations_snapshot_name_is_a_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let context = common::write_context(
        tmp.path(),
        "ctx",
        "FROM scratch\nENV A=1\n",
        &[] as &[(&str, &str)],
    );
    let builder = Builder::new(&store, Launcher::current_exe().unwrap());
    let build = |org: &str, tag: &str| {
        let mut req = common::request(&context, tag);
        req.organization = Some(org.to_string());
        builder.build(&req, &mut |_| {})
    };
    let theirs = "localhost/snapshots/bravo/web:1";
    let err = build("alpha", theirs).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.is_bad_input());
    assert!(err.to_string().contains(theirs), "{err}");
    assert!(store.resolve(theirs).is_err(), "nothing was tagged");
    // Its own namespace, the general one and other names are fine.
    for tag in [
        "localhost/snapshots/alpha/web:1",
        "localhost/snapshots/general__snapshots/web:1",
        "localhost/alpha/web:1",
    ] {
        build("alpha", tag).unwrap();
        assert!(store.resolve(tag).is_ok(), "{tag}");
    }
    // The same name, built for its organization.
    build("bravo", theirs).unwrap();
}

/// A COPY source whose paths pass PATH_MAX (a 2,100-level context tree):
/// the scan walks it by descriptors and refuses the copy before anything
/// is written, naming the path (docs/security.md, "Deep trees").
#[test]
fn a_context_tree_past_path_max_is_refused_naming_the_path() {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    use std::os::fd::AsFd;
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let files = [("t/top", "x")];
    let context = common::write_context(tmp.path(), "ctx", "FROM scratch\nCOPY t /t\n", &files);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut fd = nix::fcntl::open(&context.join("t"), flags, Mode::empty()).unwrap();
    for _ in 0..2100 {
        mkdirat(fd.as_fd(), "d", Mode::from_bits_truncate(0o755)).unwrap();
        fd = openat(fd.as_fd(), "d", flags, Mode::empty()).unwrap();
    }
    let req = common::request(&context, "localhost/deep:latest");
    let builder = Builder::new(&store, Launcher::current_exe().unwrap());
    let err = builder.build(&req, &mut |_| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    let file = context.join("Dockerfile").display().to_string();
    assert_eq!(place(&err, &file).map(|p| p.0), Some(2));
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}/t/d/d/d", context.display())),
        "{text}"
    );
    assert!(text.contains("PATH_MAX"), "{text}");
    assert!(
        store.resolve("localhost/deep:latest").is_err(),
        "nothing tagged"
    );
    let tmp_dir = store.root().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp_dir).into_iter().flatten().collect();
    assert!(left.is_empty(), "tmp/ holds {left:?}");
}
