//! Documents made from the clap definitions themselves, so they cannot
//! drift: shell completions (`cairn completion SHELL`), man pages and the
//! Markdown reference `docs/cli.md` (`cairn __docs`, checked by a test).

use crate::exit::CliError;
use clap::{Arg, Args, Command};
use clap_complete::Shell;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Args)]
pub struct CompletionArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: Shell,
}

/// Print the completion script; e.g. `cairn completion bash > /etc/bash_completion.d/cairn`.
pub fn completion(args: CompletionArgs) -> Result<(), CliError> {
    let mut cmd = crate::tree::eager_command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "cairn", &mut script);
    write_stdout(&script, "writing the completion script")
}

/// Write to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8], doing: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::io(doing, e)),
        _ => Ok(()),
    }
}

#[derive(Args)]
pub struct DocsArgs {
    /// Write man pages (cairn.1, cairn-build.1, ...) into this directory
    #[arg(long, value_name = "DIR")]
    man: Option<PathBuf>,
}

/// Man pages into `--man DIR`, else the Markdown reference on stdout.
pub fn docs(args: DocsArgs) -> Result<(), CliError> {
    let cmd = crate::tree::eager_command();
    match args.man {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
            clap_mangen::generate_to(cmd, &dir)
                .map_err(|e| CliError::io(format!("writing man pages into {}", dir.display()), e))
        }
        None => write_stdout(markdown(cmd).as_bytes(), "writing the reference"),
    }
}

/// The hand-written part of docs/cli.md, kept here so that the whole file
/// is generated and a test can compare it.
const NOTES: &str = "# cairn command reference

Generated from the CLI's definitions by `cairn __docs > docs/cli.md`
(`crates/cli/tests/habits_cli.rs::docs_cli_md_is_generated_from_clap` fails when
it is stale; `UPDATE_GOLDEN=1` rewrites it). Man pages: `cairn __docs --man DIR`.
Completions: `cairn completion bash|zsh|fish`. Environment variables:
[environment.md](environment.md).

## Habits and decisions

- `cairn run [OPTIONS] IMAGE [COMMAND [ARG...]]`: options go before the image;
  everything after it is the command (`--` is still accepted). `sandbox exec ID CMD...`
  likewise.
- Exit codes: 0 ok, 1 the command failed, 2 bad input. `run` follows `docker run`:
  125 for Cairn's own errors (unknown image, bad flag, setup failure), 126 the command
  cannot be executed, 127 not found, else the command's own code.
- `run -d` creates a sandbox that outlives the call and starts the command in a
  background runner (`cairn __detached`, a session of its own); its stdout and stderr go
  to the sandbox's `log` file (`cairn logs ID`), its exit code to `inspect`'s
  `exit_code`. A sandbox runs one command at a time: `sandbox exec` into a sandbox whose
  detached command still runs waits for it.
- `run -t` gives the command a pseudo-terminal (stdout and stderr both on it); `-i -t`
  needs a terminal on stdin (as docker: \"the input device is not a TTY\").
- `-v /host:/ctr[:ro]` binds host paths only (no named volumes); a missing host directory
  is created, as `docker run -v` does. `-m` takes docker's binary units (512m, 1g).
- Short flags mean one thing: `-e` is `--env`, `-t` is `--tag` in `build` and `--tty` in
  `run` (docker's own split), `-f` a file (or `--format` in `inspect`, as docker's),
  `-q` quiet. One exception: `snapshot create|push -e` is `--entrypoint` (and
  `snapshot create -i` is `--image`), because the platform's snapshot CLI
  (`seeds/004`) defines them so.
- `build`: the context defaults to `.`; `Containerfile` is used when there is no
  `Dockerfile`; `-f -` reads standard input. `--label`/`--annotation` are set on the
  result's config and manifest (no history entry, as BuildKit); with them, tags are set
  after they are applied. `--pull=always` pulls every FROM base naming a registry image
  (a base built from `$ARG`s is left to the build's own pull), `--pull=never` gives the
  build no registry. `--platform` is the platform FROM pulls pick.
- `inspect` looks for an image, then a sandbox, then a snapshot (`--type` to choose);
  `--format` takes Go-template actions `{{.Field.Sub}}` and `{{json .Field}}`
  (fields match case-insensitively; a missing one prints `<no value>`).
- `info` probes for real: a child process enters a user namespace and mounts overlay
  in the store's tmp dir; cgroup layout (v2, hybrid, v1) comes from statfs of
  /sys/fs/cgroup, delegation from the writability of the caller's v2 cgroup.
- Logs: the library's `tracing` events go to stderr at `--log-level` (default `warn`);
  `RUST_LOG`, when set, wins.

## Dependencies

`clap_complete` and `clap_mangen` make completions and man pages from the same clap
definitions as the parser (nothing to drift). `tracing-subscriber` (fmt + env-filter)
is the standard sink for the library's `tracing` events and reads `RUST_LOG`.

## Missing

- `run -t`: the pty is not the command's controlling terminal (no job control; a
  resize after start is not passed on). No `cairn stop`/`attach` for detached runs.
- Push progress is per blob (start, done), not per byte; pull's is per MiB.
- `inspect --format` has no `range`/`if`/`index` and no JSONPath.
- `--pull=always` does not expand ARGs in FROM.
";

/// The whole reference: one section per visible command, depth first.
pub fn markdown(mut cmd: Command) -> String {
    cmd.build();
    let mut out = String::from(NOTES);
    section(&cmd, "cairn", &mut out);
    out
}

fn section(cmd: &Command, path: &str, out: &mut String) {
    let _ = write!(out, "\n## `{path}`\n\n");
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(out, "{about}\n");
    }
    let usage = cmd.clone().render_usage().to_string();
    let _ = writeln!(out, "```\n{}\n```\n", usage.trim_start_matches("Usage: "));
    let args: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
        .collect();
    if !args.is_empty() {
        out.push_str("| Argument | Meaning |\n|---|---|\n");
        for a in args {
            let _ = writeln!(out, "| {} | {} |", arg_name(a), arg_help(a));
        }
    }
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        section(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

fn arg_name(a: &Arg) -> String {
    let value = a
        .get_value_names()
        .map(|v| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| a.get_id().to_string().to_uppercase());
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    let mut names = Vec::new();
    if let Some(s) = a.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("--{l}"));
    }
    let shown = match (names.is_empty(), takes_value) {
        (true, _) => value,
        (false, true) => format!("{} {value}", names.join(", ")),
        (false, false) => names.join(", "),
    };
    format!("`{shown}`")
}

fn arg_help(a: &Arg) -> String {
    let mut text = a
        .get_long_help()
        .or(a.get_help())
        .map(|h| h.to_string().replace('\n', " "))
        .unwrap_or_default();
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !values.is_empty() && a.get_num_args().is_some_and(|n| n.takes_values()) {
        let _ = write!(text, " Values: {}.", values.join(", "));
    }
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && a.get_num_args().is_some_and(|n| n.takes_values()) {
        let _ = write!(text, " Default: `{}`.", defaults.join(","));
    }
    if let Some(env) = a.get_env() {
        let _ = write!(text, " Env: `{}`.", env.to_string_lossy());
    }
    text.replace('|', "\\|")
}
