//! SHA-256 digests and a writer that hashes what passes through it.
//!
//! Every blob in Cairn is named by `sha256:<hex>`. The hashing writer is the
//! one place bytes are hashed on their way to disk, so a blob is read once.

pub use crate::hash_thread::BackgroundHasher;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

/// A `sha256:<64 lowercase hex>` content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// A string that is not a valid `sha256:` digest.
#[derive(Debug, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
pub struct BadDigest(pub String);

impl Digest {
    /// The digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The 64 hex digits, without the algorithm prefix (the file name under blobs/sha256/).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest whose raw bytes are `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// Parse bare hex digits (as found in file names).
    pub fn from_hex(hex_digits: &str) -> Result<Self, BadDigest> {
        let bad = || BadDigest(hex_digits.to_string());
        if hex_digits.len() != 64 || hex_digits.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut out).map_err(|_| bad())?;
        Ok(Digest(out))
    }
}

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, BadDigest> {
        match s.strip_prefix("sha256:") {
            Some(h) => Digest::from_hex(h).map_err(|_| BadDigest(s.to_string())),
            None => Err(BadDigest(s.to_string())),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Wraps a writer, hashing and counting every byte written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

/// Where a [`HashingWriter`] hashes.
enum Hasher {
    Inline(Sha256, u64),
    /// On a thread of its own ([`BackgroundHasher`]).
    Thread(BackgroundHasher),
}

impl<W: Write> HashingWriter<W> {
    /// Hashes on the writing thread.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::Inline(Sha256::new(), 0),
        }
    }

    /// Hashes on a thread of its own, so the writing thread only copies
    /// (for streams of many MiB; the digest is the same).
    pub fn threaded(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::Thread(BackgroundHasher::new()),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        match &self.hasher {
            Hasher::Inline(_, n) => *n,
            Hasher::Thread(t) => t.written(),
        }
    }

    /// Hash `data` as if it had been written (for bytes that reached the
    /// inner writer some other way).
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.hasher {
            Hasher::Inline(h, n) => {
                h.update(data);
                *n += data.len() as u64;
            }
            Hasher::Thread(t) => t.update(data),
        }
    }

    /// The inner writer, the digest and the byte count of everything written.
    pub fn finish(self) -> (W, Digest, u64) {
        let (digest, written) = match self.hasher {
            Hasher::Inline(h, n) => (Digest(h.finalize().into()), n),
            Hasher::Thread(t) => t.finish(),
        };
        (self.inner, digest, written)
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_and_round_trip() {
        let d = Digest::of(b"");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        assert!("sha256:E3B0".parse::<Digest>().is_err());
        assert!("md5:00".parse::<Digest>().is_err());
    }

    #[test]
    fn hashing_writer_matches_one_shot() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (buf, d, n) = w.finish();
        assert_eq!(n, 11);
        assert_eq!(d, Digest::of(&buf));
        let mut w = HashingWriter::threaded(Vec::new());
        w.write_all(&vec![7u8; 3 << 20]).unwrap();
        w.write_all(b"tail").unwrap();
        let (buf, d, n) = w.finish();
        assert_eq!((n, d), (buf.len() as u64, Digest::of(&buf)));
    }
}
