//! Every instruction typed, and every flag error with its line and column.

use super::*;
use crate::{parse, parse_deferring_quotes};

/// The typed instructions of a one-stage file made of `body`.
fn typed(body: &str) -> Vec<Typed> {
    let doc = parse(&format!("FROM scratch\n{body}")).unwrap();
    doc.stages[0]
        .instructions
        .iter()
        .map(|i| i.typed().unwrap())
        .collect()
}

fn one(body: &str) -> Command {
    typed(body).remove(0).command
}

fn w(s: &str) -> Word {
    Word::from(s)
}

/// The error of the first instruction (parse or typing), as `LINE:COL: message`.
fn error(body: &str) -> String {
    let text = format!("FROM scratch\n{body}");
    match parse(&text) {
        Err(e) => e.to_string(),
        Ok(doc) => doc.stages[0].instructions[0]
            .typed()
            .map(|t| format!("typed fine: {t:?}"))
            .unwrap_or_else(|e| e.to_string()),
    }
}

#[test]
fn run_reads_mounts_network_security_and_command() {
    let Command::Run(run) = one(
        "RUN --mount=type=cache,target=/c,sharing=locked \\\n  --mount=from=build,src=/o,dst=/i,ro --network=none --security=sandbox make\n",
    ) else {
        panic!("not a RUN")
    };
    assert_eq!(run.network, Some(NetworkMode::None));
    assert_eq!(run.security, Some(SecurityMode::Sandbox));
    assert_eq!(run.command, CommandLine::Shell("make".into()));
    assert_eq!(run.mounts.len(), 2);
    let keys: Vec<MountKey> = run.mounts[0].fields.iter().map(|f| f.key).collect();
    assert_eq!(
        keys,
        [MountKey::Type, MountKey::Target, MountKey::Sharing].to_vec()
    );
    assert_eq!((run.mounts[0].line, run.mounts[0].column), (2, 5));
    assert_eq!((run.mounts[1].line, run.mounts[1].column), (3, 3));
    assert_eq!(run.mounts[1].from(), Some("build"));
    let ro = &run.mounts[1].fields[3];
    assert_eq!((ro.key, ro.value.as_ref()), (MountKey::ReadOnly, None));
    let Command::Run(exec) = one("RUN [\"echo\", \"$X\"]\n") else {
        panic!()
    };
    assert_eq!(
        exec.command,
        CommandLine::Exec(vec!["echo".into(), "$X".into()])
    );
    assert_eq!((exec.network, exec.security), (None, None));
    let Command::Run(h) = one("RUN <<EOF\necho hi\nEOF\n") else {
        panic!()
    };
    assert_eq!(h.heredocs[0].body, "echo hi\n");
    let t = &typed("  RUN --network=host true\n")[0];
    assert_eq!((t.line, t.column), (2, 3));
}

#[test]
fn copy_and_add_read_every_flag() {
    let Command::Copy(c) = one(
        "COPY --from=build --chown=app:app --chmod=0644 --link --parents --exclude=*.md --exclude=$X a <<EOF /dst/\nbody\nEOF\n",
    ) else {
        panic!("not a COPY")
    };
    assert_eq!(c.from, Some(w("build")));
    assert!(c.parents && c.files.link);
    assert_eq!(c.files.chown, Some(w("app:app")));
    assert_eq!(c.files.chmod, Some(w("0644")));
    assert_eq!(c.files.exclude, vec![w("*.md"), w("$X")]);
    assert_eq!(
        c.files.sources,
        vec![Source::Path(w("a")), Source::Heredoc("EOF".into())]
    );
    assert_eq!(c.files.dest, w("/dst/"));
    assert_eq!(c.files.heredocs.len(), 1);
    let Command::Copy(plain) = one("COPY --link=false [\"<<x\", \"/d\"]\n") else {
        panic!()
    };
    assert!(!plain.files.link && !plain.parents && plain.from.is_none());
    // JSON form: `<<x` is a file name.
    assert_eq!(plain.files.sources, vec![Source::Path(w("<<x"))]);
    let Command::Add(a) =
        one("ADD --checksum=sha256:abc --keep-git-dir --unpack=false --chown=1 https://x/y /y\n")
    else {
        panic!("not an ADD")
    };
    assert_eq!(a.checksum, Some(w("sha256:abc")));
    assert!(a.keep_git_dir);
    assert_eq!(a.unpack, Some(false));
    assert_eq!(a.files.chown, Some(w("1")));
    let Command::Add(bare) = one("ADD a b\n") else {
        panic!()
    };
    assert_eq!((bare.unpack, bare.keep_git_dir), (None, false));
    assert!(one("ADD a b\n").files().is_some() && one("USER x\n").files().is_none());
}

