//! `cairn version` and `cairn info`: what this machine offers Cairn, found
//! by looking (cgroup mounts, ID ranges) and by trying (a user namespace
//! with an overlay mount, in a child process), so that a user learns why
//! something will not work before it fails.

mod probe;

pub use probe::{probe_cmd, ProbeArgs};

use crate::exit::CliError;
use cairn::sandbox::idmap::IdMapping;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InfoFormat {
    /// Indented lines for people
    Text,
    /// One JSON object
    Json,
}

#[derive(Args)]
pub struct VersionArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: InfoFormat,
}

fn version_value() -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "oci_runtime": "built in (user namespaces, overlay)",
    })
}

pub fn version(args: VersionArgs) -> Result<(), CliError> {
    let v = version_value();
    match args.format {
        InfoFormat::Json => println!("{v}"),
        InfoFormat::Text => {
            println!("cairn version {}", v["version"].as_str().unwrap_or(""));
            println!(
                "OS/Arch: {}/{}",
                std::env::consts::OS,
                std::env::consts::ARCH
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct InfoArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: InfoFormat,
}

pub fn info(root: Option<&Path>, args: InfoArgs) -> Result<(), CliError> {
    let store = cairn::store::layout::default_root(root);
    let v = json!({
        "version": version_value(),
        "store": {
            "path": store.display().to_string(),
            "exists": store.join("oci-layout").is_file(),
        },
        "host": host(),
        "ids": ids(),
        "cgroups": probe::cgroups(),
        "userns": probe::userns(root),
        "seccomp": probe::seccomp(),
    });
    match args.format {
        InfoFormat::Json => {
            let text = serde_json::to_string_pretty(&v).map_err(CliError::failed)?;
            println!("{text}");
        }
        InfoFormat::Text => print_text(&v, 0),
    }
    Ok(())
}

fn host() -> Value {
    let uid = unsafe { libc::geteuid() };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "kernel": kernel,
        "uid": uid,
        "rootless": uid != 0,
    })
}

/// The ID ranges sandboxes get, and the setuid helpers rootless mapping needs.
fn ids() -> Value {
    let mapping = IdMapping::for_current_user();
    let tool = |name: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
            .unwrap_or(false)
    };
    let ranges = |r: &[cairn::sandbox::idmap::IdRange]| -> Vec<Value> {
        r.iter()
            .map(|x| json!({"container": x.container, "host": x.host, "size": x.len}))
            .collect()
    };
    json!({
        "uid_map": ranges(&mapping.map.uids),
        "gid_map": ranges(&mapping.map.gids),
        "identity": mapping.is_identity(),
        "single_id": mapping.single_id,
        "warning": mapping.single_id_warning(),
        "newuidmap": tool("newuidmap"),
        "newgidmap": tool("newgidmap"),
    })
}

/// Nested keys as indented `key: value` lines.
fn print_text(v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    if let Value::Object(m) = v {
        for (k, x) in m {
            match x {
                Value::Object(_) => {
                    println!("{pad}{k}:");
                    print_text(x, depth + 1);
                }
                Value::Array(a) if a.iter().any(Value::is_object) => {
                    println!("{pad}{k}:");
                    for item in a {
                        println!("{pad}  - {}", item);
                    }
                }
                Value::String(s) => println!("{pad}{k}: {s}"),
                Value::Null => println!("{pad}{k}: -"),
                other => println!("{pad}{k}: {other}"),
            }
        }
    }
}
