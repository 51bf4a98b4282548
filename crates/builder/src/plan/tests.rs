//! The planning half of the driver without a store or root: which stages a
//! target needs (pruning, `--target`, FROM / COPY --from / --mount edges),
//! ARG scoping into the cache key, and unused build args.

use super::*;
use crate::keys::{KeyBuilder, KeyInput};
use cairn_dockerfile::parse;
use cairn_dockerfile::scope::{global_scope, scope_at, ScopeInput};
use cairn_dockerfile::Dockerfile;
use std::collections::{BTreeMap, HashMap};

fn doc(text: &str) -> Dockerfile {
    parse(text).unwrap()
}

fn order(text: &str, target: Option<&str>) -> Vec<usize> {
    let d = doc(text);
    let t = target.map_or(d.stages.len() - 1, |t| stage_index(&d, t).unwrap());
    needed_stages(&d, t, &BTreeMap::new()).unwrap().0
}

const THREE: &str = "FROM scratch AS a\nCOPY x /x\n\
                     FROM scratch AS unused\nCOPY y /y\n\
                     FROM scratch AS final\nCOPY --from=a /x /x\n";

#[test]
fn stages_the_target_does_not_need_are_pruned() {
    assert_eq!(order(THREE, None), vec![0, 2]);
}

#[test]
fn target_picks_a_stage_by_name_any_case_or_index() {
    assert_eq!(order(THREE, Some("UNUSED")), vec![1]);
    assert_eq!(order(THREE, Some("a")), vec![0]);
    assert_eq!(order(THREE, Some("2")), vec![0, 2]);
    assert_eq!(stage_index(&doc(THREE), "nope"), None);
    assert_eq!(stage_index(&doc(THREE), "7"), None);
}

#[test]
fn from_and_mount_edges_count() {
    let text = "FROM scratch AS base\nFROM base AS mid\n\
                FROM scratch AS side\n\
                FROM scratch\nRUN --mount=from=side,target=/s true\nCOPY --from=mid / /\n";
    assert_eq!(order(text, None), vec![2, 0, 1, 3]);
    // FROM x AS x names the image x, not itself.
    assert_eq!(order("FROM busybox AS busybox\n", None), vec![0]);
}

#[test]
fn a_stage_base_from_a_global_arg_is_an_edge() {
    let text = "ARG B=one\nFROM scratch AS one\nFROM scratch AS two\nFROM ${B}\n";
    let d = doc(text);
    let globals = global_scope(&d, &ScopeInput::default()).unwrap();
    assert_eq!(needed_stages(&d, 2, &globals).unwrap().0, vec![0, 2]);
}

#[test]
fn unused_build_args_are_named_and_proxies_never() {
    let d = doc("ARG G\nFROM scratch\nARG S=1\nFROM scratch AS other\nARG O\n");
    let args: HashMap<String, String> = [
        ("G", ""),
        ("S", ""),
        ("O", ""),
        ("X", ""),
        ("http_proxy", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // Stage 1 (other) is not built: its ARG O consumes nothing.
    assert_eq!(unused_build_args(&d, &[0], &args), vec!["O", "X"]);
}

/// The key of instruction `i` of stage 0 with these build args, from the
/// same inputs `dispatch` hashes, and its named inputs.
fn key_of(text: &str, i: usize, build_args: &[(&str, &str)]) -> (String, Vec<KeyInput>) {
    let d = doc(text);
    let input = ScopeInput {
        build_args: build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ScopeInput::default()
    };
    let scope = scope_at(&d, &input, 0, i).unwrap();
    let inst = &d.stages[0].instructions[i];
    KeyBuilder::after("base")
        .instruction(&inst.original)
        .vars(&scope.vars, &scope.run_args)
        .finish_with_inputs()
}

#[test]
fn arg_scoping_decides_the_cache_key() {
    let text = "FROM scratch\nRUN before\nARG V\nRUN after\n";
    // Before its ARG line, a build arg is not visible: the key ignores it.
    assert_eq!(key_of(text, 0, &[]).0, key_of(text, 0, &[("V", "1")]).0);
    // After it, the value is part of the key and named as a build arg.
    let (k1, _) = key_of(text, 2, &[("V", "1")]);
    let (k2, inputs) = key_of(text, 2, &[("V", "2")]);
    assert_ne!(k1, k2);
    assert!(inputs.iter().any(
        |i| matches!(i, KeyInput::Var { name, arg: true, value } if name == "V" && value == "2")
    ));
    // The same inputs give the same key.
    assert_eq!(key_of(text, 2, &[("V", "1")]).0, k1);
}
