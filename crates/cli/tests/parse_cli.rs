//! `cairn parse` through the real binary: the JSON contract and exit codes.

use std::io::Write;
use std::process::{Command, Stdio};

fn cairn(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn json_contract() {
    let df = "# syntax=docker/dockerfile:1\nARG V=1\nFROM busybox AS b\nRUN --network=none echo $V\nCOPY <<EOF /x\nhi\nEOF\n";
    let out = cairn(&["parse", "-f", "-", "--format", "json"], Some(df));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["directives"]["syntax"], "docker/dockerfile:1");
    assert_eq!(v["global_args"][0]["name"], "V");
    let stage = &v["stages"][0];
    assert_eq!(
        (
            stage["name"].as_str(),
            stage["base"].as_str(),
            stage["line"].as_u64()
        ),
        (Some("b"), Some("busybox"), Some(3))
    );
    let run = &stage["instructions"][0];
    assert_eq!(run["name"], "run");
    assert_eq!(run["flags"]["network"][0], "none");
    assert_eq!(run["form"], "shell");
    assert_eq!(run["args"][0], "echo $V");
    let copy = &stage["instructions"][1];
    assert_eq!(
        (copy["line"].as_u64(), copy["end_line"].as_u64()),
        (Some(5), Some(7))
    );
    assert_eq!(copy["heredocs"][0]["body"], "hi\n");
    assert_eq!(copy["heredocs"][0]["expand"], true);
}

#[test]
fn bad_input_exits_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Dockerfile");
    std::fs::write(&path, "FROM busybox\nFROBNICATE x\n").unwrap();
    let out = cairn(&["parse", "-f", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
    let out = cairn(&["parse", "-f", "/no/such/Dockerfile"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/Dockerfile"));
    let out = cairn(&["parse", "--bogus-flag"], None);
    assert_eq!(out.status.code(), Some(2));
}
