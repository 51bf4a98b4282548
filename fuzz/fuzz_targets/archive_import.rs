#![no_main]
//! Any byte string as an oci-archive and as a docker-archive: import must
//! return (Ok or Err), never panic, never write outside the store, and leave
//! a store that fsck passes (a failed import leaves only unnamed blobs).
use cairn_layer::ExtractLimits;
use cairn_store::transport::Transport;
use cairn_store::Store;
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let outer = std::env::temp_dir().join(format!("cairn-fuzz-archive-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&outer).unwrap();
    let file = outer.join("input.tar");
    std::fs::write(&file, data).unwrap();
    let limits = ExtractLimits {
        max_size: Some(16 << 20),
        max_entries: Some(1000),
        max_header_size: Some(64 << 10),
    };
    {
        let store = Store::open(outer.join("store")).unwrap();
        for kind in ["oci-archive", "docker-archive"] {
            let src = Transport::parse(&format!("{kind}:{}", file.display())).unwrap();
            let _ = store.import_with_limits(&src, None, &limits);
        }
        let problems = store.fsck().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }
    let mut names: Vec<_> = std::fs::read_dir(&outer)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["input.tar", "store"], "something appeared next to the store");
    std::fs::remove_dir_all(&outer).unwrap();
});
