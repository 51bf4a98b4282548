#![no_main]
//! Any byte string as a manifest or index from a registry or an archive:
//! parsing must return (Ok or Err), never panic; what parses must name only
//! sha256 digests and sizes the store can hold.
use cairn_store::image::parse_manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = parse_manifest(data, None) {
        for blob in parsed.config.iter().chain(&parsed.children) {
            assert_eq!(blob.digest.to_string().len(), "sha256:".len() + 64);
        }
    }
});
