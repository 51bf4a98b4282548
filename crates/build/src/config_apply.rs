//! Config-only instructions (ENV, LABEL, CMD, ENTRYPOINT, HEALTHCHECK, ...) applied to the
//! image config, and the history text of a step.

use crate::config::ImageConfig;
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::{Form, Instruction};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// History text as BuildKit writes it: `RUN /bin/sh -c ...` for shell forms.
pub(crate) fn history_text(inst: &Instruction) -> String {
    let name = inst.name.to_uppercase();
    let rest = inst.original.trim_start();
    let rest = rest.get(inst.name.len()..).unwrap_or("").trim_start();
    format!("{name} {rest}").trim_end().to_string()
}

/// What a stage has done so far that changes later instructions.
#[derive(Debug, Default)]
pub(crate) struct StageProgress {
    /// CMD was set in this stage: a later ENTRYPOINT keeps it.
    pub(crate) cmd_set: bool,
}

/// Apply a config-only instruction.
pub(crate) fn apply_config(
    inst: &Instruction,
    escape: char,
    vars: &BTreeMap<String, String>,
    cfg: &mut ImageConfig,
    stage: &mut StageProgress,
) -> Result<(), String> {
    let expand = |w: &str| expand_word(w, vars, escape).map_err(|e| e.to_string());
    let exec_or_shell = |cfg: &ImageConfig| -> Value {
        match inst.form {
            Some(Form::Exec) => json!(inst.args),
            _ => {
                let mut shell = cfg.strings("Shell");
                if shell.is_empty() {
                    shell = vec!["/bin/sh".into(), "-c".into()];
                }
                shell.push(inst.args.join(" "));
                json!(shell)
            }
        }
    };
    match inst.name.as_str() {
        "arg" => {}
        "env" => {
            let pairs: Vec<(String, String)> = inst
                .pairs
                .iter()
                .flatten()
                .map(|p| Ok((expand(&p.key)?, expand(p.value.as_deref().unwrap_or(""))?)))
                .collect::<Result<_, String>>()?;
            for (k, v) in pairs {
                cfg.set_env(&k, &v);
            }
        }
        "label" => {
            for p in inst.pairs.iter().flatten() {
                cfg.insert_into(
                    "Labels",
                    &expand(&p.key)?,
                    json!(expand(p.value.as_deref().unwrap_or(""))?),
                );
            }
        }
        "maintainer" => {
            let root = &mut cfg.0;
            root["author"] = json!(inst.args.join(" "));
        }
        "workdir" => {
            let dir = expand(inst.args.first().map(String::as_str).unwrap_or(""))?;
            let joined = if dir.starts_with('/') {
                dir
            } else {
                format!("{}/{dir}", cfg.string("WorkingDir").unwrap_or_default())
            };
            cfg.set(
                "WorkingDir",
                json!(format!("/{}", crate::context::clean(&joined))),
            );
        }
        "user" => cfg.set(
            "User",
            json!(expand(inst.args.first().map(String::as_str).unwrap_or(""))?),
        ),
        "cmd" => {
            let v = exec_or_shell(cfg);
            cfg.set("Cmd", v);
            stage.cmd_set = true;
        }
        "entrypoint" => {
            let v = exec_or_shell(cfg);
            cfg.set("Entrypoint", v);
            // ENTRYPOINT resets a CMD inherited from the base (or an earlier
            // stage), not one set in this stage (BuildKit's d.cmdSet).
            if !stage.cmd_set {
                cfg.set("Cmd", Value::Null);
            }
        }
        "expose" => {
            for p in &inst.args {
                let p = expand(p)?;
                let p = if p.contains('/') {
                    p
                } else {
                    format!("{p}/tcp")
                };
                cfg.insert_into("ExposedPorts", &p, json!({}));
            }
        }
        "volume" => {
            for v in &inst.args {
                cfg.insert_into("Volumes", &expand(v)?, json!({}));
            }
        }
        "stopsignal" => cfg.set(
            "StopSignal",
            json!(expand(inst.args.first().map(String::as_str).unwrap_or(""))?),
        ),
        "shell" => cfg.set("Shell", json!(inst.args)),
        "onbuild" => {
            let mut triggers = cfg.strings("OnBuild");
            triggers.push(inst.args.join(" "));
            cfg.set("OnBuild", json!(triggers));
        }
        "healthcheck" => {
            let test: Vec<String> = match inst.args.first().map(String::as_str) {
                Some(a) if a.eq_ignore_ascii_case("NONE") => vec!["NONE".into()],
                _ => {
                    let rest = &inst.args[1.min(inst.args.len())..];
                    match inst.form {
                        Some(Form::Exec) => [vec!["CMD".to_string()], rest.to_vec()].concat(),
                        _ => vec!["CMD-SHELL".into(), rest.join(" ")],
                    }
                }
            };
            let mut hc = json!({ "Test": test });
            for (flag, field) in [
                ("interval", "Interval"),
                ("timeout", "Timeout"),
                ("start-period", "StartPeriod"),
                ("start-interval", "StartInterval"),
            ] {
                if let Some(v) = inst.flags.get(flag).and_then(|v| v.last()) {
                    let d =
                        humantime::parse_duration(v).map_err(|e| format!("--{flag}={v}: {e}"))?;
                    hc[field] = json!(d.as_nanos() as u64);
                }
            }
            if let Some(v) = inst.flags.get("retries").and_then(|v| v.last()) {
                hc["Retries"] = json!(v
                    .parse::<u64>()
                    .map_err(|_| format!("--retries={v}: not a number"))?);
            }
            cfg.set("Healthcheck", hc);
        }
        other => {
            return Err(format!(
                "instruction {} is not supported here",
                other.to_uppercase()
            ))
        }
    }
    Ok(())
}
