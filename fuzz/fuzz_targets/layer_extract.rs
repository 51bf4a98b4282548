#![no_main]
//! Any byte string as a layer blob: extraction must return (Ok or Err), never
//! panic, and never create, change or remove anything outside the destination.
use cairn_layer::{extract_layer, ExtractOptions, IdMap, OverlayFlavour, WhiteoutMode};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let outer = std::env::temp_dir().join(format!("cairn-fuzz-layer-{}-{n}", std::process::id()));
    let dest = outer.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(outer.join("sentinel"), b"untouched").unwrap();

    // Both whiteout modes, picked by length so seeds keep their meaning.
    let whiteout_mode = if data.len() % 2 == 0 {
        WhiteoutMode::Apply
    } else {
        WhiteoutMode::Overlay(OverlayFlavour::UserXattr)
    };
    let opts = ExtractOptions {
        whiteout_mode,
        id_map: IdMap::identity(),
        unprivileged: true,
        limits: cairn_layer::ExtractLimits {
            max_size: Some(16 << 20),
            ..cairn_layer::ExtractLimits::default()
        },
    };
    let _ = extract_layer(data, &dest, &opts);

    let mut names: Vec<_> = std::fs::read_dir(&outer)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["dest", "sentinel"],
        "something appeared next to dest"
    );
    assert_eq!(std::fs::read(outer.join("sentinel")).unwrap(), b"untouched");
    let meta = std::fs::symlink_metadata(&dest).unwrap();
    assert!(meta.is_dir(), "dest itself was replaced");
    std::fs::remove_dir_all(&outer).unwrap();
});
