//! The syntax tree's instructions read into [`Typed`] values. The parser
//! has checked the flags of every instruction it was asked to check; this
//! reads them into fields, and refuses what it could not check (an
//! instruction whose parse was deferred, a flag map no parser checked).

use super::mount::MountSpec;
use super::{
    Add, ArgDecl, Command, CommandLine, Copy, Files, FromLine, Healthcheck, KeyValue, NetworkMode,
    OnBuild, Run, SecurityMode, Source, Typed, Word,
};
use crate::ast::{Form, Instruction, Stage};
use crate::error::ParseError;
use crate::parser::{flags, go_duration};
use std::time::Duration;

impl Instruction {
    /// This instruction as a typed value, flags read into fields.
    ///
    /// Errors carry the line and column of what is wrong: an unbalanced
    /// quote kept by [`crate::parse_deferring_quotes`], a bad `--mount`
    /// (unknown field, key without a value, open quote), or a flag the
    /// instruction does not take.
    pub fn typed(&self) -> Result<Typed, ParseError> {
        if let Some(e) = &self.deferred {
            return Err(e.clone());
        }
        let read = Reader { inst: self };
        read.check_flag_names()?;
        let command = match self.name.as_str() {
            "run" => Command::Run(read.run()?),
            "copy" => Command::Copy(Copy {
                from: read.word("from"),
                parents: read.boolean("parents"),
                files: read.files()?,
            }),
            "add" => Command::Add(Add {
                checksum: read.word("checksum"),
                keep_git_dir: read.boolean("keep-git-dir"),
                unpack: self
                    .flags
                    .contains_key("unpack")
                    .then(|| read.boolean("unpack")),
                files: read.files()?,
            }),
            "env" => Command::Env(read.pairs()),
            "label" => Command::Label(read.pairs()),
            "arg" => Command::Arg(read.args()),
            "cmd" => Command::Cmd(read.command_line(&self.args)),
            "entrypoint" => Command::Entrypoint(read.command_line(&self.args)),
            "shell" => Command::Shell(self.args.clone()),
            "workdir" => Command::Workdir(read.first()),
            "user" => Command::User(read.first()),
            "stopsignal" => Command::StopSignal(read.first()),
            "expose" => Command::Expose(read.words()),
            "volume" => Command::Volume(read.words()),
            "maintainer" => Command::Maintainer(self.args.join(" ")),
            "healthcheck" => Command::Healthcheck(read.healthcheck()?),
            "onbuild" => Command::Onbuild(OnBuild {
                expression: self.args.join(" "),
            }),
            other => {
                return Err(read.error(
                    self.line,
                    read.column(),
                    format!("unknown instruction: {}", other.to_uppercase()),
                ))
            }
        };
        Ok(Typed {
            line: self.line,
            column: read.column(),
            end_line: self.end_line,
            command,
        })
    }
}

impl Stage {
    /// The FROM line of this stage, typed.
    pub fn typed_from(&self) -> FromLine {
        FromLine {
            base: Word(self.base.clone()),
            platform: self.platform.clone().map(Word),
            alias: self.name.clone(),
            line: self.line,
            column: self.positions.column.max(1),
        }
    }
}

/// Reads one instruction's parts.
struct Reader<'a> {
    inst: &'a Instruction,
}