#[test]
fn config_instructions_are_typed() {
    let all = typed(concat!(
        "ENV A=1 B=\"two words\"\n",
        "LABEL k=v\n",
        "ARG N\n",
        "ARG M=$N\n",
        "CMD [\"a\", \"b\"]\n",
        "ENTRYPOINT run me\n",
        "SHELL [\"/bin/bash\", \"-c\"]\n",
        "WORKDIR /w/$N\n",
        "USER app:app\n",
        "STOPSIGNAL SIGTERM\n",
        "EXPOSE 80 53/udp\n",
        "VOLUME /data /logs\n",
        "MAINTAINER me <me@x>\n",
        "ONBUILD RUN echo hi\n",
    ));
    let commands: Vec<Command> = all.into_iter().map(|t| t.command).collect();
    let kv = |k: &str, v: &str| KeyValue {
        key: w(k),
        value: w(v),
    };
    assert_eq!(
        commands[0],
        Command::Env(vec![kv("A", "1"), kv("B", "\"two words\"")])
    );
    assert_eq!(commands[1], Command::Label(vec![kv("k", "v")]));
    assert_eq!(
        commands[2],
        Command::Arg(vec![ArgDecl {
            name: "N".into(),
            default: None
        }])
    );
    assert_eq!(
        commands[3],
        Command::Arg(vec![ArgDecl {
            name: "M".into(),
            default: Some(w("$N"))
        }])
    );
    assert_eq!(
        commands[4],
        Command::Cmd(CommandLine::Exec(vec!["a".into(), "b".into()]))
    );
    assert_eq!(
        commands[5],
        Command::Entrypoint(CommandLine::Shell("run me".into()))
    );
    assert_eq!(
        commands[6],
        Command::Shell(vec!["/bin/bash".into(), "-c".into()])
    );
    assert_eq!(commands[7], Command::Workdir(w("/w/$N")));
    assert_eq!(commands[8], Command::User(w("app:app")));
    assert_eq!(commands[9], Command::StopSignal(w("SIGTERM")));
    assert_eq!(commands[10], Command::Expose(vec![w("80"), w("53/udp")]));
    assert_eq!(commands[11], Command::Volume(vec![w("/data"), w("/logs")]));
    assert_eq!(commands[12], Command::Maintainer("me <me@x>".into()));
    assert_eq!(
        commands[13],
        Command::Onbuild(OnBuild {
            expression: "RUN echo hi".into()
        })
    );
}

