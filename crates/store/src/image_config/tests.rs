//! Round trips of Docker-written configs, the bytes Cairn writes, and the
//! one diff id reading.

use super::*;
use serde_json::json;

/// A config as Docker 24 writes it, with every Docker-only field Cairn
/// reads and some it does not know.
const DOCKER: &str = r##"{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"app","AttachStdin":false,"Tty":false,"Env":["PATH=/usr/bin:/bin","NOEQUALS"],"Cmd":null,"Healthcheck":{"Test":["CMD","/bin/check","-q"],"Interval":30000000000,"Timeout":5000000000,"StartPeriod":1000000000,"StartInterval":2000000000,"Retries":3,"Future":"kept"},"ArgsEscaped":true,"Image":"sha256:abc","Volumes":null,"WorkingDir":"/w","Entrypoint":["/bin/app"],"OnBuild":["RUN echo hi","ENV X=1"],"Labels":{"a":"b"},"ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGINT","Shell":["/bin/bash","-c"]},"container_config":{"Cmd":["/bin/sh","-c","#(nop) "]},"created":"2024-01-02T03:04:05.123456789Z","docker_version":"24.0.7","history":[{"created":"2024-01-02T03:04:05Z","created_by":"/bin/sh -c #(nop) ADD file","comment":"c","author":"me","future":1},{"created_by":"x","empty_layer":true}],"os":"linux","variant":"v8","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000001"]},"moby.buildkit.buildinfo.v1":"e30=","weird":[1.5,-2,1e300,"\u00e9\n"]}"##;

/// What the JSON-value code wrote for a config it read and left alone.
fn value_bytes(text: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::from_slice::<Value>(text).unwrap()).unwrap()
}

#[test]
fn a_docker_config_keeps_every_field_and_reads_the_docker_ones() {
    let cfg = ImageConfig::from_slice(DOCKER.as_bytes()).unwrap();
    let run = cfg.run().unwrap();
    let hc = run.healthcheck.get().unwrap();
    assert_eq!(hc.test.or_default(), ["CMD", "/bin/check", "-q"]);
    assert_eq!(hc.interval, Field::Set(30_000_000_000));
    assert_eq!(hc.start_interval, Field::Set(2_000_000_000));
    assert_eq!(hc.retries, Field::Set(3));
    assert_eq!(hc.other["Future"], "kept");
    assert_eq!(run.on_build.or_default(), ["RUN echo hi", "ENV X=1"]);
    assert_eq!(run.shell.or_default(), ["/bin/bash", "-c"]);
    assert_eq!(run.args_escaped, Field::Set(true));
    assert_eq!(run.cmd, Field::Null);
    assert_eq!(run.volumes, Field::Null);
    assert!(run.labels.get().unwrap().contains_key("a"));
    assert_eq!(run.other["Image"], "sha256:abc");
    assert_eq!(cfg.other["docker_version"], "24.0.7");
    assert_eq!(cfg.platform(), "linux/amd64/v8");
    let history = cfg.history.get().unwrap();
    assert_eq!(history[0].other["future"], 1);
    assert_eq!(history[1].empty_layer, Field::Set(true));
    // Out again: the same document, in the bytes the JSON-value code wrote.
    assert_eq!(
        String::from_utf8(cfg.to_bytes().unwrap()).unwrap(),
        String::from_utf8(value_bytes(DOCKER.as_bytes())).unwrap()
    );
}

