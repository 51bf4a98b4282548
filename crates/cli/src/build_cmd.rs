//! `cairn build`: a Dockerfile and a context into an image in the store.

use crate::exit::CliError;
mod progress;

use cairn::build::{BuildError, BuildRequest, Builder, CancelToken, Secret};
use cairn::layer::Compression;
use cairn::sandbox::{Launcher, Network};
use clap::Args;
use progress::{install_signal_handlers, signalled, ProgressMode, Renderer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name the result NAME[:TAG] (repeatable)
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Set a build argument (repeatable)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Build only up to this stage
    #[arg(long)]
    target: Option<String>,
    /// Run every step, ignoring the build cache
    #[arg(long)]
    no_cache: bool,
    /// Layer compression
    #[arg(long, default_value = "gzip")]
    compression: Compression,
    /// Set every timestamp to this Unix time (default: $SOURCE_DATE_EPOCH)
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    timestamp: Option<i64>,
    /// Network for RUN steps
    #[arg(long, default_value = "host")]
    network: Network,
    /// Build for this platform (os/arch[/variant]): picks registry bases'
    /// image and sets TARGETPLATFORM (default: this machine's)
    #[arg(long)]
    platform: Option<String>,
    /// Give RUN --mount=type=secret a secret: id=ID plus src=FILE or env=VAR
    /// (repeatable; neither: $ID if set, else the file ID)
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    secrets: Vec<String>,
    /// Export the result too: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:TAG]
    #[arg(long)]
    output: Option<String>,
    /// Push the result to every -t name once built
    #[arg(long)]
    push: bool,
    /// Progress output on stderr: plain lines, JSON lines, or (auto) a live
    /// view on a terminal and plain lines otherwise
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    #[command(flatten)]
    registry: crate::registry_cmds::RegistryFlags,
    #[command(flatten)]
    run_limits: RunLimitArgs,
    /// The build context directory
    context: PathBuf,
}

pub fn run(root: Option<&Path>, args: BuildArgs) -> Result<(), CliError> {
    let mut build_args = HashMap::new();
    for kv in &args.build_args {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => build_args.insert(k.to_string(), v.to_string()),
            // `--build-arg NAME` takes the value from the environment, as Docker does.
            _ => match std::env::var(kv) {
                Ok(v) => build_args.insert(kv.clone(), v),
                Err(_) => continue,
            },
        };
    }
    if !args.context.is_dir() {
        return Err(CliError::bad_input(format!(
            "build context {} is not a directory",
            args.context.display()
        )));
    }
    let dockerfile_path = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let dockerfile = std::fs::read_to_string(&dockerfile_path)
        .map_err(|e| CliError::bad_input(format!("{}: {e}", dockerfile_path.display())))?;
    let output = match &args.output {
        Some(o) => Some(cairn::store::transport::Transport::parse(o).map_err(CliError::bad_input)?),
        None => None,
    };
    let store = crate::exit::open_store(root)?;
    if args.push && args.tags.is_empty() {
        return Err(CliError::bad_input(
            "--push needs at least one -t NAME to push to",
        ));
    }
    let registry = args.registry.registry()?;
    let cancel = CancelToken::new();
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<Result<_, _>>()?;
    let mut builder = Builder::new(&store, Launcher::current_exe().map_err(CliError::failed)?)
        .with_registry(&registry)
        .with_cancel(cancel.clone())
        .with_secrets(secrets);
    if let Some(p) = &args.platform {
        let platform = p
            .parse()
            .map_err(|e| CliError::bad_input(format!("--platform {p:?}: {e}")))?;
        builder = builder.with_platform(platform);
    }
    let push_to = args.push.then(|| args.tags.clone());
    let req = BuildRequest {
        dockerfile,
        dockerfile_path,
        context: args.context,
        tags: args.tags,
        build_args,
        target: args.target,
        no_cache: args.no_cache,
        compression: args.compression,
        timestamp: args.timestamp,
        network: args.network,
        run_policy: args.run_limits.policy()?,
        organization: None,
    };
    let started = Instant::now();
    // SIGINT/SIGTERM cancel the build: the running RUN is killed, nothing is tagged.
    let signals = install_signal_handlers(cancel);
    let mut renderer = Renderer::new(args.progress);
    let result = builder.build_with_events(&req, &mut |event| renderer.event(event));
    drop(signals);
    renderer.finish();
    // A Ctrl-C on the terminal also reaches the RUN's processes, which may
    // die of it before the build sees its token: a failure then is the cancel.
    if matches!(result, Err(BuildError::Cancelled)) || result.is_err() && signalled() {
        eprintln!("cairn: build cancelled");
        return Err(CliError::exit_code(130));
    }
    let result = result.map_err(|e: BuildError| {
        if e.is_bad_input() {
            CliError::bad_input(e)
        } else {
            CliError::failed(e)
        }
    })?;
    if let Some(out) = output {
        store
            .export(&result.manifest.to_string(), &out)
            .map_err(CliError::failed)?;
    }
    if args.progress != ProgressMode::Json {
        eprintln!("built in {:.2}s", started.elapsed().as_secs_f64());
    }
    println!("{}", result.manifest);
    if let Some(dests) = push_to {
        crate::registry_cmds::push_to(&registry, &store, &result.manifest.to_string(), &dests)?;
    }
    Ok(())
}

