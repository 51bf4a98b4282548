#![no_main]
//! Parse arbitrary bytes as a Dockerfile; when it parses, serialise the
//! tree to JSON as `cairn parse` does. Any panic is a bug.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(doc) = cairn_dockerfile::parse(&text) {
        let json = cairn_dockerfile::to_json(&doc);
        assert!(json.starts_with('{'));
    }
});
