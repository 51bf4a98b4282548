//! `cairn inspect` (an image, sandbox or snapshot as JSON, or fields of it
//! through a Go-template-like `--format`) and `cairn history`.

mod template;

use crate::exit::{classify, open_store, CliError};
use cairn::registry::{Regions, Registry, RegistryOptions};
use cairn::sandbox::manager::SandboxManager;
use cairn::snapshot::SnapshotService;
use cairn::store::{size, Store};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// An image in the store (name, digest or digest prefix)
    Image,
    /// A sandbox (id, id prefix or name)
    Sandbox,
    /// A snapshot (id, NAME:VERSION or NAME)
    Snapshot,
}

#[derive(Args)]
pub struct InspectArgs {
    /// What to look for; without it: an image, else a sandbox, else a snapshot
    #[arg(long = "type", value_enum)]
    kind: Option<Kind>,
    /// Print this Go template for each object instead of JSON, e.g.
    /// '{{range .Config.Env}}{{println .}}{{end}}', '{{index .Config.Labels "k"}}',
    /// '{{json .Manifest.layers}}' (also if/else, join, len, print, upper, lower)
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// The organization whose snapshots to look in
    #[arg(long, env = "CAIRN_ORG", default_value = "default")]
    org: String,
    /// Names or ids of what to inspect
    #[arg(required = true, value_name = "NAME|ID")]
    targets: Vec<String>,
}

pub fn inspect(root: Option<&Path>, args: InspectArgs) -> Result<(), CliError> {
    let store = open_store(root)?;
    let mut found = Vec::new();
    for target in &args.targets {
        found.push(find(&store, target, args.kind, &args.org)?);
    }
    match &args.format {
        None => {
            let text = serde_json::to_string_pretty(&Value::Array(found))
                .map_err(|e| CliError::failed(format!("rendering JSON: {e}")))?;
            println!("{text}");
        }
        Some(t) => {
            let template = template::Template::parse(t)?;
            for v in &found {
                println!("{}", template.render(v)?);
            }
        }
    }
    Ok(())
}