/// One `--secret` value, as `docker buildx build --secret` reads it.
fn parse_secret(value: &str) -> Result<(String, Secret), CliError> {
    let bad = |why: &str| CliError::bad_input(format!("--secret {value:?}: {why}"));
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for field in value.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| bad(&format!("{field:?} is not KEY=VALUE")))?;
        match k {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" if v == "file" || v == "env" => kind = Some(v.to_string()),
            "type" => return Err(bad(&format!("type={v}: expected file or env"))),
            other => return Err(bad(&format!("unknown key {other:?}"))),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad("needs id=ID"))?;
    let secret = match (kind.as_deref(), src, env) {
        (_, _, Some(var)) => Secret::Env(var),
        (Some("env"), src, None) => Secret::Env(src.unwrap_or_else(|| id.clone())),
        (_, Some(path), None) => Secret::File(PathBuf::from(path)),
        (Some("file"), None, None) => Secret::File(PathBuf::from(&id)),
        (_, None, None) if std::env::var_os(&id).is_some() => Secret::Env(id.clone()),
        (_, None, None) => Secret::File(PathBuf::from(&id)),
    };
    if let Secret::File(path) = &secret {
        if !path.is_file() {
            return Err(bad(&format!("{} is not a readable file", path.display())));
        }
    }
    Ok((id, secret))
}

/// `--allow`, `--memory`, `--cpus`, `--timeout`, `--pids-limit` of `cairn build`.
#[derive(clap::Args)]
struct RunLimitArgs {
    /// Grant an entitlement to RUN steps: network.host (RUN --network=host
    /// under --network none), repeatable
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// Memory limit of each RUN step (bytes, or with k, m, g suffix)
    #[arg(long = "memory", short = 'm', value_name = "SIZE")]
    memory: Option<String>,
    /// CPUs of each RUN step (e.g. 1.5)
    #[arg(long = "cpus")]
    cpus: Option<f64>,
    /// Fail a RUN step that runs longer than this many seconds
    #[arg(long = "timeout", value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Maximum processes of each RUN step (default 2048)
    #[arg(long = "pids-limit")]
    pids_limit: Option<u64>,
}

impl RunLimitArgs {
    fn policy(&self) -> Result<cairn::build::RunPolicy, CliError> {
        let mut policy = cairn::build::RunPolicy::default();
        for a in &self.allow {
            policy.allow(a).map_err(CliError::bad_input)?;
        }
        policy.memory_bytes = self.memory.as_deref().map(parse_size).transpose()?;
        policy.cpus = match self.cpus {
            Some(c) if !(c.is_finite() && c > 0.0) => {
                return Err(CliError::bad_input(format!(
                    "--cpus {c}: expected a positive number"
                )))
            }
            c => c,
        };
        policy.timeout = match self.timeout {
            Some(t) if t.is_finite() && t > 0.0 => Some(std::time::Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(CliError::bad_input(format!(
                    "--timeout {t}: expected a positive number of seconds"
                )))
            }
            None => None,
        };
        if self.pids_limit == Some(0) {
            return Err(CliError::bad_input("--pids-limit 0: expected at least 1"));
        }
        policy.pids = self.pids_limit;
        Ok(policy)
    }
}

/// `512m`, `2g`, `1048576`, as Docker's --memory takes them.
fn parse_size(text: &str) -> Result<u64, CliError> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => n
            .checked_mul(mult)
            .ok_or_else(|| CliError::bad_input(format!("--memory {text:?}: too large"))),
        _ => Err(CliError::bad_input(format!(
            "--memory {text:?}: expected a size such as 512m or 2g"
        ))),
    }
}
