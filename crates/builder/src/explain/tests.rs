//! Every reason kind, from inputs alone (no store, no root).

use super::*;
use crate::keys::KeyBuilder;
use std::collections::BTreeMap;

fn var(name: &str, value: &str) -> KeyInput {
    KeyInput::Var {
        name: name.into(),
        value: value.into(),
        arg: true,
    }
}

fn file(path: &str, digest: &str) -> KeyInput {
    KeyInput::File {
        path: path.into(),
        digest: digest.into(),
    }
}

fn parent(key: &str) -> KeyInput {
    KeyInput::Parent { key: key.into() }
}

#[test]
fn same_inputs_have_no_difference() {
    let a = vec![parent("p"), var("V", "1"), file("a", "x")];
    assert_eq!(first_difference(&a, &a, None), None);
}

#[test]
fn a_changed_file_is_named() {
    let old = vec![parent("p"), file("a", "x"), file("b", "y")];
    let new = vec![parent("p"), file("a", "x"), file("b", "z")];
    let r = first_difference(&old, &new, None).unwrap();
    assert_eq!(
        r,
        Reason::FileChanged {
            path: "b".into(),
            change: Change::Modified
        }
    );
    assert_eq!(r.to_string(), "context file b changed");
    let added = vec![parent("p"), file("a", "x"), file("b", "y"), file("c", "w")];
    assert!(matches!(
        first_difference(&old, &added, None),
        Some(Reason::FileChanged { change: Change::Added, path }) if path == "c"
    ));
    let removed = vec![parent("p"), file("a", "x")];
    assert!(matches!(
        first_difference(&old, &removed, None),
        Some(Reason::FileChanged { change: Change::Removed, path }) if path == "b"
    ));
}

#[test]
fn a_build_arg_is_named_with_old_and_new_value() {
    let old = vec![parent("p"), var("VERSION", "1")];
    let new = vec![parent("p"), var("VERSION", "2")];
    let r = first_difference(&old, &new, None).unwrap();
    assert_eq!(r.to_string(), "build arg VERSION changed: \"1\" -> \"2\"");
    let gone = first_difference(&old, &[parent("p")], None).unwrap();
    assert_eq!(
        gone.to_string(),
        "build arg VERSION changed: \"1\" -> unset"
    );
}

#[test]
fn a_changed_parent_carries_the_root_cause() {
    let old = vec![parent("p1"), var("V", "1")];
    let new = vec![parent("p2"), var("V", "1")];
    let root = (
        3,
        Reason::VarChanged {
            name: "V".into(),
            arg: true,
            old: Some("1".into()),
            new: Some("2".into()),
        },
    );
    let r = first_difference(&old, &new, Some(&root)).unwrap();
    assert_eq!(
        r.to_string(),
        "parent step changed (line 3: build arg V changed: \"1\" -> \"2\")"
    );
    // The parent comes first: an own input that also changed is not named.
    let both = vec![parent("p2"), var("V", "9")];
    assert!(matches!(
        first_difference(&old, &both, Some(&root)),
        Some(Reason::ParentChanged { line: 3, .. })
    ));
}

#[test]
fn base_instruction_mount_heredoc_and_stage_reasons() {
    let base = |d: &str| KeyInput::Base {
        image: "alpine".into(),
        digest: d.into(),
        platform: "linux/amd64".into(),
    };
    let r = first_difference(&[base("sha256:a")], &[base("sha256:b")], None).unwrap();
    assert!(r.to_string().contains("sha256:a") && r.to_string().contains("sha256:b"));
    let inst = |t: &str| KeyInput::Instruction { text: t.into() };
    assert!(matches!(
        first_difference(&[inst("RUN a")], &[inst("RUN b")], None),
        Some(Reason::InstructionChanged { .. })
    ));
    let mount = |d: &str| KeyInput::Mount {
        source: "context:src".into(),
        digest: d.into(),
    };
    assert_eq!(
        first_difference(&[mount("1")], &[mount("2")], None)
            .unwrap()
            .to_string(),
        "mount source context:src changed"
    );
    let heredoc = |d: &str| KeyInput::Heredoc {
        index: 0,
        digest: d.into(),
    };
    assert_eq!(
        first_difference(&[heredoc("1")], &[heredoc("2")], None),
        Some(Reason::HeredocChanged { index: 0 })
    );
    let stage = |k: &str| KeyInput::Stage {
        name: "builder".into(),
        key: k.into(),
    };
    assert_eq!(
        first_difference(&[stage("1")], &[stage("2")], None)
            .unwrap()
            .to_string(),
        "stage builder changed"
    );
}

#[test]
fn miss_reasons_without_a_difference() {
    let inputs = vec![parent("p")];
    assert_eq!(miss_reason(true, None, "k", &inputs, None), Reason::NoCache);
    assert_eq!(
        miss_reason(false, None, "k", &inputs, None),
        Reason::NotBuiltBefore
    );
    assert_eq!(
        miss_reason(false, Some(("k", &inputs)), "k", &inputs, None),
        Reason::LayerMissing
    );
}

#[test]
fn recorded_inputs_explain_a_real_key_change() {
    let args = BTreeMap::from([("V".to_string(), "1".to_string())]);
    let (k1, old) = KeyBuilder::after("p")
        .instruction("RUN echo $V")
        .vars(&args, &args)
        .finish_with_inputs();
    let args2 = BTreeMap::from([("V".to_string(), "2".to_string())]);
    let (k2, new) = KeyBuilder::after("p")
        .instruction("RUN echo $V")
        .vars(&args2, &args2)
        .finish_with_inputs();
    assert_ne!(k1, k2);
    let r = miss_reason(false, Some((&k1, &old)), &k2, &new, None);
    assert!(matches!(r, Reason::VarChanged { name, .. } if name == "V"));
}
