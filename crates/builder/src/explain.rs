//! Why a step missed the cache: its key's inputs compared with those of the
//! last build of the same step (the same Dockerfile, context, stage and
//! position), first difference first. Pure functions over [`KeyInput`]s:
//! `cairn build --dry-run` and `--explain` print what they return.

use crate::keys::KeyInput;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;

/// Why a step does not come from the cache (or, for a config-only step,
/// why its key changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// `--no-cache`.
    NoCache,
    /// This step was never built before with this Dockerfile and context.
    NotBuiltBefore,
    /// The key is the same as last time, but its layer is gone (pruned).
    LayerMissing,
    /// The FROM image resolves to another manifest (or platform).
    BaseChanged {
        image: String,
        old: String,
        new: String,
    },
    /// The FROM image is not in the store (a dry run does not pull).
    BaseNotInStore { image: String },
    /// A stage this step reads (FROM, `COPY --from`, `--mount from=`) changed.
    StageChanged { name: String },
    /// The step before changed; `cause` is why (at `line`), when known.
    ParentChanged {
        line: usize,
        cause: Option<Box<Reason>>,
    },
    /// The instruction's text changed.
    InstructionChanged { old: String, new: String },
    /// A build arg (or, `arg` false, an env value) changed, appeared
    /// (`old` None) or went away (`new` None).
    VarChanged {
        name: String,
        arg: bool,
        old: Option<String>,
        new: Option<String>,
    },
    /// A heredoc body changed.
    HeredocChanged { index: usize },
    /// A context file changed, was added (`change` "added") or removed.
    FileChanged { path: String, change: Change },
    /// A `RUN --mount` source changed.
    MountChanged { source: String },
    /// Another hashed setting changed (owner, mode, flags, checksum, ...).
    SettingChanged { name: String },
}

/// How a named input differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Modified,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: &Option<String>| match v {
            Some(v) => format!("{v:?}"),
            None => "unset".to_string(),
        };
        match self {
            Reason::NoCache => write!(f, "--no-cache"),
            Reason::NotBuiltBefore => write!(f, "not built before"),
            Reason::LayerMissing => write!(f, "its cached layer was removed"),
            Reason::BaseChanged { image, old, new } => {
                write!(f, "base image {image} changed: {old} -> {new}")
            }
            Reason::BaseNotInStore { image } => {
                write!(f, "base image {image} is not in the store (would pull)")
            }
            Reason::StageChanged { name } => write!(f, "stage {name} changed"),
            Reason::ParentChanged { line, cause } => match cause {
                Some(cause) => write!(f, "parent step changed (line {line}: {cause})"),
                None if *line == 0 => write!(f, "parent step changed"),
                None => write!(f, "parent step changed (line {line})"),
            },
            Reason::InstructionChanged { old, new } => {
                write!(f, "instruction changed: {old:?} -> {new:?}")
            }
            Reason::VarChanged {
                name,
                arg,
                old,
                new,
            } => {
                let what = if *arg { "build arg" } else { "env" };
                write!(f, "{what} {name} changed: {} -> {}", opt(old), opt(new))
            }
            Reason::HeredocChanged { index } => write!(f, "heredoc {} changed", index + 1),
            Reason::FileChanged { path, change } => {
                let how = match change {
                    Change::Added => "added",
                    Change::Removed => "removed",
                    Change::Modified => "changed",
                };
                write!(f, "context file {path} {how}")
            }
            Reason::MountChanged { source } => write!(f, "mount source {source} changed"),
            Reason::SettingChanged { name } => write!(f, "{name} changed"),
        }
    }
}

/// The first input of `new` that differs from `old` (then the first of
/// `old` that went away), as a reason. `parent` says why the previous step
/// changed (its line and reason), for a difference in the parent key.
/// None when the inputs are the same.
pub fn first_difference(
    old: &[KeyInput],
    new: &[KeyInput],
    parent: Option<&(usize, Reason)>,
) -> Option<Reason> {
    let before: HashMap<_, _> = old.iter().map(|i| (i.identity(), i)).collect();
    for input in new {
        match before.get(&input.identity()) {
            Some(was) if *was == input => continue,
            was => return Some(changed(was.copied(), input, parent)),
        }
    }
    let now: HashMap<_, _> = new.iter().map(|i| (i.identity(), i)).collect();
    old.iter()
        .find(|i| !now.contains_key(&i.identity()))
        .map(removed)
}

