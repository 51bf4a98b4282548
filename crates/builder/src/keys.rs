//! Cache keys (DESIGN.md, "Cache keys"): each step's key chains the previous
//! step's key with everything that can change what the step produces, and
//! nothing else (never an mtime). The builder also keeps each input by
//! name ([`KeyInput`]), so a step that missed the cache can say which
//! input differs from the last build of that step (see `explain`).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// One named input of a step's cache key, in the order it was hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyInput {
    /// FROM: the base image by name, its manifest digest and platform.
    Base {
        image: String,
        digest: String,
        platform: String,
    },
    /// FROM another stage, or `COPY --from`/`--mount from=` of one: that
    /// stage's (or image's) key.
    Stage { name: String, key: String },
    /// The previous step's key.
    Parent { key: String },
    /// The instruction's text as written (flags included).
    Instruction { text: String },
    /// A variable visible to the step: a build arg (`arg`) or an env value.
    Var {
        name: String,
        value: String,
        arg: bool,
    },
    /// A heredoc body (by position), as a digest.
    Heredoc { index: usize, digest: String },
    /// A context file a COPY/ADD reads: its path and a digest of its type,
    /// mode, size, content or link target.
    File { path: String, digest: String },
    /// A `RUN --mount` source: where it reads and a digest of what it sees.
    Mount { source: String, digest: String },
    /// Anything else that is hashed (the COPY's owner, mode and flags, a
    /// URL's checksum, a secret's scope), as a digest.
    Setting { name: String, digest: String },
}

impl KeyInput {
    /// What the input is about: two inputs with the same identity are
    /// compared by value.
    pub fn identity(&self) -> (&'static str, String) {
        match self {
            KeyInput::Base { .. } => ("base", String::new()),
            KeyInput::Stage { name, .. } => ("stage", name.clone()),
            KeyInput::Parent { .. } => ("parent", String::new()),
            KeyInput::Instruction { .. } => ("instruction", String::new()),
            KeyInput::Var { name, .. } => ("var", name.clone()),
            KeyInput::Heredoc { index, .. } => ("heredoc", index.to_string()),
            KeyInput::File { path, .. } => ("file", path.clone()),
            KeyInput::Mount { source, .. } => ("mount", source.clone()),
            KeyInput::Setting { name, .. } => ("setting", name.clone()),
        }
    }
}

/// Builds one step's key and keeps its named inputs.
pub struct KeyBuilder {
    hash: Sha256,
    inputs: Vec<KeyInput>,
}

impl KeyBuilder {
    /// Start from the previous step's key (the base image's for the first step).
    pub fn after(parent: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"cairn-build-key-v1\0");
        field(&mut hash, parent.as_bytes());
        KeyBuilder {
            hash,
            inputs: vec![KeyInput::Parent {
                key: parent.to_string(),
            }],
        }
    }

    /// Add a length-prefixed field (so "ab"+"c" and "a"+"bc" differ)
    /// without naming it.
    pub fn field(mut self, bytes: &[u8]) -> Self {
        field(&mut self.hash, bytes);
        self
    }

    /// Add a field and keep it as `input`.
    pub fn named(mut self, bytes: &[u8], input: KeyInput) -> Self {
        field(&mut self.hash, bytes);
        self.inputs.push(input);
        self
    }

    /// Keep `input` without hashing anything more (its bytes are part of a
    /// field hashed as a whole, e.g. the files of a COPY's sources digest).
    pub fn note(mut self, input: KeyInput) -> Self {
        self.inputs.push(input);
        self
    }

    /// The instruction's text.
    pub fn instruction(self, text: &str) -> Self {
        let input = KeyInput::Instruction {
            text: text.to_string(),
        };
        self.named(text.as_bytes(), input)
    }

    /// Add the variables visible to the step, in sorted order; those in
    /// `args` are build args, the others env values.
    pub fn vars(
        mut self,
        vars: &BTreeMap<String, String>,
        args: &BTreeMap<String, String>,
    ) -> Self {
        for (k, v) in vars {
            field(&mut self.hash, k.as_bytes());
            field(&mut self.hash, v.as_bytes());
            self.inputs.push(KeyInput::Var {
                name: k.clone(),
                value: v.clone(),
                arg: args.contains_key(k),
            });
        }
        self
    }

    /// A heredoc body.
    pub fn heredoc(self, index: usize, body: &str) -> Self {
        let input = KeyInput::Heredoc {
            index,
            digest: short_digest(body.as_bytes()),
        };
        self.named(body.as_bytes(), input)
    }

    pub fn finish(self) -> String {
        self.finish_with_inputs().0
    }

    /// The key and the inputs that made it.
    pub fn finish_with_inputs(self) -> (String, Vec<KeyInput>) {
        (hex::encode(self.hash.finalize()), self.inputs)
    }
}

/// The start of every instruction's key, the planner's and the executor's
/// alike: the parent key, the instruction's text, the variables in its
/// scope and its heredoc bodies. RUN adds its mounts, COPY/ADD its sources.
pub(crate) fn instruction_key(
    parent: &str,
    inst: &cairn_dockerfile::Instruction,
    vars: &BTreeMap<String, String>,
    run_args: &BTreeMap<String, String>,
) -> KeyBuilder {
    let mut key = KeyBuilder::after(parent)
        .instruction(&inst.original)
        .vars(vars, run_args);
    for (i, h) in inst.heredocs.iter().enumerate() {
        key = key.heredoc(i, &h.body);
    }
    key
}

/// The key of a stage that starts from an image: its manifest digest and
/// its platform (`os/arch[/variant]`).
pub(crate) fn base_key(manifest: &str, platform: &str) -> String {
    KeyBuilder::after("from")
        .field(manifest.as_bytes())
        .field(platform.as_bytes())
        .finish()
}

/// A stage's key after `FROM --platform=P`: P is part of every later key.
pub(crate) fn platform_key(key: &str, platform: &str) -> String {
    format!("{key}\0platform:{platform}")
}

/// A short hex digest of `bytes`, to compare inputs without keeping them.
pub fn short_digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..12])
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

    #[test]
    fn naming_an_input_does_not_change_the_key() {
        let vars = BTreeMap::from([("V".to_string(), "1".to_string())]);
        let plain = KeyBuilder::after("p")
            .field(b"RUN x")
            .field(b"V")
            .field(b"1")
            .field(b"body")
            .finish();
        let (named, inputs) = KeyBuilder::after("p")
            .instruction("RUN x")
            .vars(&vars, &vars)
            .heredoc(0, "body")
            .note(KeyInput::File {
                path: "a".into(),
                digest: "d".into(),
            })
            .finish_with_inputs();
        assert_eq!(plain, named);
        assert_eq!(inputs.len(), 5);
        assert_eq!(inputs[0], KeyInput::Parent { key: "p".into() });
        assert!(matches!(&inputs[2], KeyInput::Var { arg: true, .. }));
    }

    #[test]
    fn inputs_round_trip_as_json() {
        let input = KeyInput::Var {
            name: "V".into(),
            value: "1".into(),
            arg: true,
        };
        let text = serde_json::to_string(&input).unwrap();
        assert!(text.contains("\"kind\":\"var\""));
        assert_eq!(serde_json::from_str::<KeyInput>(&text).unwrap(), input);
    }
}
