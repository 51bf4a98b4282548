//! `cairn pull`, `cairn push`, `cairn login`, `cairn logout`.

use crate::exit::{classify, open_store, CliError};
use cairn::registry::auth::AuthFiles;
use cairn::registry::{LayerSink, Regions, Registry, RegistryOptions};
use cairn::sandbox::manager::SandboxManager;
use cairn::sandbox::Launcher;
use cairn::snapshot::service::Extractor;
use cairn::store::{ImageRef, Store};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

// How to reach registries; shared by every command that talks to one.
#[derive(Args, Clone, Default)]
pub struct RegistryFlags {
    /// false: allow plain HTTP and unverified TLS for every registry
    /// (loopback registries and $CAIRN_INSECURE_REGISTRIES always are)
    #[arg(long = "tls-verify", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    tls_verify: Option<bool>,
    /// Credentials file to read (and, for login, write) instead of the usual ones
    #[arg(long, env = "REGISTRY_AUTH_FILE")]
    authfile: Option<PathBuf>,
    /// USER:PASSWORD to use for this command only
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
}

impl RegistryFlags {
    pub fn options(&self) -> Result<RegistryOptions, CliError> {
        let mut o = RegistryOptions::from_env();
        o.tls_verify = self.tls_verify;
        if let Some(f) = &self.authfile {
            o.auth = AuthFiles::with_authfile(f.clone());
        }
        if let Some(c) = &self.creds {
            let (u, p) = c
                .split_once(':')
                .filter(|(u, _)| !u.is_empty())
                .ok_or_else(|| CliError::bad_input("--creds takes USER:PASSWORD"))?;
            o.credentials = Some((u.to_string(), p.to_string()));
        }
        Ok(o)
    }

    pub fn registry(&self) -> Result<Registry, CliError> {
        Registry::new(self.options()?).map_err(classify)
    }
}

#[derive(Args)]
pub struct PullArgs {
    /// The image: [REGISTRY/]REPOSITORY[:TAG|@DIGEST]
    reference: String,
    /// The platform to pick from a multi-platform image (os/arch[/variant];
    /// default: this machine's)
    #[arg(long)]
    platform: Option<String>,
    /// Only fetch the blobs; leave layer extraction to the first sandbox
    #[arg(long)]
    no_unpack: bool,
    #[command(flatten)]
    output: OutputFlags,
    #[command(flatten)]
    registry: RegistryFlags,
}

// What pull and push print: a summary (text) or one JSON object on stdout,
// and progress on stderr when it is a terminal.
#[derive(Args, Clone, Copy)]
pub struct OutputFlags {
    /// Result format on stdout: the digest (text) or a JSON report
    #[arg(long, value_enum, default_value = "text")]
    format: ResultFormat,
    /// No progress and no summary on stderr
    #[arg(short = 'q', long)]
    quiet: bool,
}

