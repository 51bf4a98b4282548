#![no_main]
//! Parse arbitrary bytes as a Dockerfile; when it parses, serialise the
//! tree to JSON as `cairn parse` does, and type every instruction (a
//! typing error must be an `Err` with a position, never a panic).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(doc) = cairn_dockerfile::parse(&text) {
        let json = cairn_dockerfile::to_json(&doc);
        assert!(json.starts_with('{'));
        for stage in &doc.stages {
            let _ = stage.typed_from();
            for inst in &stage.instructions {
                if let Err(e) = inst.typed() {
                    assert!(e.line >= 1 && e.column >= 1);
                }
            }
        }
    }
});