/// `new` differs from `old` (None: `new` is new).
fn changed(old: Option<&KeyInput>, new: &KeyInput, parent: Option<&(usize, Reason)>) -> Reason {
    match new {
        KeyInput::Base {
            image,
            digest,
            platform,
        } => {
            let was = match old {
                Some(KeyInput::Base {
                    digest: d,
                    platform: p,
                    ..
                }) => format!("{d} ({p})"),
                _ => "none".into(),
            };
            Reason::BaseChanged {
                image: image.clone(),
                old: was,
                new: format!("{digest} ({platform})"),
            }
        }
        KeyInput::Stage { name, .. } => Reason::StageChanged { name: name.clone() },
        KeyInput::Parent { .. } => match parent {
            // The stage keeps the root cause: a chain of parents names it.
            Some((_, cause @ Reason::ParentChanged { .. })) => cause.clone(),
            Some((line, cause)) => Reason::ParentChanged {
                line: *line,
                cause: Some(Box::new(cause.clone())),
            },
            None => Reason::ParentChanged {
                line: 0,
                cause: None,
            },
        },
        KeyInput::Instruction { text } => Reason::InstructionChanged {
            old: match old {
                Some(KeyInput::Instruction { text }) => text.clone(),
                _ => String::new(),
            },
            new: text.clone(),
        },
        KeyInput::Var { name, value, arg } => Reason::VarChanged {
            name: name.clone(),
            arg: *arg,
            old: match old {
                Some(KeyInput::Var { value, .. }) => Some(value.clone()),
                _ => None,
            },
            new: Some(value.clone()),
        },
        KeyInput::Heredoc { index, .. } => Reason::HeredocChanged { index: *index },
        KeyInput::File { path, .. } => Reason::FileChanged {
            path: path.clone(),
            change: if old.is_some() {
                Change::Modified
            } else {
                Change::Added
            },
        },
        KeyInput::Mount { source, .. } => Reason::MountChanged {
            source: source.clone(),
        },
        KeyInput::Setting { name, .. } => Reason::SettingChanged { name: name.clone() },
    }
}

/// `old` is no longer an input.
fn removed(old: &KeyInput) -> Reason {
    match old {
        KeyInput::Var {
            name, value, arg, ..
        } => Reason::VarChanged {
            name: name.clone(),
            arg: *arg,
            old: Some(value.clone()),
            new: None,
        },
        KeyInput::File { path, .. } => Reason::FileChanged {
            path: path.clone(),
            change: Change::Removed,
        },
        other => changed(None, other, None),
    }
}

/// Why a step missed: `no_cache`, else never built, else the same key as
/// last time (so its layer went away), else the first differing input.
pub fn miss_reason(
    no_cache: bool,
    previous: Option<(&str, &[KeyInput])>,
    key: &str,
    inputs: &[KeyInput],
    parent: Option<&(usize, Reason)>,
) -> Reason {
    if no_cache {
        return Reason::NoCache;
    }
    match previous {
        None => Reason::NotBuiltBefore,
        Some((old_key, _)) if old_key == key => Reason::LayerMissing,
        Some((_, old)) => first_difference(old, inputs, parent).unwrap_or(Reason::LayerMissing),
    }
}

/// Why a step with `key` and `inputs` ran or would run, or, for a
/// config-only step, why its key changed (None when it did not), given the
/// last build of the same step (`old`: its key and inputs) and the cause
/// of the parent's change. The executor's `--explain` and the planner's
/// `--dry-run` both ask here.
pub(crate) fn step_reason(
    old: Option<&(String, Vec<KeyInput>)>,
    key: &str,
    inputs: &[KeyInput],
    outcome: crate::StepOutcome,
    no_cache: bool,
    parent: Option<&(usize, Reason)>,
) -> Option<Reason> {
    use crate::StepOutcome;
    let changed = old.is_none_or(|(old_key, _)| old_key != key);
    match outcome {
        StepOutcome::Cached => None,
        StepOutcome::Config => old
            .filter(|_| changed)
            .and_then(|(_, old_inputs)| first_difference(old_inputs, inputs, parent)),
        StepOutcome::Ran | StepOutcome::WouldRun => Some(miss_reason(
            no_cache,
            old.map(|(k, i)| (k.as_str(), i.as_slice())),
            key,
            inputs,
            parent,
        )),
    }
}

#[cfg(test)]
mod tests;
