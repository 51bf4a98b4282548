//! The zstd writer: same bytes as the plain libzstd stream for data that
//! compresses, raw frames that every decoder reads for data that does not,
//! and output that depends on neither the thread count nor the write sizes.

use super::*;
use crate::testdata::{random, text, text_from};
use std::io::Read;

fn encode(data: &[u8], threads: usize) -> Vec<u8> {
    let mut enc = ZstdEncoder::new(Vec::new(), 3, threads).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// What the layer writer produced before this module: one libzstd stream
/// with the same parameters, fed in 1 MiB pieces.
fn encode_before(data: &[u8], threads: usize) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.multithread(threads as u32).unwrap();
    enc.set_parameter(CParameter::JobSize(JOB_SIZE)).unwrap();
    for piece in data.chunks(1 << 20) {
        enc.write_all(piece).unwrap();
    }
    enc.finish().unwrap()
}

fn decode(z: &[u8]) -> Vec<u8> {
    let mut back = Vec::new();
    zstd::stream::read::Decoder::new(z)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    back
}

/// The frames of a stream: (is raw, content bytes) for our raw frames,
/// (false, compressed size) for the others; by walking the block headers.
fn frames(z: &[u8]) -> Vec<(bool, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < z.len() {
        assert_eq!(z[at..at + 4], MAGIC, "frame at {at}");
        let fhd = z[at + 4];
        let raw = fhd == RAW_FRAME_DESCRIPTOR;
        // Our compressed frames: no content size, no single segment: a
        // window descriptor byte. Raw ones: a 4-byte content size.
        let mut p = at + 5 + if raw { 4 } else { 1 };
        assert_eq!(fhd & 0b0000_0111, 0, "no checksum, no dictionary");
        let mut content = 0;
        loop {
            let h = u32::from_le_bytes([z[p], z[p + 1], z[p + 2], 0]);
            let (last, kind, size) = (h & 1 == 1, (h >> 1) & 3, (h >> 3) as usize);
            assert!(size <= MAX_BLOCK);
            if raw {
                assert_eq!(kind, 0, "raw frames hold raw blocks only");
                content += size;
            }
            p += 3 + if kind == 1 { 1 } else { size };
            if last {
                break;
            }
        }
        if raw {
            let fcs = u32::from_le_bytes(z[at + 5..at + 9].try_into().unwrap());
            assert_eq!(fcs as usize, content);
        }
        out.push((raw, if raw { content } else { p - at }));
        at = p;
    }
    out
}

#[test]
fn compressible_data_gives_the_same_bytes_as_the_plain_libzstd_stream() {
    // Layer digests of ordinary layers must not move: empty, tiny, short
    // of a chunk, whole chunks, several jobs plus a tail.
    for len in [
        0,
        100,
        40_000,
        CHUNK - 1,
        CHUNK,
        CHUNK * 3 + 5,
        CHUNK * 9 + 777,
    ] {
        let data = text(len);
        let ours = encode(&data, 2);
        assert!(ours == encode_before(&data, 2), "{len} bytes");
        assert_eq!(frames(&ours).len(), 1, "{len} bytes: one frame");
    }
}

#[test]
fn incompressible_chunks_are_raw_frames_and_round_trip() {
    for len in [CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 200_000] {
        let data = random(len, len as u64);
        let z = encode(&data, 2);
        assert!(decode(&z) == data, "{len} bytes");
        let f = frames(&z);
        let whole = len / CHUNK;
        assert!(f[..whole].iter().all(|&(raw, n)| raw && n == CHUNK));
        // The short tail is compressed (libzstd stores it raw itself).
        assert_eq!(f.len(), whole + usize::from(len % CHUNK != 0));
        // 33 bytes per raw MiB, and libzstd's own few for the tail.
        assert!(z.len() <= len + 33 * whole + 64, "{len} -> {}", z.len());
    }
}

#[test]
fn raw_frames_at_block_multiples_decode() {
    // Raw frames cut into 128 KiB blocks: lengths at, around and between
    // block multiples, and empty.
    for len in [
        0,
        1,
        MAX_BLOCK - 1,
        MAX_BLOCK,
        MAX_BLOCK + 1,
        2 * MAX_BLOCK,
        CHUNK - 1,
        CHUNK,
    ] {
        let data = random(len, 3 + len as u64);
        let mut z = Vec::new();
        write_raw_frame(&mut z, &data).unwrap();
        assert_eq!(frames(&z), vec![(true, len)]);
        assert!(decode(&z) == data, "{len} bytes");
        let blocks = len.div_ceil(MAX_BLOCK).max(1);
        assert_eq!(z.len(), 9 + 3 * blocks + len);
    }
}

