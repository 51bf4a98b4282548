//! The clap tree, built two ways. Parsing uses it deferred: a subcommand's
//! flags are made only when that subcommand is the one invoked (building
//! all ~25 cost every `cairn` start ~0.15 ms and ~50 page faults; stop 17,
//! docs/performance.md). Docs, man pages and completions walk the whole
//! tree and use it eager, built as the derive builds it without `defer`:
//! a deferred subcommand receives the global flags before its own (their
//! listed order would change), and clap copies the tree for the `help`
//! subcommand's completions before deferred parts exist. A test checks that
//! both give every command the same help.

use crate::{build_cmd, docs_cmd, info_cmd, inspect_cmd, parse, registry_cmds};
use crate::{run_cmd, snapshot_cmds, store_cmds, Cli};
use clap::{Args, Command};
use std::path::PathBuf;

/// Subcommands that never open a store: `--store` is accepted there (it is
/// global) but not shown in their help.
const STORELESS: [&str; 5] = ["parse", "login", "logout", "version", "completion"];

/// The tree for parsing: deferred subcommands, the global `--store` hidden
/// where unused.
pub fn command() -> Command {
    hide_store_where_unused(<Cli as clap::CommandFactory>::command())
}

/// The same tree with every subcommand's flags made at once, in the order
/// the derive makes them without `defer`.
pub fn eager_command() -> Command {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    for (name, make) in EAGER {
        cmd = cmd.mut_subcommand(name, make);
    }
    hide_store_where_unused(cmd)
}

/// A deferred subcommand's variant (`Build(BuildArgs)`, ...) made eager.
type Make = fn(Command) -> Command;

/// Every subcommand and its `Args` type, in the enum's order (each
/// `mut_subcommand` moves its subcommand to the end, so all are listed;
/// `sandbox` is a subcommand enum, which the derive does not defer).
const EAGER: [(&str, Make); 25] = [
    ("build", eager::<build_cmd::BuildArgs>),
    ("run", eager::<run_cmd::RunArgs>),
    ("images", eager::<store_cmds::ImagesArgs>),
    ("pull", eager::<registry_cmds::PullArgs>),
    ("push", eager::<registry_cmds::PushArgs>),
    ("tag", eager::<store_cmds::TagArgs>),
    ("rmi", eager::<store_cmds::RmiArgs>),
    ("inspect", eager::<inspect_cmd::InspectArgs>),
    ("history", eager::<inspect_cmd::HistoryArgs>),
    ("export", eager::<store_cmds::ExportArgs>),
    ("import", eager::<store_cmds::ImportArgs>),
    ("prune", eager::<store_cmds::PruneArgs>),
    ("fsck", eager::<store_cmds::FsckArgs>),
    ("logs", eager::<run_cmd::LogsArgs>),
    ("sandbox", |sub| sub),
    ("snapshot", eager::<snapshot_cmds::SnapshotArgs>),
    ("login", eager::<registry_cmds::LoginArgs>),
    ("logout", eager::<registry_cmds::LogoutArgs>),
    ("parse", eager::<parse::ParseArgs>),
    ("info", eager::<info_cmd::InfoArgs>),
    ("version", eager::<info_cmd::VersionArgs>),
    ("completion", eager::<docs_cmd::CompletionArgs>),
    ("__detached", eager::<run_cmd::DetachedArgs>),
    ("__probe", eager::<info_cmd::ProbeArgs>),
    ("__docs", eager::<docs_cmd::DocsArgs>),
];

/// What the derive does for a variant without `defer`: the variant's own
/// settings (name, about, hide) are on `sub` already; the flags come now and
/// the deferred step is emptied. The about is set again after the flags, as
/// the derive's final step does.
fn eager<A: Args>(sub: Command) -> Command {
    let (about, long_about) = (sub.get_about().cloned(), sub.get_long_about().cloned());
    let sub = A::augment_args(sub.defer(|sub| sub));
    let sub = match about {
        Some(about) => sub.about(about),
        None => sub.about(None::<&str>),
    };
    match long_about {
        Some(long_about) => sub.long_about(long_about),
        None => sub.long_about(None::<&str>),
    }
}

/// Store-less subcommands get a hidden `--store` of their own, which clap's
/// propagation of the global one then leaves in place. It takes no place in
/// the display order, so a deferred subcommand's flags still start at 0.
fn hide_store_where_unused(mut cmd: Command) -> Command {
    for name in STORELESS {
        cmd = cmd.mut_subcommand(name, |sub| {
            sub.next_display_order(None)
                .arg(
                    clap::Arg::new("store")
                        .long("store")
                        .env("CAIRN_STORE")
                        .value_name("DIR")
                        .value_parser(clap::value_parser!(PathBuf))
                        .hide(true),
                )
                .next_display_order(0)
        });
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's path below `cmd`, depth first (`help` left out).
    fn paths(cmd: &Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            paths(sub, &path, out);
        }
    }

    fn find<'c>(cmd: &'c mut Command, path: &[String]) -> &'c mut Command {
        path.iter()
            .fold(cmd, |c, name| c.find_subcommand_mut(name).unwrap())
    }

    /// The deferred tree (what `cairn X --help` shows) and the eager one
    /// (docs/cli.md, man pages, completions) say the same for every command.
    #[test]
    fn deferred_and_eager_trees_give_the_same_help() {
        let mut eager = eager_command();
        eager.build();
        let mut deferred = command();
        deferred.build();
        let mut all = vec![vec![]];
        paths(&eager, &[], &mut all);
        let mut listed = vec![vec![]];
        paths(&deferred, &[], &mut listed);
        assert_eq!(all, listed);
        assert!(all.len() > 30, "{all:?}");
        for path in &all {
            let (e, d) = (find(&mut eager, path), find(&mut deferred, path));
            assert_eq!(
                e.render_long_help().to_string(),
                d.render_long_help().to_string(),
                "{path:?}"
            );
            assert_eq!(
                e.render_help().to_string(),
                d.render_help().to_string(),
                "{path:?}"
            );
            assert_eq!(
                e.render_usage().to_string(),
                d.render_usage().to_string(),
                "{path:?}"
            );
            let ids = |c: &Command| {
                let mut v: Vec<String> =
                    c.get_arguments().map(|a| a.get_id().to_string()).collect();
                v.sort();
                v
            };
            assert_eq!(ids(e), ids(d), "{path:?}");
        }
    }

    /// Every subcommand has its eager maker (that each is for the variant
    /// of its name, the help comparison above checks).
    #[test]
    fn every_subcommand_has_an_eager_maker() {
        let deferred = command();
        let makers: Vec<&str> = EAGER.iter().map(|(n, _)| *n).collect();
        for sub in deferred.get_subcommands() {
            let name = sub.get_name();
            assert!(
                makers.contains(&name),
                "{name} has no eager maker in tree.rs"
            );
        }
    }

    /// Deferral must not change what a subcommand says about itself: a doc
    /// comment on a flattened `Args` struct would replace the variant's.
    #[test]
    fn building_a_deferred_subcommand_keeps_its_about() {
        let listed: Vec<(String, Option<String>)> = command()
            .get_subcommands()
            .map(|s| {
                (
                    s.get_name().to_string(),
                    s.get_about().map(|a| a.to_string()),
                )
            })
            .collect();
        let mut built = command();
        built.build();
        for (name, about) in listed {
            let sub = built.find_subcommand(&name).unwrap();
            assert!(about.is_some(), "{name} has no about");
            assert_eq!(sub.get_about().map(|a| a.to_string()), about, "{name}");
        }
    }
}