impl Reader<'_> {
    fn column(&self) -> usize {
        self.inst.positions.column.max(1)
    }

    fn error(&self, line: usize, column: usize, message: String) -> ParseError {
        ParseError::new(line, column, message)
    }

    /// Line and column of the `nth` `--name` flag (the keyword's when unknown).
    fn flag_at(&self, name: &str, nth: usize) -> (usize, usize) {
        self.inst
            .positions
            .flags
            .iter()
            .filter(|f| f.name == name)
            .nth(nth)
            .map_or((self.inst.line, self.column()), |f| (f.line, f.column))
    }

    /// Flags the parser kept unchecked are checked by name here. STOPSIGNAL
    /// and HEALTHCHECK NONE ignore theirs, as BuildKit does.
    fn check_flag_names(&self) -> Result<(), ParseError> {
        let ignored = self.inst.name == "stopsignal"
            || (self.inst.name == "healthcheck"
                && self
                    .inst
                    .args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case("none")));
        if ignored {
            return Ok(());
        }
        let spec = flags::spec(&self.inst.name);
        for name in self.inst.flags.keys() {
            if !spec.iter().any(|(n, _)| n == name) {
                let (line, column) = self.flag_at(name, 0);
                return Err(self.error(line, column, format!("unknown flag: --{name}")));
            }
        }
        Ok(())
    }

    fn last(&self, name: &str) -> Option<&String> {
        self.inst.flags.get(name).and_then(|v| v.last())
    }

    fn word(&self, name: &str) -> Option<Word> {
        self.last(name).cloned().map(Word)
    }

    /// A boolean flag: the parser stores "true"/"false"; an unchecked bare
    /// flag reads "" and means true.
    fn boolean(&self, name: &str) -> bool {
        self.last(name)
            .is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true"))
    }

    fn first(&self) -> Word {
        Word(self.inst.args.first().cloned().unwrap_or_default())
    }

    fn words(&self) -> Vec<Word> {
        self.inst.args.iter().cloned().map(Word).collect()
    }

    fn command_line(&self, args: &[String]) -> CommandLine {
        match self.inst.form {
            Some(Form::Exec) => CommandLine::Exec(args.to_vec()),
            _ => CommandLine::Shell(args.join(" ")),
        }
    }

    fn run(&self) -> Result<Run, ParseError> {
        let mut mounts = Vec::new();
        for (i, text) in self
            .inst
            .flags
            .get("mount")
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (line, column) = self.flag_at("mount", i);
            let spec = MountSpec::read(text, line, column)
                .map_err(|e| self.error(line, column, format!("RUN --mount={text}: {e}")))?;
            mounts.push(spec);
        }
        let network = match self.last("network").map(String::as_str) {
            None => None,
            Some("default") => Some(NetworkMode::Default),
            Some("none") => Some(NetworkMode::None),
            Some("host") => Some(NetworkMode::Host),
            Some(other) => {
                let (line, column) = self.flag_at("network", 0);
                let message = format!("unsupported network mode {other:?}");
                return Err(self.error(line, column, message));
            }
        };
        let security = match self.last("security").map(String::as_str) {
            None => None,
            Some("sandbox") => Some(SecurityMode::Sandbox),
            Some("insecure") => Some(SecurityMode::Insecure),
            Some(other) => {
                let (line, column) = self.flag_at("security", 0);
                let message = format!("unsupported security mode {other:?}");
                return Err(self.error(line, column, message));
            }
        };
        Ok(Run {
            mounts,
            network,
            security,
            command: self.command_line(&self.inst.args),
            heredocs: self.inst.heredocs.clone(),
        })
    }

    fn files(&self) -> Result<Files, ParseError> {
        let Some((dest, sources)) = self.inst.args.split_last().filter(|(_, s)| !s.is_empty())
        else {
            let message = format!(
                "{} requires at least two arguments, but only one was provided. Destination could not be determined.",
                self.inst.name.to_uppercase()
            );
            return Err(self.error(self.inst.line, self.column(), message));
        };
        let json = self.inst.form == Some(Form::Exec);
        let sources = sources
            .iter()
            .map(|w| match w.strip_prefix("<<") {
                // Heredocs exist only outside the JSON form (BuildKit).
                Some(name) if !json => Source::Heredoc(
                    name.trim_start_matches('-')
                        .trim_matches(['"', '\''])
                        .to_string(),
                ),
                _ => Source::Path(Word(w.clone())),
            })
            .collect();
        Ok(Files {
            chown: self.word("chown"),
            chmod: self.word("chmod"),
            link: self.boolean("link"),
            exclude: self
                .inst
                .flags
                .get("exclude")
                .into_iter()
                .flatten()
                .cloned()
                .map(Word)
                .collect(),
            sources,
            dest: Word(dest.clone()),
            heredocs: self.inst.heredocs.clone(),
        })
    }

    fn pairs(&self) -> Vec<KeyValue> {
        self.inst
            .pairs
            .iter()
            .flatten()
            .map(|p| KeyValue {
                key: Word(p.key.clone()),
                value: Word(p.value.clone().unwrap_or_default()),
            })
            .collect()
    }

    fn args(&self) -> Vec<ArgDecl> {
        self.inst
            .pairs
            .iter()
            .flatten()
            .map(|p| ArgDecl {
                name: p.key.clone(),
                default: p.value.clone().map(Word),
            })
            .collect()
    }

    fn healthcheck(&self) -> Result<Healthcheck, ParseError> {
        let none = Healthcheck {
            test: None,
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        };
        let rest = self.inst.args.get(1..).unwrap_or_default();
        match self.inst.args.first() {
            Some(kind) if kind.eq_ignore_ascii_case("cmd") => {}
            _ => return Ok(none),
        }
        Ok(Healthcheck {
            test: Some(self.command_line(rest)),
            interval: self.duration("interval")?,
            timeout: self.duration("timeout")?,
            start_period: self.duration("start-period")?,
            start_interval: self.duration("start-interval")?,
            retries: self.retries()?,
        })
    }

    /// A HEALTHCHECK duration in Go's syntax; empty means not set.
    fn duration(&self, name: &str) -> Result<Option<Duration>, ParseError> {
        let Some(v) = self.last(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match go_duration(v).and_then(|n| u64::try_from(n).ok()) {
            Some(nanos) => Ok(Some(Duration::from_nanos(nanos))),
            None => {
                let (line, column) = self.flag_at(name, 0);
                Err(self.error(line, column, format!("time: invalid duration {v:?}")))
            }
        }
    }

    fn retries(&self) -> Result<Option<u32>, ParseError> {
        let Some(v) = self.last("retries").filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        v.parse().map(Some).map_err(|_| {
            let (line, column) = self.flag_at("retries", 0);
            let message = format!("strconv.ParseInt: parsing {v:?}: invalid syntax");
            self.error(line, column, message)
        })
    }
}