/// Alternating random and text runs on chunk boundaries, and a tail of
/// random bytes.
fn mixed() -> Vec<u8> {
    let mut data = Vec::new();
    for i in 0..5 {
        data.extend(random(CHUNK, i as u64 + 1));
        let t = text_from(100_000 * i as u64, CHUNK * (1 + i % 2));
        data.extend(t);
    }
    data.extend(random(CHUNK, 77));
    data.extend(random(1000, 99));
    data
}

/// Bytes of `mixed()` that are random, and its raw frames' overhead.
const MIXED_RANDOM: usize = 6 * CHUNK + 1000;
const MIXED_RAW_OVERHEAD: usize = 6 * 33;

#[test]
fn mixed_input_decodes_and_does_not_depend_on_threads_or_write_sizes() {
    let data = mixed();
    let one = encode(&data, 1);
    for threads in [2, 4] {
        assert!(encode(&data, threads) == one, "{threads} threads");
    }
    let mut split = ZstdEncoder::new(Vec::new(), 3, 2).unwrap();
    for piece in data.chunks(777) {
        split.write_all(piece).unwrap();
    }
    assert!(split.finish().unwrap() == one, "777-byte writes");
    assert!(decode(&one) == data);
    let f = frames(&one);
    // Raw, text, raw, ... raw, and the short random tail compressed.
    let kinds: Vec<bool> = f.iter().map(|&(raw, _)| raw).collect();
    let mut expected: Vec<bool> = (0..11).map(|i| i % 2 == 0).collect();
    expected.push(false);
    assert_eq!(kinds, expected);
    // The text was compressed, the random bytes were not grown.
    assert!(one.len() < MIXED_RANDOM + MIXED_RAW_OVERHEAD + (data.len() - MIXED_RANDOM) / 4);
}

#[test]
fn compressible_data_keeps_its_ratio_next_to_raw_chunks() {
    // Raw chunks end compressed frames, so matches cannot reach across
    // them; the text's share must stay within 5 % of the plain stream's
    // (which stores the random bytes raw too, after trying).
    let data = mixed();
    let ours = encode(&data, 2).len() - (MIXED_RANDOM + MIXED_RAW_OVERHEAD);
    let before = encode_before(&data, 2).len() - MIXED_RANDOM;
    assert!(ours * 100 <= before * 105, "ours {ours} vs {before}");
}

#[test]
fn the_trial_keeps_compressible_chunks_and_catches_random_ones() {
    let mut t = Trial::new().unwrap();
    assert!(t.looks_incompressible(&random(CHUNK, 5)));
    assert!(!t.looks_incompressible(&text(CHUNK)));
    assert!(!t.looks_incompressible(&vec![0u8; CHUNK]));
    // Base64-like data (6 bits per byte) compresses by ~25 %: not raw.
    let b64: Vec<u8> = random(CHUNK, 6)
        .iter()
        .map(|b| {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(b & 63) as usize]
        })
        .collect();
    assert!(!t.looks_incompressible(&b64));
    // Short chunks (only the last of a stream) are never tried.
    assert!(!t.looks_incompressible(&random(CHUNK - 1, 5)));
}

#[test]
fn decode_of_encode_is_the_identity_for_generated_inputs() {
    // A property test with a fixed seed: inputs made of random, text and
    // zero runs of random lengths (some at chunk and block multiples),
    // written in random piece sizes, with 1 or 2 threads.
    let mut seed = 0x5eed_u64;
    let mut next = |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound as u64) as usize
    };
    for case in 0..24 {
        let mut data = Vec::new();
        for _ in 0..next(6) {
            let len = match next(4) {
                0 => next(3) * MAX_BLOCK,
                1 => next(2 * CHUNK),
                2 => CHUNK - data.len() % CHUNK,
                _ => next(5000),
            };
            match next(3) {
                0 => data.extend(random(len, next(1 << 30) as u64)),
                1 => data.extend(text(len)),
                _ => data.resize(data.len() + len, 0),
            }
        }
        let threads = 1 + case % 2;
        let mut enc = ZstdEncoder::new(Vec::new(), 3, threads).unwrap();
        let mut at = 0;
        while at < data.len() {
            let n = (1 + next(3 * CHUNK / 2)).min(data.len() - at);
            enc.write_all(&data[at..at + n]).unwrap();
            at += n;
        }
        let z = enc.finish().unwrap();
        assert!(decode(&z) == data, "case {case}: {} bytes", data.len());
        assert!(z == encode(&data, 3 - threads), "case {case}: threads");
    }
}

#[test]
fn zstd_itself_reads_the_stream() {
    let Ok(v) = std::process::Command::new("zstd").arg("--version").output() else {
        eprintln!("SKIP: no zstd binary");
        return;
    };
    assert!(v.status.success());
    let data = mixed();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.zst");
    std::fs::write(&path, encode(&data, 2)).unwrap();
    let t = std::process::Command::new("zstd")
        .args(["-q", "-t"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(t.success(), "zstd -t failed");
    let out = std::process::Command::new("zstd")
        .args(["-q", "-d", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == data, "zstd -d gave other bytes");
}
