//! Reproducible inputs for tests and benches: incompressible bytes and
//! tar-like text. One copy, so that the compressors' unit tests, the
//! integration tests and the criterion benches check and measure the same
//! data. Not part of the library's API (hidden from its docs).

/// `len` incompressible bytes (a xorshift stream), the same for the same
/// `seed` (0 is taken as 1: xorshift's zero state would stay zero).
pub fn random(len: usize, mut seed: u64) -> Vec<u8> {
    seed |= 1;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// `len` bytes of compressible, tar-like text: repetitive lines with some
/// variety.
pub fn text(len: usize) -> Vec<u8> {
    text_from(0, len)
}

/// [`text`] starting at line `first` (runs that do not repeat each other).
pub fn text_from(first: u64, len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len + 100);
    let mut i = first;
    while data.len() < len {
        let line = format!(
            "usr/share/doc/pkg{i}/changelog line {i} version {}\n",
            i % 97
        );
        data.extend_from_slice(line.as_bytes());
        i += 1;
    }
    data.truncate(len);
    data
}
