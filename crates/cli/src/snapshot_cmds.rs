//! `cairn snapshot create|push|commit|list|get|delete|sandbox|log`.

use crate::exit::{classify, open_store, CliError};
use crate::registry_cmds::RegistryFlags;
use cairn::registry::Regions;
use cairn::sandbox::manager::{CreateOptions, Resources as SandboxResources};
use cairn::sandbox::{Launcher, Network};
use cairn::snapshot::{
    CreateRequest, LanguageSnapshots, ListQuery, Resources, Snapshot, SnapshotDb, SnapshotService,
    SnapshotState, Source,
};
use clap::{Args, Subcommand, ValueEnum};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

// Flags every snapshot command takes.
#[derive(Args, Clone)]
pub struct Common {
    /// The organization acting (sees its own and the general snapshots)
    #[arg(long, env = "CAIRN_ORG", default_value = "default", global = true)]
    org: String,
    /// The regions file (default: $CAIRN_REGIONS, ~/.config/cairn/regions.toml, /etc/cairn/regions.toml)
    #[arg(long, value_name = "FILE", global = true)]
    regions_file: Option<PathBuf>,
    /// Where snapshot records live: postgres://USER@HOST:PORT/DB (shared by runners; docs/scale-out.md), sqlite:PATH, or embedded (the store's own file, the default)
    #[arg(
        long,
        value_name = "URL",
        env = "CAIRN_SNAPSHOT_DB",
        hide_env_values = true,
        global = true
    )]
    snapshot_db: Option<String>,
    #[command(flatten)]
    registry: RegistryFlags,
}

#[derive(Args, Clone)]
pub struct ResourceArgs {
    /// CPU cores for sandboxes from this snapshot
    #[arg(long, default_value_t = 1)]
    cpu: u32,
    /// Memory in GB
    #[arg(long, default_value_t = 1)]
    memory: u32,
    /// Disk in GB
    #[arg(long, default_value_t = 3)]
    disk: u32,
    /// GPUs
    #[arg(long, default_value_t = 0)]
    gpu: u32,
    /// Region where the snapshot will be available (repeatable; default: the regions file's default)
    #[arg(long = "region", value_name = "ID")]
    regions: Vec<String>,
    /// Network of the build's RUN steps: host or none
    #[arg(long, default_value = "host")]
    network: Network,
}

impl ResourceArgs {
    fn request(&self, name: String, entrypoint: Option<&str>) -> Result<CreateRequest, CliError> {
        Ok(CreateRequest {
            name,
            entrypoint: entrypoint.map(parse_entrypoint).transpose()?,
            resources: Resources {
                cpu: self.cpu,
                gpu: self.gpu,
                mem: self.memory,
                disk: self.disk,
            },
            regions: self.regions.clone(),
            general: false,
            network: self.network,
        })
    }
}

