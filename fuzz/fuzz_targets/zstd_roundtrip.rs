#![no_main]
//! The layer zstd writer (raw frames for chunks that do not compress):
//! decode(encode(x)) == x, and the same bytes with 1 and 2 threads and any
//! write sizes. The fuzz input is a recipe, so short inputs reach the 1 MiB
//! chunks: each 3-byte step is (kind, length in 16 KiB units, seed), where
//! the kind picks random bytes, zeros or the input itself repeated; the
//! last byte sets the write size.
use cairn_layer::ZstdEncoder;
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};

fn expand(recipe: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    for step in recipe.chunks_exact(3).take(16) {
        let len = usize::from(step[1]) * 16 * 1024 + usize::from(step[2]);
        match step[0] % 3 {
            0 => {
                let mut x = u64::from(step[2]) * 0x9e37_79b9_7f4a_7c15 | 1;
                data.extend((0..len).map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                }));
            }
            1 => data.resize(data.len() + len, 0),
            _ => data.extend(recipe.iter().cycle().take(len)),
        }
    }
    data
}

fn encode(data: &[u8], threads: usize, piece: usize) -> Vec<u8> {
    let mut enc = ZstdEncoder::new(Vec::new(), 3, threads).unwrap();
    for p in data.chunks(piece.max(1)) {
        enc.write_all(p).unwrap();
    }
    enc.finish().unwrap()
}

fuzz_target!(|recipe: &[u8]| {
    let data = expand(recipe);
    let piece = recipe.last().map_or(1, |&b| usize::from(b) * 4099 + 1);
    let z = encode(&data, 2, data.len().max(1));
    let mut back = Vec::new();
    zstd::stream::read::Decoder::new(&z[..])
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data, "decode(encode(x)) != x");
    assert!(encode(&data, 1, piece) == z, "threads or write sizes changed the bytes");
});
