//! Config-only instructions (ENV, LABEL, CMD, ENTRYPOINT, HEALTHCHECK, ...) applied to the
//! image config, and the history text of a step.

use crate::config::{Field, Healthcheck, ImageConfig, Runtime};
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::{Form, Instruction};
use serde_json::json;
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
    let exec_or_shell = |cfg: &ImageConfig| -> Field<Vec<String>> {
        match inst.form {
            Some(Form::Exec) => Field::Set(inst.args.clone()),
            _ => {
                let mut shell = cfg.shell();
                if shell.is_empty() {
                    shell = vec!["/bin/sh".into(), "-c".into()];
                }
                shell.push(inst.args.join(" "));
                Field::Set(shell)
            }
        }
    };
    let first = || expand(inst.args.first().map(String::as_str).unwrap_or(""));
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
                cfg.run_mut().set_env(&k, &v);
            }
        }
        "label" => {
            for p in inst.pairs.iter().flatten() {
                let (k, v) = (expand(&p.key)?, expand(p.value.as_deref().unwrap_or(""))?);
                cfg.run_mut().labels.get_or_insert_default().insert(k, v);
            }
        }
        "maintainer" => {
            cfg.author = Field::Set(inst.args.join(" "));
        }
        "workdir" => {
            let dir = first()?;
            let joined = if dir.starts_with('/') {
                dir
            } else {
                format!("{}/{dir}", cfg.working_dir())
            };
            cfg.run_mut().working_dir = Field::Set(format!("/{}", crate::context::clean(&joined)));
        }
        "user" => cfg.run_mut().user = Field::Set(first()?),
        "cmd" => {
            cfg.run_mut().cmd = exec_or_shell(cfg);
            stage.cmd_set = true;
        }
        "entrypoint" => {
            cfg.run_mut().entrypoint = exec_or_shell(cfg);
            // ENTRYPOINT resets a CMD inherited from the base (or an earlier
            // stage), not one set in this stage (BuildKit's d.cmdSet).
            if !stage.cmd_set {
                cfg.run_mut().cmd = Field::Null;
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
                let ports = cfg.run_mut().exposed_ports.get_or_insert_default();
                ports.insert(p, json!({}));
            }
        }
        "volume" => {
            for v in &inst.args {
                let v = expand(v)?;
                cfg.run_mut()
                    .volumes
                    .get_or_insert_default()
                    .insert(v, json!({}));
            }
        }
        "stopsignal" => cfg.run_mut().stop_signal = Field::Set(first()?),
        "shell" => cfg.run_mut().shell = Field::Set(inst.args.clone()),
        "onbuild" => {
            let mut triggers = cfg.on_build();
            triggers.push(inst.args.join(" "));
            cfg.run_mut().on_build = Field::Set(triggers);
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
            let duration = |flag: &str| -> Result<Field<i64>, String> {
                let Some(v) = inst.flags.get(flag).and_then(|v| v.last()) else {
                    return Ok(Field::Absent);
                };
                let d = humantime::parse_duration(v).map_err(|e| format!("--{flag}={v}: {e}"))?;
                i64::try_from(d.as_nanos())
                    .map(Field::Set)
                    .map_err(|_| format!("--{flag}={v}: too long"))
            };
            let retries = match inst.flags.get("retries").and_then(|v| v.last()) {
                Some(v) => Field::Set(
                    v.parse::<u64>()
                        .ok()
                        .and_then(|n| i64::try_from(n).ok())
                        .ok_or_else(|| format!("--retries={v}: not a number"))?,
                ),
                None => Field::Absent,
            };
            cfg.run_mut().healthcheck = Field::Set(Healthcheck {
                test: Field::Set(test),
                interval: duration("interval")?,
                timeout: duration("timeout")?,
                start_period: duration("start-period")?,
                start_interval: duration("start-interval")?,
                retries,
                ..Healthcheck::default()
            });
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