impl OutputFlags {
    /// Text results, quiet or not (for pushes that another command starts).
    pub fn quiet_text(quiet: bool) -> OutputFlags {
        OutputFlags {
            format: ResultFormat::Text,
            quiet,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultFormat {
    /// The manifest digest alone
    Text,
    /// A JSON object: digest, sizes, counts, seconds
    Json,
}

pub fn pull(root: Option<&Path>, args: PullArgs) -> Result<(), CliError> {
    let mut opts = args.registry.options()?;
    if let Some(p) = &args.platform {
        opts.platform = p.parse().map_err(classify)?;
    }
    let registry = Registry::new(opts).map_err(classify)?;
    let started = Instant::now();
    // The registry's side before the layers (clients, manifest, config:
    // round trips, all in memory) and the store's opening (a new store's
    // fsyncs) wait on different things: do them at once. The store's
    // error, if any, is the one reported.
    let (store, resolved) = std::thread::scope(|s| {
        let resolving = s.spawn(|| registry.resolve(&args.reference));
        let span = cairn::layer::timing::span("pull.open_store");
        let store = open_store(root);
        drop(span);
        let resolved = resolving.join();
        (store, resolved)
    });
    let store = store?;
    let resolved = match resolved {
        Ok(r) => r.map_err(classify)?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let launcher = Launcher::current_exe().map_err(CliError::failed)?;
    let extractor = Extractor(SandboxManager::new(&store, launcher));
    let sink: Option<&dyn LayerSink> = if args.no_unpack {
        None
    } else {
        Some(&extractor)
    };
    let view = crate::transfer_progress::TransferView::new(args.output.quiet);
    let progress: Option<&dyn cairn::registry::PullProgress> = view.as_ref().map(|v| v as _);
    let result = registry.pull_resolved(&store, resolved, sink, progress);
    if let Some(v) = &view {
        v.finish();
    }
    let report = result.map_err(classify)?;
    let seconds = started.elapsed().as_secs_f64();
    if !args.output.quiet {
        eprintln!(
            "pulled {}: {} blobs fetched ({}), {} already here, {} retries, {seconds:.2}s",
            report.reference,
            report.blobs_fetched,
            cairn::store::size::format_size(report.bytes_fetched),
            report.blobs_present,
            report.retries,
        );
    }
    match args.output.format {
        ResultFormat::Text => println!("{}", report.manifest),
        ResultFormat::Json => {
            let mut v = serde_json::to_value(&report).map_err(CliError::failed)?;
            v["digest"] = serde_json::json!(report.manifest.to_string());
            v["seconds"] = serde_json::json!(seconds);
            println!("{v}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct PushArgs {
    /// The store image to push (name or digest)
    image: String,
    /// Where to: [REGISTRY/]REPOSITORY[:TAG] (default: the image's own name)
    dest: Option<String>,
    /// Push to this region's registry instead (repeatable; in parallel)
    #[arg(long = "region", value_name = "ID")]
    regions: Vec<String>,
    /// The regions file (default: $CAIRN_REGIONS, ~/.config/cairn/regions.toml, /etc/cairn/regions.toml)
    #[arg(long, value_name = "FILE")]
    regions_file: Option<PathBuf>,
    #[command(flatten)]
    output: OutputFlags,
    #[command(flatten)]
    registry: RegistryFlags,
}

pub fn push(root: Option<&Path>, args: PushArgs) -> Result<(), CliError> {
    let registry = args.registry.registry()?;
    let store = open_store(root)?;
    if args.regions.is_empty() {
        let dest = args.dest.clone().unwrap_or_else(|| args.image.clone());
        return push_to(&registry, &store, &args.image, &[dest], args.output);
    }
    let regions = Regions::load(args.regions_file.as_deref()).map_err(classify)?;
    let name = match &args.dest {
        Some(d) => d.clone(),
        None => short_name(&args.image)?,
    };
    let dests = args
        .regions
        .iter()
        .map(|r| regions.destination(r, &name).map(|d| d.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(classify)?;
    push_to(&registry, &store, &args.image, &dests, args.output)
}

/// `docker.io/library/app:1` -> `app:1`; `host/team/app:1` -> `team/app:1`.
fn short_name(image: &str) -> Result<String, CliError> {
    let r = ImageRef::parse(image).map_err(|e| {
        CliError::bad_input(format!(
            "{e}; with --region and no DEST, IMAGE must be a name"
        ))
    })?;
    let repo = r
        .repository()
        .strip_prefix("library/")
        .unwrap_or(r.repository());
    Ok(format!("{repo}:{}", r.tag().unwrap_or("latest")))
}

/// Push one image to each destination at once; report each, fail if any did.
pub fn push_to(
    registry: &Registry,
    store: &Store,
    image: &str,
    dests: &[String],
    output: OutputFlags,
) -> Result<(), CliError> {
    let parsed = dests
        .iter()
        .map(|d| cairn::registry::parse_ref(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(classify)?;
    let started = Instant::now();
    let view = crate::transfer_progress::TransferView::new(output.quiet);
    let progress: Option<&dyn cairn::registry::PullProgress> = view.as_ref().map(|v| v as _);
    let results = registry.push_many_with_progress(store, image, &parsed, progress);
    if let Some(v) = &view {
        v.finish();
    }
    let results = results.map_err(classify)?;
    let mut failures = Vec::new();
    for (dest, result) in dests.iter().zip(results) {
        match result {
            Ok(r) if output.format == ResultFormat::Json => {
                let mut v = serde_json::to_value(&r).map_err(CliError::failed)?;
                v["digest"] = serde_json::json!(r.manifest.to_string());
                v["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
                println!("{v}");
            }
            Ok(r) if output.quiet => println!("{}", r.manifest),
            Ok(r) => {
                eprintln!(
                    "pushed {dest}: {} blobs uploaded ({}), {} mounted, {} already there, {} retries, {:.2}s",
                    r.blobs_uploaded,
                    cairn::store::size::format_size(r.bytes_uploaded),
                    r.blobs_mounted,
                    r.blobs_present,
                    r.retries,
                    started.elapsed().as_secs_f64()
                );
                println!("{}", r.manifest);
            }
            Err(e) => failures.push(e),
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(classify(failures.remove(0))),
        n => Err(CliError::failed(format!(
            "{n} pushes failed: {}",
            failures
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

#[derive(Args)]
pub struct LoginArgs {
    /// The registry host[:port]
    registry: String,
    /// User name (asked for when not given)
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password (visible in the process list: prefer --password-stdin)
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    /// Store the credentials without checking them against the registry
    #[arg(long)]
    no_verify: bool,
    #[command(flatten)]
    registry_flags: RegistryFlags,
}

pub fn login(args: LoginArgs) -> Result<(), CliError> {
    let host = registry_host(&args.registry)?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut ask = |prompt: &str| -> Result<String, CliError> {
        if std::io::stdin().is_terminal() {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
        }
        match lines.next() {
            Some(Ok(l)) => Ok(l.trim_end_matches('\r').to_string()),
            _ => Err(CliError::bad_input(format!(
                "login {host}: no {} given",
                prompt.trim_end_matches(": ").to_lowercase()
            ))),
        }
    };
    let username = match args.username {
        Some(u) => u,
        None => ask("Username: ")?,
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => {
            return Err(CliError::bad_input(
                "--password and --password-stdin exclude each other",
            ))
        }
        (Some(p), false) => p,
        (None, _) => ask("Password: ")?,
    };
    if username.is_empty() || password.is_empty() {
        return Err(CliError::bad_input(format!(
            "login {host}: the username and password must not be empty"
        )));
    }
    let opts = args.registry_flags.options()?;
    if !args.no_verify {
        Registry::new(opts.clone())
            .map_err(classify)?
            .check_login(&host, &username, &password)
            .map_err(classify)?;
    }
    let place = opts
        .auth
        .login(&host, &username, &password)
        .map_err(CliError::failed)?;
    eprintln!("Login Succeeded (credentials for {host} stored in {place})");
    Ok(())
}

#[derive(Args)]
pub struct LogoutArgs {
    /// The registry host[:port]
    #[arg(required_unless_present = "all")]
    registry: Option<String>,
    /// Remove the credentials of every registry in the credential files
    #[arg(short = 'a', long, conflicts_with = "registry")]
    all: bool,
    #[command(flatten)]
    registry_flags: RegistryFlags,
}

pub fn logout(args: LogoutArgs) -> Result<(), CliError> {
    let opts = args.registry_flags.options()?;
    let Some(registry) = &args.registry else {
        return logout_all(&opts.auth);
    };
    let host = registry_host(registry)?;
    if opts.auth.logout(&host).map_err(CliError::failed)? {
        eprintln!("Removed login credentials for {host}");
        Ok(())
    } else {
        Err(CliError::bad_input(format!("not logged in to {host}")))
    }
}

/// `logout --all`: every `auths` entry of every credential file Cairn
/// reads, through the same removal as one registry (helpers included).
fn logout_all(auth: &AuthFiles) -> Result<(), CliError> {
    let mut hosts = std::collections::BTreeSet::new();
    for file in auth.search_order() {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CliError::io(format!("reading {}", file.display()), e)),
        };
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CliError::bad_input(format!("{}: not JSON: {e}", file.display())))?;
        if let Some(auths) = doc["auths"].as_object() {
            hosts.extend(auths.keys().cloned());
        }
    }
    for key in &hosts {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or(key);
        auth.logout(host).map_err(CliError::failed)?;
        eprintln!("Removed login credentials for {host}");
    }
    Ok(())
}

/// `https://host:5000/` or `host:5000` -> `host:5000`.
fn registry_host(input: &str) -> Result<String, CliError> {
    let host = input
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let valid = !host.is_empty()
        && !host.contains('/')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    if valid {
        Ok(host.to_string())
    } else {
        Err(CliError::bad_input(format!(
            "{input:?} is not a registry host[:port]"
        )))
    }
}
