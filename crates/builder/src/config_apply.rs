//! Config-only instructions (ENV, LABEL, CMD, ENTRYPOINT, HEALTHCHECK, ...) applied to the
//! image config, and the history text of a step.

use crate::config::{Field, Healthcheck, ImageConfig, Runtime};
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::typed::{CommandLine, Healthcheck as HealthcheckInstruction};
use cairn_dockerfile::{Command, Instruction};
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

/// A CMD/ENTRYPOINT value: exec form as is, shell form through the SHELL.
fn command_field(line: &CommandLine, cfg: &ImageConfig) -> Field<Vec<String>> {
    match line {
        CommandLine::Exec(args) => Field::Set(args.clone()),
        CommandLine::Shell(text) => {
            let mut shell = cfg.shell();
            if shell.is_empty() {
                shell = vec!["/bin/sh".into(), "-c".into()];
            }
            shell.push(text.clone());
            Field::Set(shell)
        }
    }
}

/// The config's `Healthcheck` (durations in nanoseconds, as Docker keeps them).
fn healthcheck_config(h: &HealthcheckInstruction) -> Result<Healthcheck, String> {
    let test: Vec<String> = match &h.test {
        None => vec!["NONE".into()],
        Some(CommandLine::Exec(args)) => [vec!["CMD".to_string()], args.clone()].concat(),
        Some(CommandLine::Shell(text)) => vec!["CMD-SHELL".into(), text.clone()],
    };
    let nanos = |d: Option<std::time::Duration>| -> Result<Field<i64>, String> {
        match d {
            None => Ok(Field::Absent),
            Some(d) => i64::try_from(d.as_nanos())
                .map(Field::Set)
                .map_err(|_| format!("HEALTHCHECK duration {d:?} is too long")),
        }
    };
    Ok(Healthcheck {
        test: Field::Set(test),
        interval: nanos(h.interval)?,
        timeout: nanos(h.timeout)?,
        start_period: nanos(h.start_period)?,
        start_interval: nanos(h.start_interval)?,
        retries: h
            .retries
            .map_or(Field::Absent, |r| Field::Set(i64::from(r))),
        ..Healthcheck::default()
    })
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
                cfg.run_mut().set_env(&k, &v);
            }
        }
        Command::Label(pairs) => {
            for p in pairs {
                let (k, v) = (expand(&p.key)?, expand(&p.value)?);
                cfg.run_mut().labels.get_or_insert_default().insert(k, v);
            }
        }
        Command::Maintainer(text) => cfg.author = Field::Set(text.clone()),
        Command::Workdir(dir) => {
            let dir = expand(dir)?;
            let joined = if dir.starts_with('/') {
                dir
            } else {
                format!("{}/{dir}", cfg.working_dir())
            };
            cfg.run_mut().working_dir = Field::Set(format!("/{}", crate::context::clean(&joined)));
        }
        Command::User(user) => cfg.run_mut().user = Field::Set(expand(user)?),
        Command::Cmd(line) => {
            cfg.run_mut().cmd = command_field(line, cfg);
            stage.cmd_set = true;
        }
        Command::Entrypoint(line) => {
            cfg.run_mut().entrypoint = command_field(line, cfg);
            // ENTRYPOINT resets a CMD inherited from the base (or an earlier
            // stage), not one set in this stage (BuildKit's d.cmdSet).
            if !stage.cmd_set {
                cfg.run_mut().cmd = Field::Null;
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
                let ports = cfg.run_mut().exposed_ports.get_or_insert_default();
                ports.insert(p, json!({}));
            }
        }
        Command::Volume(paths) => {
            for v in paths {
                let v = expand(v)?;
                cfg.run_mut()
                    .volumes
                    .get_or_insert_default()
                    .insert(v, json!({}));
            }
        }
        Command::StopSignal(signal) => cfg.run_mut().stop_signal = Field::Set(expand(signal)?),
        Command::Shell(argv) => cfg.run_mut().shell = Field::Set(argv.clone()),
        Command::Onbuild(trigger) => {
            let mut triggers = cfg.on_build();
            triggers.push(trigger.expression.clone());
            cfg.run_mut().on_build = Field::Set(triggers);
        }
        Command::Healthcheck(h) => cfg.run_mut().healthcheck = Field::Set(healthcheck_config(h)?),
        Command::Run(_) | Command::Copy(_) | Command::Add(_) => {
            return Err("RUN, COPY and ADD are not config edits".into())
        }
    }
    Ok(())
}