/// `["a","b"]` (JSON) or words split on whitespace.
fn parse_entrypoint(s: &str) -> Result<Vec<String>, CliError> {
    let v: Vec<String> = if s.trim_start().starts_with('[') {
        serde_json::from_str(s).map_err(|e| {
            CliError::bad_input(format!(
                "--entrypoint {s:?}: not a JSON array of strings: {e}"
            ))
        })?
    } else {
        s.split_whitespace().map(str::to_string).collect()
    };
    if v.is_empty() {
        return Err(CliError::bad_input("--entrypoint must not be empty"));
    }
    Ok(v)
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Create a snapshot from a Dockerfile or an image reference
    Create {
        /// NAME or NAME:VERSION
        name: String,
        /// Dockerfile to build
        #[arg(
            short = 'f',
            long,
            conflicts_with = "image",
            required_unless_present = "image"
        )]
        dockerfile: Option<PathBuf>,
        /// Files or dirs for the build context (repeatable; default: the COPY/ADD sources)
        #[arg(short = 'c', long = "context", requires = "dockerfile")]
        contexts: Vec<PathBuf>,
        /// Image reference to pull
        #[arg(short = 'i', long)]
        image: Option<String>,
        /// Entrypoint of the snapshot (with --image only; with a Dockerfile,
        /// put ENTRYPOINT in it). `-e` here, as in the platform's snapshot
        /// CLI, not `--env`
        #[arg(short = 'e', long)]
        entrypoint: Option<String>,
        /// Build argument KEY=VALUE (repeatable)
        #[arg(long = "build-arg", value_name = "KEY=VALUE")]
        build_args: Vec<String>,
        /// Operator: make a general snapshot (every organization sees and uses it, none changes it)
        #[arg(long)]
        general: bool,
        #[command(flatten)]
        resources: ResourceArgs,
    },
    /// Make a snapshot of a local store image (pushed to the snapshot registry)
    Push {
        /// The store image
        image: String,
        /// NAME or NAME:VERSION (required)
        #[arg(short = 'n', long)]
        name: String,
        /// Entrypoint of the snapshot (JSON array or words)
        #[arg(short = 'e', long)]
        entrypoint: Option<String>,
        #[command(flatten)]
        resources: ResourceArgs,
    },
    /// Make a snapshot of a live sandbox's filesystem
    Commit {
        /// Sandbox id or name
        sandbox: String,
        /// NAME or NAME:VERSION of the new snapshot (required)
        #[arg(short = 'n', long)]
        name: String,
        #[command(flatten)]
        resources: ResourceArgs,
    },
    /// List snapshots
    List {
        /// Page number, from 1
        #[arg(short = 'p', long, default_value_t = 1)]
        page: u32,
        /// Snapshots per page
        #[arg(short = 'l', long, default_value_t = 100)]
        limit: u32,
        /// Only this state (pending, building, pulling, active, inactive, error, build_failed, removing)
        #[arg(long)]
        state: Option<String>,
        /// Only names starting with this
        #[arg(long = "name")]
        name_prefix: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show one snapshot (by id, NAME:VERSION, or NAME for the latest version)
    Get {
        /// Snapshot id, NAME:VERSION or NAME
        key: String,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Delete snapshots
    Delete {
        /// Snapshot ids, NAME:VERSION or NAME
        #[arg(required_unless_present = "all")]
        keys: Vec<String>,
        /// Delete all of the organization's snapshots
        #[arg(short = 'a', long, conflicts_with = "keys")]
        all: bool,
        /// Operator: delete these general snapshots
        #[arg(long, conflicts_with = "all")]
        general: bool,
    },
    /// Start a long-lived sandbox from a snapshot; prints its id last
    Sandbox {
        /// Snapshot id, NAME:VERSION or NAME
        #[arg(required_unless_present = "language", conflicts_with = "language")]
        key: Option<String>,
        /// Start from the general snapshot of this language (python, node, ...),
        /// as the operator's table ($CAIRN_LANGUAGE_SNAPSHOTS) maps it
        #[arg(long)]
        language: Option<String>,
        /// Make the snapshot available in this region first
        #[arg(long)]
        region: Option<String>,
        /// Name for the sandbox
        #[arg(long = "sandbox-name")]
        sandbox_name: Option<String>,
        /// Network of the sandbox: host or none (loopback only)
        #[arg(long, default_value = "host")]
        network: Network,
    },
    /// Print the kept creation (build) log of a snapshot
    Log {
        /// Snapshot id, NAME:VERSION or NAME
        key: String,
    },
}

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: SnapshotCommand,
}

