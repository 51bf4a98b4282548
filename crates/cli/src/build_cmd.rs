//! `cairn build`: a Dockerfile and a context into an image in the store.

use crate::exit::CliError;
mod plan_output;
mod progress;
mod relabel;
mod source;

use cairn::build::{BuildError, BuildRequest, Builder, CancelToken, Secret};
use cairn::layer::Compression;
use cairn::sandbox::{Launcher, Network};
use clap::Args;
use progress::{install_signal_handlers, signalled, ProgressMode, Renderer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `--pull`: when FROM images are fetched from their registry.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull every FROM image, even one already in the store
    Always,
    /// Pull only the FROM images the store does not have (the default)
    Missing,
    /// Never pull: a FROM image missing from the store is an error
    Never,
}

#[derive(Args)]
pub struct BuildArgs {
    /// The Dockerfile ("-" for standard input; default: CONTEXT/Dockerfile,
    /// else CONTEXT/Containerfile)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Name the result NAME[:TAG] (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// Set a build argument (repeatable)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Build only up to this stage
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Run every step, ignoring the build cache
    #[arg(long)]
    no_cache: bool,
    /// Print the plan (one line per step: hit, miss and why, or config)
    /// and change nothing: no RUN, no layer, no tag, no pull
    #[arg(long)]
    dry_run: bool,
    /// Say why each step that ran missed the cache (the first input that
    /// differs from the step's last build)
    #[arg(long)]
    explain: bool,
    /// Layer compression
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
    compression: String,
    /// Set every timestamp to this Unix time (default: $SOURCE_DATE_EPOCH)
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "EPOCH")]
    timestamp: Option<i64>,
    /// Network for RUN steps: host (share the host's) or none (loopback only)
    #[arg(long, default_value = "host", value_parser = ["host", "none"])]
    network: String,
    /// Give RUN --mount=type=secret a secret: id=ID plus src=FILE or env=VAR
    /// (repeatable; neither: $ID if set, else the file ID)
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    secrets: Vec<String>,
    /// Export the result too: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:TAG]
    #[arg(long, value_name = "TRANSPORT:PATH")]
    output: Option<String>,
    /// Push the result to every -t name once built
    #[arg(long)]
    push: bool,
    /// Progress output on stderr: plain lines, JSON lines, or (auto) a live
    /// view on a terminal and plain lines otherwise
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Print only the image digest (no progress; same as --progress quiet)
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Write the image digest to this file too
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Set a label in the image config (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Set an annotation in the image manifest (repeatable)
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// When to pull FROM images; `--pull` alone means always
    #[arg(long, value_enum, num_args = 0..=1, default_value = "missing", default_missing_value = "always", require_equals = true)]
    pull: PullPolicy,
    /// The platform whose image a FROM pull picks (os/arch[/variant])
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    /// Result format on stdout: the digest (text) or a JSON report
    #[arg(long, value_enum, default_value = "text")]
    format: crate::registry_cmds::ResultFormat,
    #[command(flatten)]
    registry: crate::registry_cmds::RegistryFlags,
    #[command(flatten)]
    run_limits: RunLimitArgs,
    /// Use a registry build cache: type=registry,ref=REG/REPO:TAG (repeatable)
    #[arg(long = "cache-from", value_name = "type=registry,ref=REF")]
    cache_from: Vec<String>,
    /// Export the build cache to a registry:
    /// type=registry,ref=REG/REPO:TAG[,mode=min|max][,ignore-error=true|false] (repeatable)
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF[,mode=MODE]")]
    cache_to: Vec<String>,
    /// The build context directory
    #[arg(default_value = ".")]
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
    let (dockerfile, dockerfile_path) = source::dockerfile(args.file.as_deref(), &args.context)?;
    let labels = relabel::parse_pairs("--label", &args.labels)?;
    let annotations = relabel::parse_pairs("--annotation", &args.annotations)?;
    let compression: Compression = args.compression.parse().map_err(CliError::bad_input)?;
    let network: Network = args.network.parse().map_err(CliError::bad_input)?;
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
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
    // One platform for both: the registry's pulls and the build's stages.
    let platform: Option<cairn::registry::Platform> = match &args.platform {
        Some(p) => Some(
            p.parse()
                .map_err(|e| CliError::bad_input(format!("--platform {p:?}: {e}")))?,
        ),
        None => None,
    };
    let mut reg_opts = args.registry.options()?;
    if let Some(p) = &platform {
        reg_opts.platform = p.clone();
    }
    let registry = cairn::registry::Registry::new(reg_opts).map_err(crate::exit::classify)?;
    if args.pull == PullPolicy::Always && !args.dry_run {
        pull_bases(&registry, &store, &dockerfile, mode)?;
    }
    let cancel = CancelToken::new();
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<Result<_, _>>()?;
    let mut builder = Builder::new(&store, Launcher::current_exe().map_err(CliError::failed)?);
    if args.pull != PullPolicy::Never {
        builder = builder.with_registry(&registry);
    }
    let builder = builder.with_cancel(cancel.clone()).with_secrets(secrets);
    let builder = match platform {
        Some(p) => builder.with_platform(p),
        None => builder,
    };
    let push_to = args.push.then(|| args.tags.clone());
    // With labels or annotations the image is tagged once they are on it.
    let relabelled = !(labels.is_empty() && annotations.is_empty());
    let req = BuildRequest {
        dockerfile,
        dockerfile_path,
        context: args.context,
        tags: if relabelled {
            vec![]
        } else {
            args.tags.clone()
        },
        build_args,
        target: args.target,
        no_cache: args.no_cache,
        compression,
        timestamp: args.timestamp,
        network,
        run_policy: args.run_limits.policy()?,
        organization: None,
        cache_from: parse_all(&args.cache_from)?,
        cache_to: parse_all(&args.cache_to)?,
        cancel: None,
    };
    if args.dry_run {
        return plan_output::dry_run(&builder, &req, mode, args.format);
    }
    let started = Instant::now();
    // SIGINT/SIGTERM cancel the build: the running RUN is killed, nothing is tagged.
    let signals = install_signal_handlers(cancel);
    let renderer = Arc::new(Mutex::new(Renderer::new(mode).with_explain(args.explain)));
    let ticker = Ticker::start(&renderer);
    let result = builder.build_with_events(&req, &mut |event| {
        if let Ok(mut r) = renderer.lock() {
            r.event(event)
        }
    });
    drop(ticker);
    drop(signals);
    if let Ok(mut r) = renderer.lock() {
        r.finish();
    }
    // A Ctrl-C on the terminal also reaches the RUN's processes, which may
    // die of it before the build sees its token: a failure then is the cancel.
    if matches!(result, Err(BuildError::Cancelled)) || result.is_err() && signalled() {
        eprintln!("cairn: build cancelled");
        return Err(CliError::exit_code(130));
    }
    let result = result.map_err(build_failure)?;
    let digest = if relabelled {
        let d = relabel::relabel(&store, &result.manifest, &labels, &annotations)?;
        let tags = args
            .tags
            .iter()
            .map(|t| cairn::store::ImageRef::parse(t).map(|r| (r, d)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(crate::exit::classify)?;
        store.tag_many(&tags).map_err(crate::exit::classify)?;
        d
    } else {
        result.manifest
    };
    if let Some(out) = output {
        store
            .export(&digest.to_string(), &out)
            .map_err(CliError::failed)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if !matches!(mode, ProgressMode::Json | ProgressMode::Quiet) {
        eprintln!("built in {seconds:.2}s");
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, digest.to_string())
            .map_err(|e| CliError::io(format!("writing the --iidfile {}", f.display()), e))?;
    }
    match args.format {
        crate::registry_cmds::ResultFormat::Text => println!("{digest}"),
        crate::registry_cmds::ResultFormat::Json => {
            let size = store
                .images()
                .ok()
                .and_then(|all| all.into_iter().find(|i| i.digest == digest))
                .map(|i| i.size);
            let steps: Vec<_> = result
                .steps
                .iter()
                .map(|s| serde_json::json!({"stage": s.stage, "line": s.line, "text": s.text, "outcome": s.outcome}))
                .collect();
            let v = serde_json::json!({
                "digest": digest.to_string(),
                "tags": args.tags,
                "size": size,
                "seconds": seconds,
                "steps": steps,
            });
            println!("{v}");
        }
    }
    if let Some(dests) = push_to {
        let output = crate::registry_cmds::OutputFlags::quiet_text(args.quiet);
        crate::registry_cmds::push_to(&registry, &store, &digest.to_string(), &dests, output)?;
    }
    Ok(())
}

/// A failed build as the CLI reports it, by the error's kind: exit 2 for
/// bad input (a bad or missing thing named), else 1 (a failed step, a
/// registry down, a bug).
fn build_failure(e: BuildError) -> CliError {
    if e.kind().is_bad_input() {
        CliError::bad_input(e)
    } else {
        CliError::failed(e)
    }
}

/// Moves the live view's clocks forward every 200 ms while a build runs.
struct Ticker(Arc<AtomicBool>);

impl Ticker {
    fn start(renderer: &Arc<Mutex<Renderer>>) -> Option<Ticker> {
        if !renderer.lock().is_ok_and(|r| r.is_live()) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (stopped, renderer) = (stop.clone(), renderer.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut r) = renderer.lock() {
                    r.tick();
                }
            }
        });
        Some(Ticker(stop))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `--pull=always`: fetch every FROM base that names a registry image
/// (not scratch, a stage, an oci: path, or one built from ARGs).
fn pull_bases(
    registry: &cairn::registry::Registry,
    store: &cairn::store::Store,
    dockerfile: &str,
    mode: ProgressMode,
) -> Result<(), CliError> {
    let doc = cairn::dockerfile::parse(dockerfile)
        .map_err(|e| CliError::bad_input(format!("Dockerfile:{e}")))?;
    let stages: Vec<String> = doc.stages.iter().filter_map(|s| s.name.clone()).collect();
    for stage in &doc.stages {
        let base = stage.base.as_str();
        let skip = base.eq_ignore_ascii_case("scratch")
            || base.contains('$')
            || base.starts_with("oci:")
            || base.starts_with("oci-archive:")
            || stages.iter().any(|s| s.eq_ignore_ascii_case(base));
        if skip {
            continue;
        }
        let report = registry
            .pull(store, base, None)
            .map_err(crate::exit::classify)?;
        if !matches!(mode, ProgressMode::Quiet | ProgressMode::Json) {
            eprintln!("pulled {base}: {}", report.manifest);
        }
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

/// `--cache-from` / `--cache-to` values (BuildKit's syntax); exit 2 on a bad one.
fn parse_all<T: std::str::FromStr<Err = String>>(values: &[String]) -> Result<Vec<T>, CliError> {
    values
        .iter()
        .map(|v| v.parse().map_err(CliError::bad_input))
        .collect()
}

// `--allow`, `--memory`, `--cpus`, `--timeout`, `--pids-limit` of `cairn build`.
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
            policy
                .allow(a)
                .map_err(|e| CliError::bad_input(format!("--allow: {e}")))?;
        }
        policy.memory_bytes = self
            .memory
            .as_deref()
            .map(crate::run_cmd::options::parse_memory_bytes)
            .transpose()?;
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
