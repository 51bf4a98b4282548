//! The fixture corpus: every `fixtures/dockerfiles/NAME.Dockerfile` must
//! parse to exactly `NAME.json` (set UPDATE_GOLDEN=1 to rewrite the
//! goldens, then review the diff), and every
//! `fixtures/dockerfiles/invalid/NAME.Dockerfile` must fail with the
//! `LINE:COL: message` written in `NAME.err`.

use std::fs;
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/dockerfiles")
}

fn dockerfiles(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    files.sort();
    files
}

#[test]
fn valid_files_match_their_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = dockerfiles(&corpus_dir());
    assert!(files.len() >= 45, "corpus too small: {}", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let golden = file.with_extension("json");
        let json = match cairn_dockerfile::parse(&text) {
            Ok(doc) => cairn_dockerfile::to_json(&doc) + "\n",
            Err(e) => {
                failures.push(format!("{}: unexpected error {e}", file.display()));
                continue;
            }
        };
        if update {
            fs::write(&golden, &json).unwrap();
            continue;
        }
        let want = fs::read_to_string(&golden).unwrap_or_default();
        if want != json {
            failures.push(format!(
                "{}: differs from golden\n--- got\n{json}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_files_fail_at_the_expected_place() {
    let files = dockerfiles(&corpus_dir().join("invalid"));
    assert!(
        files.len() >= 30,
        "invalid corpus too small: {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let want = fs::read_to_string(file.with_extension("err")).unwrap();
        let want = want.trim_end();
        match cairn_dockerfile::parse(&text) {
            Ok(_) => failures.push(format!("{}: parsed, expected {want}", file.display())),
            Err(e) => {
                let got = e.to_string();
                if !got.starts_with(want) {
                    failures.push(format!("{}:\n  got  {got}\n  want {want}", file.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every instruction of every valid fixture reads into a typed value (the
/// parser checked its flags; typing only reads them), and every stage's FROM.
#[test]
fn valid_files_type_completely() {
    let mut failures = Vec::new();
    for file in dockerfiles(&corpus_dir()) {
        let text = fs::read_to_string(&file).unwrap();
        let doc = cairn_dockerfile::parse(&text).unwrap();
        for stage in &doc.stages {
            assert_eq!(stage.typed_from().line, stage.line);
            for inst in &stage.instructions {
                match inst.typed() {
                    Ok(t) => assert_eq!((t.line, t.end_line), (inst.line, inst.end_line)),
                    Err(e) => failures.push(format!("{}:{e}", file.display())),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_contract_shape() {
    let doc = cairn_dockerfile::parse(
        "# syntax=docker/dockerfile:1\nARG V=1\nFROM --platform=linux/amd64 alpine:$V AS Base\nENV A=b\nONBUILD RUN echo x\n",
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&cairn_dockerfile::to_json(&doc)).unwrap();
    assert_eq!(
        v["directives"],
        serde_json::json!({"syntax": "docker/dockerfile:1"})
    );
    assert_eq!(v["global_args"][0]["name"], "V");
    assert_eq!(v["global_args"][0]["default"], "1");
    let stage = &v["stages"][0];
    assert_eq!(stage["name"], "base");
    assert_eq!(stage["base"], "alpine:$V");
    assert_eq!(stage["platform"], "linux/amd64");
    assert_eq!(stage["line"], 3);
    let env = &stage["instructions"][0];
    assert_eq!(env["name"], "env");
    assert_eq!(env["args"], serde_json::json!(["A=b"]));
    assert_eq!(
        env["pairs"],
        serde_json::json!([{"key": "A", "value": "b"}])
    );
    assert_eq!(env["form"], serde_json::Value::Null);
    let onbuild = &stage["instructions"][1];
    assert_eq!(onbuild["args"], serde_json::json!(["RUN echo x"]));
    assert_eq!(onbuild["onbuild"]["name"], "run");
    assert_eq!(onbuild["onbuild"]["form"], "shell");
}

#[test]
fn never_panics_on_truncations_of_the_corpus() {
    // Every prefix of every fixture (cut at char boundaries) must give
    // Ok or Err, never a panic, and so must typing what parses.
    for file in dockerfiles(&corpus_dir()) {
        let text = fs::read_to_string(&file).unwrap();
        for (i, _) in text.char_indices() {
            let _ = cairn_dockerfile::parse(&text[..i]);
            let Ok(doc) = cairn_dockerfile::parse_deferring_quotes(&text[..i]) else {
                continue;
            };
            for inst in doc.stages.iter().flat_map(|s| &s.instructions) {
                if let Err(e) = inst.typed() {
                    assert!(e.line >= 1 && e.column >= 1, "{e}");
                }
            }
        }
    }
}

#[test]
fn deeply_nested_onbuild_is_an_error_not_a_stack_overflow() {
    let text = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(8000));
    let err = cairn_dockerfile::parse(&text).unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.message.contains("ONBUILD ONBUILD"), "{err}");
}

#[test]
fn syntax_errors_come_before_instruction_errors() {
    // BuildKit reads the whole file into nodes first: the heredoc error on
    // line 3 wins over the unknown instruction on line 2.
    let err = cairn_dockerfile::parse("FROM a\nNOPE\nRUN <<EOF\n").unwrap_err();
    assert_eq!(
        (err.line, err.message.as_str()),
        (3, "unterminated heredoc")
    );
}

#[test]
fn quote_errors_wait_for_the_stage_that_expands_them() {
    // BuildKit fails on an unbalanced quote only when it expands that
    // instruction: a build of `good` must not fail on `broken`'s line.
    let text = "FROM busybox AS broken\nWORKDIR \"/unterminated\nCOPY 'a b /c\nFROM busybox AS good\nRUN true\n";
    let strict = cairn_dockerfile::parse(text).unwrap_err();
    assert_eq!((strict.line, strict.column), (2, 9), "{strict}");
    assert!(strict.message.contains("double-quote"), "{strict}");
    let doc = cairn_dockerfile::parse_deferring_quotes(text).unwrap();
    let broken = &doc.stages[0].instructions;
    let deferred = broken[0].deferred.as_ref().expect("WORKDIR error kept");
    assert_eq!(deferred, &strict);
    let copy = broken[1].deferred.as_ref().expect("COPY error kept");
    assert_eq!((copy.line, copy.column), (3, 6), "{copy}");
    assert!(copy.message.contains("single-quote"), "{copy}");
    assert!(doc.stages[1].instructions[0].deferred.is_none());
    // Not deferred: errors that are not quoting, and global ARGs.
    assert!(cairn_dockerfile::parse_deferring_quotes("FROM a\nCOPY one\n").is_err());
    assert!(cairn_dockerfile::parse_deferring_quotes("ARG A=\"x\nFROM a\n").is_err());
}
