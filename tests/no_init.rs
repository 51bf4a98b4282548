//! A binary that never calls `cairn::init()` (this test binary, with the
//! default harness): the first sandbox call fails with an error that says
//! so, and leaves nothing behind.

use cairn::{Cairn, CairnOptions, ErrorKind};

#[test]
fn sandbox_calls_without_init_say_so_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(cairn_testsupport::store_with_busybox(dir.path()));
    let store = dir.path().join("store");
    let cairn = Cairn::open(CairnOptions::new(&store)).expect("open");

    let err = cairn
        .create_sandbox("busybox:fixture", &Default::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("cairn::init()"), "{err}");
    let left: Vec<_> = std::fs::read_dir(store.join("sandboxes"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");

    let err = cairn
        .build(&cairn::BuildRequest::text(
            "FROM busybox:fixture\nRUN true\n",
        ))
        .unwrap_err();
    assert!(err.to_string().contains("cairn::init()"), "{err}");
}
