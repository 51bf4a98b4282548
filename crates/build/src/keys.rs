//! Cache keys (DESIGN.md, "Cache keys"): each step's key chains the previous
//! step's key with everything that can change what the step produces, and
//! nothing else (never an mtime).

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// Builds one step's key.
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// Start from the previous step's key (the base image's for the first step).
    pub fn after(parent: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"cairn-build-key-v1\0");
        field(&mut h, parent.as_bytes());
        KeyBuilder(h)
    }

    /// Add a length-prefixed field (so "ab"+"c" and "a"+"bc" differ).
    pub fn field(mut self, bytes: &[u8]) -> Self {
        field(&mut self.0, bytes);
        self
    }

    /// Add the variables visible to the step, in sorted order.
    pub fn vars(mut self, vars: &BTreeMap<String, String>) -> Self {
        for (k, v) in vars {
            field(&mut self.0, k.as_bytes());
            field(&mut self.0, v.as_bytes());
        }
        self
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_delimited_and_order_matters() {
        let a = KeyBuilder::after("p").field(b"ab").field(b"c").finish();
        let b = KeyBuilder::after("p").field(b"a").field(b"bc").finish();
        assert_ne!(a, b);
        let c = KeyBuilder::after("q").field(b"ab").field(b"c").finish();
        assert_ne!(a, c);
        assert_eq!(a, KeyBuilder::after("p").field(b"ab").field(b"c").finish());
    }
}
