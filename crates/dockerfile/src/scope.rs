//! ARG and ENV scoping: which variables an instruction sees, with
//! BuildKit's rules.
//!
//! - ARGs before the first FROM (global ARGs) are visible only to FROM
//!   lines; inside a stage a global is visible only after a name-only
//!   `ARG NAME` re-declares it (the stage then gets the global's value).
//! - A `--build-arg` overrides the default of an ARG that is declared;
//!   an undeclared build arg is not visible.
//! - ENV set earlier in the stage wins over an ARG of the same name.
//! - The platform ARGs (`TARGETPLATFORM`, `BUILDOS`, ...) are set in the
//!   global scope automatically but must be declared inside a stage.
//! - The proxy ARGs (`HTTP_PROXY`, ...) need no declaration: given as
//!   build args they reach RUN's environment, but not `$` expansion.

use crate::ast::{Dockerfile, Instruction};
use crate::expand::{expand_word, ExpandError};
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

/// Build args that are predefined and need no ARG to reach RUN.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Platform ARGs BuildKit sets in the global scope.
pub const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Instructions whose arguments BuildKit expands itself (`$VAR` in them is
/// replaced before the instruction runs). FROM is expanded with the global
/// scope only; for RUN only the `--mount` flag values are expanded.
pub const EXPANDING_INSTRUCTIONS: [&str; 11] = [
    "add",
    "arg",
    "copy",
    "env",
    "expose",
    "from",
    "label",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// The PATH a stage gets when its base image sets none (Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Does BuildKit expand variables in this instruction's arguments?
/// False for RUN, CMD, ENTRYPOINT, HEALTHCHECK and SHELL (the shell in the
/// container does it), and for MAINTAINER and ONBUILD (kept as written;
/// an ONBUILD trigger is expanded when it runs in a child build).
pub fn expands_variables(instruction: &str) -> bool {
    EXPANDING_INSTRUCTIONS.contains(&instruction.to_ascii_lowercase().as_str())
}

/// A variable could not be computed.
#[derive(Debug, Error)]
pub enum ScopeError {
    #[error("no stage {0}")]
    NoStage(usize),
    #[error("line {line}: {source}")]
    Expand {
        line: usize,
        #[source]
        source: ExpandError,
    },
}

/// What an instruction sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Variables for `$` expansion in the instruction's arguments.
    pub vars: BTreeMap<String, String>,
    /// Environment a RUN at this point gets besides the image's ENV:
    /// declared ARGs with a value, plus proxy build args.
    pub run_args: BTreeMap<String, String>,
}

/// Inputs from outside the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct ScopeInput {
    /// `--build-arg NAME=VALUE`.
    pub build_args: HashMap<String, String>,
    /// Values of the platform ARGs (`TARGETPLATFORM` -> `linux/amd64`, ...).
    pub platform: BTreeMap<String, String>,
    /// ENV of the stage's base image, in order.
    pub base_env: Vec<(String, String)>,
}

/// The scope FROM lines are expanded in: platform ARGs and global ARGs
/// (build args override their defaults; defaults may use earlier globals).
pub fn global_scope(
    doc: &Dockerfile,
    input: &ScopeInput,
) -> Result<BTreeMap<String, String>, ScopeError> {
    let mut vars: BTreeMap<String, String> = input
        .platform
        .iter()
        .filter(|(k, _)| PLATFORM_ARGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for arg in &doc.global_args {
        let value = match (input.build_args.get(&arg.name), &arg.default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(default)) => {
                Some(expand_word(default, &vars, doc.escape).map_err(|source| {
                    ScopeError::Expand {
                        line: arg.line,
                        source,
                    }
                })?)
            }
            (None, None) => None,
        };
        match value {
            Some(v) => {
                vars.insert(arg.name.clone(), v);
            }
            None => {
                vars.remove(&arg.name);
            }
        }
    }
    Ok(vars)
}

/// The scope of instruction `index` of stage `stage` (the effect of the
/// instructions before it; `index` = number of instructions for the end).
pub fn scope_at(
    doc: &Dockerfile,
    input: &ScopeInput,
    stage: usize,
    index: usize,
) -> Result<Scope, ScopeError> {
    let globals = global_scope(doc, input)?;
    let st = doc.stages.get(stage).ok_or(ScopeError::NoStage(stage))?;
    let mut env: BTreeMap<String, String> = input.base_env.iter().cloned().collect();
    // BuildKit gives a stage whose base has no PATH the default one.
    env.entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    for inst in st.instructions.iter().take(index) {
        apply(inst, doc.escape, input, &globals, &mut env, &mut args)?;
    }
    let mut vars = args.clone();
    // ENV always wins over an ARG of the same name.
    vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut run_args = args;
    for name in PROXY_ARGS {
        if let Some(v) = input.build_args.get(name) {
            run_args
                .entry(name.to_string())
                .or_insert_with(|| v.clone());
        }
    }
    Ok(Scope { vars, run_args })
}