pub fn run(root: Option<&Path>, args: SnapshotArgs) -> Result<(), CliError> {
    let store = open_store(root)?;
    let registry = args.common.registry.registry()?;
    let regions = Regions::load(args.common.regions_file.as_deref()).map_err(classify)?;
    let launcher = Launcher::current_exe().map_err(CliError::failed)?;
    let languages = LanguageSnapshots::from_env().map_err(CliError::bad_input)?;
    let db = SnapshotDb::parse(args.common.snapshot_db.as_deref().unwrap_or(""))
        .map_err(|e| CliError::bad_input(format!("--snapshot-db: {e}")))?;
    let svc = SnapshotService::open_with_db(&store, launcher, &registry, regions, &db)
        .map_err(classify)?
        .with_languages(languages);
    let org = args.common.org.as_str();
    let mut log = |line: &str| eprintln!("{line}");
    match args.command {
        SnapshotCommand::Create {
            name,
            dockerfile,
            contexts,
            image,
            entrypoint,
            build_args,
            general,
            resources,
        } => {
            check_create_flags(
                dockerfile.is_some(),
                !contexts.is_empty(),
                image.is_some(),
                entrypoint.is_some(),
            )?;
            let source = match (dockerfile, image) {
                (Some(path), None) => Source::Dockerfile {
                    path,
                    contexts,
                    build_args: parse_build_args(&build_args),
                },
                (None, Some(image)) => Source::Image(image),
                _ => {
                    return Err(CliError::bad_input(
                        "give exactly one of --dockerfile and --image",
                    ))
                }
            };
            let mut req = resources.request(name, entrypoint.as_deref())?;
            req.general = general;
            let snap = svc.create(org, source, req, &mut log).map_err(classify)?;
            print_one(&svc, &snap, Format::Table)
        }
        SnapshotCommand::Push {
            image,
            name,
            entrypoint,
            resources,
        } => {
            let req = resources.request(name, entrypoint.as_deref())?;
            let snap = svc
                .create(org, Source::LocalImage(image), req, &mut log)
                .map_err(classify)?;
            print_one(&svc, &snap, Format::Table)
        }
        SnapshotCommand::Commit {
            sandbox,
            name,
            resources,
        } => {
            let req = resources.request(name, None)?;
            let snap = svc
                .create(org, Source::Sandbox(sandbox), req, &mut log)
                .map_err(classify)?;
            print_one(&svc, &snap, Format::Table)
        }
        SnapshotCommand::List {
            page,
            limit,
            state,
            name_prefix,
            format,
        } => {
            let mut q = ListQuery::new(org);
            q.page = page;
            q.limit = limit;
            q.name_prefix = name_prefix;
            q.state = state
                .map(|s| {
                    s.parse::<SnapshotState>().map_err(|_| {
                        CliError::bad_input(format!("--state {s:?}: not a snapshot state"))
                    })
                })
                .transpose()?;
            let page = svc.list(&q).map_err(classify)?;
            let ids: Vec<String> = page.items.iter().map(|s| s.id.clone()).collect();
            let local = svc.local_states(&ids).map_err(classify)?;
            let shown = || -> Result<serde_json::Value, CliError> {
                let mut v = serde_json::to_value(&page).map_err(CliError::failed)?;
                v["runner"] = svc.runner_id().into();
                for (item, snap) in v["items"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                    .zip(&page.items)
                {
                    item["localState"] = local_state(&local, snap);
                }
                Ok(v)
            };
            match format {
                Format::Json => println!("{}", json(&shown()?)?),
                Format::Yaml => print!(
                    "{}",
                    cairn::snapshot::to_yaml(&shown()?).map_err(CliError::failed)?
                ),
                Format::Table => {
                    print_table(&page.items, &local);
                    eprintln!(
                        "page {} ({} per page) of {} snapshots in all",
                        page.page, page.limit, page.total
                    );
                }
            }
            Ok(())
        }
        SnapshotCommand::Get { key, format } => {
            let snap = svc.get(org, &key).map_err(classify)?;
            print_one(&svc, &snap, format)
        }
        SnapshotCommand::Delete { keys, all, general } => {
            let gone = if all {
                svc.delete_all(org).map_err(classify)?
            } else if general {
                let mut gone = Vec::new();
                for k in &keys {
                    gone.push(svc.delete_general(k).map_err(classify)?);
                }
                gone
            } else {
                let mut gone = Vec::new();
                for k in &keys {
                    gone.push(svc.delete(org, k).map_err(classify)?);
                }
                gone
            };
            for s in gone {
                eprintln!("deleted snapshot {} ({})", s.name, s.id);
            }
            Ok(())
        }
        SnapshotCommand::Sandbox {
            key,
            language,
            region,
            sandbox_name,
            network,
        } => {
            let snap = match (&key, &language) {
                (Some(key), _) => svc.get(org, key),
                (None, Some(language)) => svc.language_snapshot(org, language),
                (None, None) => return Err(CliError::bad_input("give a snapshot or --language")),
            }
            .map_err(classify)?;
            // The snapshot's cpu and mem apply (the library's default).
            let opts = CreateOptions {
                name: sandbox_name,
                network,
                resources: SandboxResources::default(),
                ephemeral: false,
                security: Default::default(),
            };
            let (snap, sandbox) = svc
                .start_sandbox(org, &snap.id, region.as_deref(), opts)
                .map_err(classify)?;
            for n in &sandbox.resources.not_applied {
                eprintln!("note: {n}");
            }
            eprintln!("sandbox from snapshot {} ({})", snap.name, snap.id);
            println!("{}", sandbox.id);
            Ok(())
        }
        SnapshotCommand::Log { key } => {
            print!("{}", svc.log(org, &key).map_err(classify)?);
            Ok(())
        }
    }
}

/// What the seed CLI refuses in `snapshot create`, with exit 2: a build
/// context without a Dockerfile, an entrypoint with one.
fn check_create_flags(
    dockerfile: bool,
    contexts: bool,
    image: bool,
    entrypoint: bool,
) -> Result<(), CliError> {
    if image && contexts {
        return Err(CliError::bad_input(
            "--context goes with --dockerfile: an --image snapshot has no build context",
        ));
    }
    if entrypoint && (dockerfile || contexts) {
        return Err(CliError::bad_input(
            "--entrypoint cannot be used with --dockerfile or --context: put ENTRYPOINT in the Dockerfile",
        ));
    }
    Ok(())
}

fn parse_build_args(args: &[String]) -> BTreeMap<String, String> {
    args.iter()
        .filter_map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
            _ => std::env::var(kv).ok().map(|v| (kv.clone(), v)),
        })
        .collect()
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(v).map_err(CliError::failed)
}