/// The first kind (in image, sandbox, snapshot order) that knows `target`.
fn find(store: &Store, target: &str, kind: Option<Kind>, org: &str) -> Result<Value, CliError> {
    let kinds = match kind {
        Some(k) => vec![k],
        None => vec![Kind::Image, Kind::Sandbox, Kind::Snapshot],
    };
    let mut last = None;
    for k in kinds {
        let got = match k {
            Kind::Image => image(store, target),
            Kind::Sandbox => sandbox(store, target),
            Kind::Snapshot => snapshot(store, target, org),
        };
        match got {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    match (kind, last) {
        (Some(_), Some(e)) => Err(e),
        _ => Err(CliError::bad_input(format!(
            "no such image, sandbox or snapshot: {target}"
        ))),
    }
}

/// An image: its names, manifest and config, as stored.
fn image(store: &Store, target: &str) -> Result<Value, CliError> {
    let digest = store.resolve(target).map_err(classify)?;
    let (bytes, parsed) = store.manifest(&digest).map_err(classify)?;
    let manifest: Value = serde_json::from_slice(&bytes)
        .map_err(|e| CliError::failed(format!("manifest {digest} is not JSON: {e}")))?;
    let config = match &parsed.config {
        Some(c) => {
            let raw = store.read_blob_bytes(&c.digest).map_err(classify)?;
            serde_json::from_slice(&raw)
                .map_err(|e| CliError::failed(format!("config {} is not JSON: {e}", c.digest)))?
        }
        None => Value::Null,
    };
    let record = store
        .images()
        .map_err(classify)?
        .into_iter()
        .find(|i| i.digest == digest);
    let (names, size, created) = match &record {
        Some(r) => (r.names.clone(), r.size, r.created.clone()),
        None => (vec![], 0, String::new()),
    };
    // Docker's shape, so docker's templates work (`.Config.Env`,
    // `.Config.Labels`, `.Os`, `.RootFS.Layers`); the whole OCI config
    // document as stored is `.ImageConfig`.
    let part = |key: &str| config.get(key).cloned().unwrap_or(Value::Null);
    Ok(json!({
        "Type": "image",
        "Id": digest.to_string(),
        "Names": names,
        "Created": created,
        "Size": size,
        "Architecture": part("architecture"),
        "Os": part("os"),
        "Author": part("author"),
        "Config": part("config"),
        "RootFS": part("rootfs"),
        "History": part("history"),
        "MediaType": parsed.media_type,
        "ConfigDigest": parsed.config.as_ref().map(|c| c.digest.to_string()),
        "Manifest": manifest,
        "ImageConfig": config,
    }))
}

/// A sandbox: its record, plus whether a command runs in it now.
fn sandbox(store: &Store, target: &str) -> Result<Value, CliError> {
    let manager = SandboxManager::new(store, crate::sandbox_cmds::launcher()?);
    let record = manager.get(target).map_err(classify)?;
    let dir = store.layout().sandboxes().join(&record.id);
    let exit_code = std::fs::read_to_string(dir.join("exit-code"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let state = if busy(&dir.join("lock")) {
        "running"
    } else if exit_code.is_some() {
        "exited"
    } else {
        "idle"
    };
    let mut v = serde_json::to_value(&record).map_err(CliError::failed)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), json!("sandbox"));
        o.insert("state".into(), json!(state));
        o.insert("exit_code".into(), json!(exit_code));
    }
    Ok(v)
}

/// Whether another process holds the sandbox's exec lock (a command runs).
fn busy(lock: &Path) -> bool {
    let Ok(file) = std::fs::File::open(lock) else {
        return false;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an fd we own; a lock we get is dropped with the file.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0
}

/// A snapshot record of `org`.
fn snapshot(store: &Store, target: &str, org: &str) -> Result<Value, CliError> {
    let registry = Registry::new(RegistryOptions::from_env()).map_err(classify)?;
    let regions = Regions::load(None).map_err(classify)?;
    let launcher = crate::sandbox_cmds::launcher()?;
    let svc = SnapshotService::open(store, launcher, &registry, regions).map_err(classify)?;
    let snap = svc.get(org, target).map_err(classify)?;
    let mut v = serde_json::to_value(&snap).map_err(CliError::failed)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), json!("snapshot"));
    }
    Ok(v)
}

#[derive(Args)]
pub struct HistoryArgs {
    /// The image (name, digest or digest prefix)
    image: String,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    format: crate::store_cmds::ImagesFormat,
    /// Do not cut long CREATED BY lines
    #[arg(long)]
    no_trunc: bool,
}

/// `cairn history`: the config's history, newest first, with each
/// layer-making step's compressed size.
pub fn history(root: Option<&Path>, args: HistoryArgs) -> Result<(), CliError> {
    let store = open_store(root)?;
    let img = image(&store, &args.image)?;
    let layers = img["Manifest"]["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut sizes = layers.iter().map(|l| l["size"].as_u64().unwrap_or(0));
    let mut rows = Vec::new();
    for h in img["History"].as_array().cloned().unwrap_or_default() {
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        let size = if empty { 0 } else { sizes.next().unwrap_or(0) };
        rows.push(json!({
            "created": h["created"],
            "created_by": h["created_by"],
            "size": size,
            "comment": h["comment"],
            "empty_layer": empty,
        }));
    }
    rows.reverse();
    if matches!(args.format, crate::store_cmds::ImagesFormat::Json) {
        let text = serde_json::to_string_pretty(&rows).map_err(CliError::failed)?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "{:<22} {:<60} {:>10}  COMMENT",
        "CREATED", "CREATED BY", "SIZE"
    );
    for r in rows {
        let mut by = r["created_by"].as_str().unwrap_or("").replace('\n', " ");
        if !args.no_trunc && by.chars().count() > 57 {
            by = by.chars().take(57).collect::<String>() + "...";
        }
        println!(
            "{:<22} {by:<60} {:>10}  {}",
            r["created"].as_str().unwrap_or(""),
            size::format_size(r["size"].as_u64().unwrap_or(0)),
            r["comment"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