#[test]
fn healthcheck_reads_durations_and_retries() {
    let Command::Healthcheck(h) = one(
        "HEALTHCHECK --interval=1m30s --timeout=1.5s --start-period=0 --start-interval= --retries=3 CMD curl -f x\n",
    ) else {
        panic!()
    };
    assert_eq!(h.test, Some(CommandLine::Shell("curl -f x".into())));
    assert_eq!(h.interval, Some(Duration::from_secs(90)));
    assert_eq!(h.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(h.start_period, Some(Duration::ZERO));
    assert_eq!(h.start_interval, None);
    assert_eq!(h.retries, Some(3));
    let Command::Healthcheck(exec) = one("HEALTHCHECK CMD [\"true\"]\n") else {
        panic!()
    };
    assert_eq!(exec.test, Some(CommandLine::Exec(vec!["true".into()])));
    let Command::Healthcheck(none) = one("HEALTHCHECK --whatever=1 NONE\n") else {
        panic!()
    };
    assert_eq!(none.test, None);
}

#[test]
fn from_lines_are_typed() {
    let doc =
        parse("ARG P=linux/amd64\n  FROM --platform=$P base:1 AS Build\nFROM build\n").unwrap();
    let first = doc.stages[0].typed_from();
    assert_eq!(first.base, w("base:1"));
    assert_eq!(first.platform, Some(w("$P")));
    assert_eq!(first.alias.as_deref(), Some("build"));
    assert_eq!((first.line, first.column), (2, 3));
    let second = doc.stages[1].typed_from();
    assert_eq!((second.platform, second.alias), (None, None));
}

#[test]
fn from_names_list_the_stages_read() {
    let names: Vec<Vec<String>> = typed(
        "COPY --from=a x y\nRUN --mount=from=b,target=/b --mount=type=cache,target=/c true\nUSER x\n",
    )
    .iter()
    .map(|t| {
        t.command
            .from_names()
            .into_iter()
            .map(String::from)
            .collect()
    })
    .collect();
    assert_eq!(
        names,
        vec![vec!["a".to_string()], vec!["b".to_string()], vec![]]
    );
}

/// Flag errors the parser finds keep BuildKit's messages and point at the flag.
#[test]
fn flag_errors_name_line_and_column() {
    for (body, want) in [
        ("COPY --foo a b\n", "2:6: unknown flag: --foo"),
        ("ADD --from=x a b\n", "2:5: unknown flag: --from"),
        (
            "COPY --checksum=sha256:0 a b\n",
            "2:6: unknown flag: --checksum",
        ),
        (
            "COPY --from=a --from=b x y\n",
            "2:15: duplicate flag specified: --from",
        ),
        (
            "COPY --chown a b\n",
            "2:6: missing a value on flag: --chown",
        ),
        ("COPY --link= a b\n", "2:6: missing a value on flag: --link"),
        (
            "COPY --parents=maybe a b\n",
            "2:6: expecting boolean value for flag --parents, not: maybe",
        ),
        ("RUN --net=host true\n", "2:5: unknown flag: --net"),
        (
            "RUN --network=bridge true\n",
            "2:22: unsupported network mode \"bridge\"",
        ),
        (
            "RUN --security=root true\n",
            "2:21: unsupported security mode \"root\"",
        ),
        (
            "RUN --mount=type=nfs,target=/x true\n",
            "2:32: unsupported mount type \"nfs\"",
        ),
        ("ENV --x=1 A=1\n", "2:5: unknown flag: --x"),
        ("WORKDIR --x /w\n", "2:9: unknown flag: --x"),
        (
            "HEALTHCHECK --interval=5 CMD true\n",
            "2:26: time: invalid duration \"5\"",
        ),
        (
            "HEALTHCHECK --interval=1us CMD true\n",
            "2:28: Interval \"interval\" cannot be less than 1ms",
        ),
        (
            "HEALTHCHECK --retries=x CMD true\n",
            "2:25: strconv.ParseInt: parsing \"x\": invalid syntax",
        ),
        (
            "HEALTHCHECK --retries=-1 CMD true\n",
            "2:26: --retries cannot be negative (-1)",
        ),
        (
            "HEALTHCHECK --foo=1 CMD true\n",
            "2:13: unknown flag: --foo",
        ),
    ] {
        assert_eq!(error(body), want, "{body}");
    }
    let doc = parse("FROM --plat=x scratch\n").unwrap_err();
    assert_eq!(doc.to_string(), "1:6: unknown flag: --plat");
}

/// What the typed layer checks itself: a `--mount`'s fields, at the flag.
#[test]
fn mount_field_errors_point_at_the_flag() {
    for (body, want) in [
        (
            "RUN --mount=target=/t,colour=red true\n",
            "2:5: RUN --mount=target=/t,colour=red: unknown field \"colour\" in \"colour=red\"",
        ),
        (
            "RUN true\nRUN --network=none \\\n --mount=type=cache,target true\n",
            "typed fine",
        ),
        (
            "RUN --mount='target=\"/t' true\n",
            "2:5: RUN --mount=target=\"/t: unterminated quote in \"target=\\\"/t\"",
        ),
        (
            "RUN --mount=type=cache --mount=type=cache,id true\n",
            "2:24: RUN --mount=type=cache,id: id: expected id=VALUE in \"id\"",
        ),
    ] {
        assert!(error(body).starts_with(want), "{body}: {}", error(body));
    }
    let doc =
        parse("FROM scratch\nRUN true\nRUN --network=none \\\n --mount=type=cache,target true\n")
            .unwrap();
    let e = doc.stages[0].instructions[1].typed().unwrap_err();
    assert_eq!(
        e.to_string(),
        "4:2: RUN --mount=type=cache,target: target: expected target=VALUE in \"target\""
    );
    assert_eq!((e.line, e.column), (4, 2));
}

#[test]
fn deferred_quote_errors_surface_when_typed() {
    let doc = parse_deferring_quotes("FROM scratch\nUSER \"open\n").unwrap();
    let e = doc.stages[0].instructions[0].typed().unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("double-quote"), "{e}");
}

#[test]
fn unchecked_flag_maps_are_refused_by_name() {
    // An ONBUILD trigger's flags are recorded unchecked; typing checks them.
    let doc = parse("FROM scratch\nONBUILD COPY --bogus a b\n").unwrap();
    let trigger = doc.stages[0].instructions[0].onbuild.as_ref().unwrap();
    let e = trigger.typed().unwrap_err();
    assert_eq!(e.message, "unknown flag: --bogus");
    let ok = parse("FROM scratch\nONBUILD COPY --link a b\n").unwrap();
    let Command::Copy(c) = ok.stages[0].instructions[0]
        .onbuild
        .as_ref()
        .unwrap()
        .typed()
        .unwrap()
        .command
    else {
        panic!()
    };
    assert!(c.files.link);
}