/// What this runner holds of `snap` (`pulling`, `active`, `error`), or
/// null if it never took it: shown next to the shared `state`.
fn local_state(local: &HashMap<String, SnapshotState>, snap: &Snapshot) -> serde_json::Value {
    local
        .get(&snap.id)
        .map_or(serde_json::Value::Null, |s| s.as_str().into())
}

fn print_one(svc: &SnapshotService<'_>, snap: &Snapshot, format: Format) -> Result<(), CliError> {
    let local = svc
        .local_states(std::slice::from_ref(&snap.id))
        .map_err(classify)?;
    let shown = || -> Result<serde_json::Value, CliError> {
        let mut v = serde_json::to_value(snap).map_err(CliError::failed)?;
        v["runner"] = svc.runner_id().into();
        v["localState"] = local_state(&local, snap);
        Ok(v)
    };
    match format {
        Format::Json => println!("{}", json(&shown()?)?),
        Format::Yaml => print!(
            "{}",
            cairn::snapshot::to_yaml(&shown()?).map_err(CliError::failed)?
        ),
        Format::Table => print_table(std::slice::from_ref(snap), &local),
    }
    Ok(())
}

/// The table: the shared state, and under LOCAL this runner's (`-`: it
/// does not hold the image).
fn print_table(items: &[Snapshot], local: &HashMap<String, SnapshotState>) {
    println!(
        "{:<36}  {:<28}  {:<12}  {:<8}  {:<18}  {:>9}  CREATED",
        "ID", "NAME", "STATE", "LOCAL", "RESOURCES", "SIZE"
    );
    for s in items {
        let res = format!("{}cpu {}GB {}GB-disk", s.cpu, s.mem, s.disk);
        let created = s
            .created_at
            .get(..19)
            .unwrap_or(&s.created_at)
            .replace('T', " ");
        println!(
            "{:<36}  {:<28}  {:<12}  {:<8}  {:<18}  {:>9}  {}",
            s.id,
            s.name,
            s.state.as_str(),
            local.get(&s.id).map_or("-", |l| l.as_str()),
            res,
            cairn::store::size::format_size(s.size),
            created
        );
    }
}