#[test]
fn null_and_absent_stay_apart() {
    let cfg = ImageConfig::from_slice(br#"{"config":{"Cmd":null},"history":null}"#).unwrap();
    assert_eq!(
        cfg.to_bytes().unwrap(),
        br#"{"config":{"Cmd":null},"history":null}"#
    );
    let cfg = ImageConfig::from_slice(br#"{"config":{}}"#).unwrap();
    assert_eq!(cfg.to_bytes().unwrap(), br#"{"config":{}}"#);
}

/// The configs the builds of `crates/builder/tests/config_golden.rs` wrote
/// before this type existed come back out byte for byte.
#[test]
fn golden_build_configs_round_trip_byte_for_byte() {
    for golden in [
        &include_bytes!("../../../builder/tests/data/config-golden/full.json")[..],
        include_bytes!("../../../builder/tests/data/config-golden/scratch.json"),
        include_bytes!("../../../builder/tests/data/config-golden/bare.json"),
    ] {
        let cfg = ImageConfig::from_slice(golden).unwrap();
        assert_eq!(
            String::from_utf8(cfg.to_bytes().unwrap()).unwrap(),
            String::from_utf8(golden.to_vec()).unwrap()
        );
    }
}

/// Edits give the bytes the JSON-value code gave for the same edits.
#[test]
fn edits_write_what_the_value_code_wrote() {
    let id: Digest = "sha256:00000000000000000000000000000000000000000000000000000000000000aa"
        .parse()
        .unwrap();
    let mut cfg = ImageConfig::from_slice(DOCKER.as_bytes()).unwrap();
    let run = cfg.run_mut();
    run.set_env("PATH", "/x");
    run.set_env("NEW", "1");
    run.labels
        .get_or_insert_default()
        .insert("k".into(), "v".into());
    run.volumes
        .get_or_insert_default()
        .insert("/data".into(), json!({}));
    run.on_build = Field::Null;
    cfg.push_diff_id(&id);
    cfg.push_history(History::new("1970-01-01T00:00:00Z", "RUN x", false));
    cfg.push_history(History::new("1970-01-01T00:00:00Z", "ENV a=b", true));
    cfg.created = Field::Set("1970-01-01T00:00:00Z".into());

    let mut v: Value = serde_json::from_str(DOCKER).unwrap();
    v["config"]["Env"] = json!(["PATH=/x", "NOEQUALS=", "NEW=1"]);
    v["config"]["Labels"]["k"] = json!("v");
    v["config"]["Volumes"] = json!({"/data": {}});
    v["config"]["OnBuild"] = Value::Null;
    v["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(id));
    let history = v["history"].as_array_mut().unwrap();
    history.push(json!({"created": "1970-01-01T00:00:00Z", "created_by": "RUN x"}));
    history.push(
        json!({"created": "1970-01-01T00:00:00Z", "created_by": "ENV a=b", "empty_layer": true}),
    );
    v["created"] = json!("1970-01-01T00:00:00Z");
    assert_eq!(
        String::from_utf8(cfg.to_bytes().unwrap()).unwrap(),
        serde_json::to_string(&v).unwrap()
    );
}

#[test]
fn a_missing_rootfs_or_config_is_made_as_docker_makes_it() {
    let id: Digest = "sha256:00000000000000000000000000000000000000000000000000000000000000bb"
        .parse()
        .unwrap();
    let mut cfg = ImageConfig::default();
    cfg.push_diff_id(&id);
    cfg.run_mut().cmd = Field::Null;
    assert_eq!(
        String::from_utf8(cfg.to_bytes().unwrap()).unwrap(),
        format!(r#"{{"config":{{"Cmd":null}},"rootfs":{{"diff_ids":["{id}"],"type":"layers"}}}}"#)
    );
}

#[test]
fn diff_ids_are_read_once_with_typed_errors() {
    let a = "sha256:0000000000000000000000000000000000000000000000000000000000000001".to_string();
    assert_eq!(
        layer_diff_ids(std::slice::from_ref(&a), 1).unwrap().len(),
        1
    );
    assert_eq!(
        layer_diff_ids(std::slice::from_ref(&a), 2),
        Err(DiffIdError::Count {
            layers: 2,
            diff_ids: 1
        })
    );
    assert_eq!(
        layer_diff_ids(&[a, "md5:x".into()], 2),
        Err(DiffIdError::Malformed {
            index: 1,
            value: "md5:x".into()
        })
    );
    let cfg = ImageConfig::from_slice(br#"{"os":"linux"}"#).unwrap();
    assert_eq!(cfg.layer_diff_ids(0).unwrap(), Vec::<Digest>::new());
}

#[test]
fn a_wrong_type_in_a_known_field_is_an_error() {
    let err = ImageConfig::from_slice(br#"{"config":{"Env":"PATH=/bin"}}"#).unwrap_err();
    assert!(err.to_string().contains("invalid type"), "{err}");
}