fn apply(
    inst: &Instruction,
    escape: char,
    input: &ScopeInput,
    globals: &BTreeMap<String, String>,
    env: &mut BTreeMap<String, String>,
    args: &mut BTreeMap<String, String>,
) -> Result<(), ScopeError> {
    let err = |source| ScopeError::Expand {
        line: inst.line,
        source,
    };
    let current = |env: &BTreeMap<String, String>, args: &BTreeMap<String, String>| {
        let mut v = args.clone();
        v.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        v
    };
    // Every pair of one instruction is expanded against the variables as
    // they were before it: `ENV a=1 b=$a` sees the old `a`.
    let before = current(env, args);
    match inst.name.as_str() {
        "arg" => {
            for pair in inst.pairs.iter().flatten() {
                let value = if let Some(v) = input.build_args.get(&pair.key) {
                    Some(v.clone())
                } else if let Some(default) = &pair.value {
                    Some(expand_word(default, &before, escape).map_err(err)?)
                } else {
                    globals.get(&pair.key).cloned()
                };
                match value {
                    Some(v) => {
                        args.insert(pair.key.clone(), v);
                    }
                    None => {
                        args.remove(&pair.key);
                    }
                }
            }
        }
        "env" => {
            for pair in inst.pairs.iter().flatten() {
                let key = expand_word(&pair.key, &before, escape).map_err(err)?;
                let value = expand_word(pair.value.as_deref().unwrap_or(""), &before, escape)
                    .map_err(err)?;
                env.insert(key, value);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn input(build_args: &[(&str, &str)]) -> ScopeInput {
        ScopeInput {
            build_args: build_args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            platform: [("TARGETARCH", "amd64"), ("BUILDOS", "linux")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            base_env: vec![("PATH".into(), "/bin".into())],
        }
    }

    const FILE: &str = "ARG VERSION=1.0\nARG BASE=alpine:${VERSION}\nFROM $BASE\nRUN echo $VERSION\nARG VERSION\nARG TARGETARCH\nARG EXTRA=x-$VERSION\nENV VERSION=env-$VERSION PATH=/usr/bin:$PATH\nRUN true\n";

    #[test]
    fn globals_are_for_from_lines() {
        let doc = parse(FILE).unwrap();
        let g = global_scope(&doc, &input(&[])).unwrap();
        assert_eq!(g["BASE"], "alpine:1.0");
        assert_eq!(g["TARGETARCH"], "amd64");
        let s = scope_at(&doc, &input(&[]), 0, 1).unwrap();
        assert!(
            !s.vars.contains_key("VERSION"),
            "global not visible before re-declaration"
        );
        assert!(!s.vars.contains_key("TARGETARCH"));
        assert_eq!(s.vars["PATH"], "/bin");
    }

    #[test]
    fn redeclared_global_takes_its_value_and_env_wins() {
        let doc = parse(FILE).unwrap();
        let s = scope_at(&doc, &input(&[]), 0, 4).unwrap();
        assert_eq!(s.vars["VERSION"], "1.0");
        assert_eq!(s.vars["TARGETARCH"], "amd64");
        assert_eq!(s.vars["EXTRA"], "x-1.0");
        let s = scope_at(&doc, &input(&[]), 0, 5).unwrap();
        assert_eq!(s.vars["VERSION"], "env-1.0");
        assert_eq!(s.vars["PATH"], "/usr/bin:/bin");
        assert_eq!(s.run_args["VERSION"], "1.0");
    }

    #[test]
    fn build_args_override_declared_args_only() {
        let doc = parse(FILE).unwrap();
        let inp = input(&[
            ("VERSION", "2.0"),
            ("UNDECLARED", "u"),
            ("HTTP_PROXY", "http://p"),
        ]);
        assert_eq!(global_scope(&doc, &inp).unwrap()["BASE"], "alpine:2.0");
        let s = scope_at(&doc, &inp, 0, 4).unwrap();
        assert_eq!(s.vars["VERSION"], "2.0");
        assert!(!s.vars.contains_key("UNDECLARED"));
        assert!(
            !s.vars.contains_key("HTTP_PROXY"),
            "proxy args are not expanded"
        );
        assert_eq!(s.run_args["HTTP_PROXY"], "http://p");
    }

    #[test]
    fn pairs_of_one_instruction_see_the_old_values() {
        let doc = parse("FROM a\nENV a=1\nENV a=2 b=$a\nARG c=3 d=x$c\n").unwrap();
        let s = scope_at(&doc, &ScopeInput::default(), 0, 3).unwrap();
        assert_eq!(s.vars["a"], "2");
        assert_eq!(s.vars["b"], "1");
        assert_eq!(s.vars["d"], "x", "c was not set before the ARG");
        assert_eq!(s.vars["PATH"], DEFAULT_PATH);
    }

    #[test]
    fn expansion_table() {
        for name in ["env", "COPY", "workdir", "from", "arg"] {
            assert!(expands_variables(name), "{name}");
        }
        for name in [
            "run",
            "cmd",
            "entrypoint",
            "healthcheck",
            "shell",
            "onbuild",
            "maintainer",
        ] {
            assert!(!expands_variables(name), "{name}");
        }
    }
}
