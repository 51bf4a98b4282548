//! Config-only instructions (ENV, LABEL, CMD, ENTRYPOINT, HEALTHCHECK, ...) applied to the
//! image config, and the history text of a step.

use crate::config::ImageConfig;
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::typed::{CommandLine, Healthcheck};
use cairn_dockerfile::{Command, Instruction};
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

/// A CMD/ENTRYPOINT value: exec form as is, shell form through the SHELL.
fn command_json(line: &CommandLine, cfg: &ImageConfig) -> Value {
    match line {
        CommandLine::Exec(args) => json!(args),
        CommandLine::Shell(text) => {
            let mut shell = cfg.strings("Shell");
            if shell.is_empty() {
                shell = vec!["/bin/sh".into(), "-c".into()];
            }
            shell.push(text.clone());
            json!(shell)
        }
    }
}

/// The config's `Healthcheck` (durations in nanoseconds, as Docker keeps them).
fn healthcheck_json(h: &Healthcheck) -> Value {
    let test: Vec<String> = match &h.test {
        None => vec!["NONE".into()],
        Some(CommandLine::Exec(args)) => [vec!["CMD".to_string()], args.clone()].concat(),
        Some(CommandLine::Shell(text)) => vec!["CMD-SHELL".into(), text.clone()],
    };
    let mut hc = json!({ "Test": test });
    for (value, field) in [
        (h.interval, "Interval"),
        (h.timeout, "Timeout"),
        (h.start_period, "StartPeriod"),
        (h.start_interval, "StartInterval"),
    ] {
        if let Some(d) = value {
            hc[field] = json!(d.as_nanos() as u64);
        }
    }
    if let Some(r) = h.retries {
        hc["Retries"] = json!(r);
    }
    hc
}

/// Apply a config-only instruction.
pub(crate) fn apply_config(
    command: &Command,
    escape: char,
    vars: &BTreeMap<String, String>,
    cfg: &mut ImageConfig,
    stage: &mut StageProgress,
) -> Result<(), String> {
    let expand = |w: &str| expand_word(w, vars, escape).map_err(|e| e.to_string());
    match command {
        Command::Arg(_) => {}
        Command::Env(pairs) => {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|p| Ok((expand(&p.key)?, expand(&p.value)?)))
                .collect::<Result<_, String>>()?;
            for (k, v) in pairs {
                cfg.set_env(&k, &v);
            }
        }
        Command::Label(pairs) => {
            for p in pairs {
                cfg.insert_into("Labels", &expand(&p.key)?, json!(expand(&p.value)?));
            }
        }
        Command::Maintainer(text) => {
            let root = &mut cfg.0;
            root["author"] = json!(text);
        }
        Command::Workdir(dir) => {
            let dir = expand(dir)?;
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
        Command::User(user) => cfg.set("User", json!(expand(user)?)),
        Command::Cmd(line) => {
            let v = command_json(line, cfg);
            cfg.set("Cmd", v);
            stage.cmd_set = true;
        }
        Command::Entrypoint(line) => {
            let v = command_json(line, cfg);
            cfg.set("Entrypoint", v);
            // ENTRYPOINT resets a CMD inherited from the base (or an earlier
            // stage), not one set in this stage (BuildKit's d.cmdSet).
            if !stage.cmd_set {
                cfg.set("Cmd", Value::Null);
            }
        }
        Command::Expose(ports) => {
            for p in ports {
                let p = expand(p)?;
                let p = if p.contains('/') {
                    p
                } else {
                    format!("{p}/tcp")
                };
                cfg.insert_into("ExposedPorts", &p, json!({}));
            }
        }
        Command::Volume(paths) => {
            for v in paths {
                cfg.insert_into("Volumes", &expand(v)?, json!({}));
            }
        }
        Command::StopSignal(signal) => cfg.set("StopSignal", json!(expand(signal)?)),
        Command::Shell(argv) => cfg.set("Shell", json!(argv)),
        Command::Onbuild(trigger) => {
            let mut triggers = cfg.strings("OnBuild");
            triggers.push(trigger.expression.clone());
            cfg.set("OnBuild", json!(triggers));
        }
        Command::Healthcheck(h) => cfg.set("Healthcheck", healthcheck_json(h)),
        Command::Run(_) | Command::Copy(_) | Command::Add(_) => {
            return Err("RUN, COPY and ADD are not config edits".into())
        }
    }
    Ok(())
}
