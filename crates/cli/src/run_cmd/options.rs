//! `run`'s option values as docker reads them: `--env-file` files,
//! `-v SRC:DST[:OPTS]` bind mounts and `-m` byte sizes.

use crate::exit::CliError;
use cairn::sandbox::{ExtraMount, MountSource};
use std::path::{Path, PathBuf};

/// The `KEY=VALUE` entries of env files, in order. As docker: blank lines
/// and lines starting with `#` are skipped, the value is taken as written
/// (no quotes removed), and a bare `KEY` takes its value from our
/// environment (and is left out when unset there).
pub fn read_env_files(files: &[PathBuf]) -> Result<Vec<String>, CliError> {
    let mut env = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::io(format!("reading the env file {}", file.display()), e))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line.split_once('=').map_or(line, |(k, _)| k);
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(CliError::bad_input(format!(
                    "{}:{}: {key:?} is not a variable name",
                    file.display(),
                    n + 1
                )));
            }
            if line.contains('=') {
                env.push(line.to_string());
            } else if let Ok(v) = std::env::var(key) {
                env.push(format!("{key}={v}"));
            }
        }
    }
    Ok(env)
}

/// `-v /host/path:/container/path[:ro|rw]`. Only host paths: a name that is
/// not an absolute path would be a named volume, which Cairn does not have.
/// A missing host directory is created, as `docker run -v` does.
pub fn parse_volume(spec: &str) -> Result<ExtraMount, CliError> {
    let bad = |why: &str| CliError::bad_input(format!("--volume {spec:?}: {why}"));
    let mut parts = spec.split(':');
    let (Some(src), Some(dst)) = (parts.next(), parts.next()) else {
        return Err(bad("expected /HOST/PATH:/CONTAINER/PATH[:ro|rw]"));
    };
    let mut read_only = false;
    if let Some(opts) = parts.next() {
        for o in opts.split(',') {
            match o {
                "ro" | "readonly" => read_only = true,
                "rw" => read_only = false,
                // SELinux relabelling asks nothing of a host without it.
                "z" | "Z" => {}
                other => {
                    return Err(bad(&format!(
                        "unknown option {other:?} (expected ro or rw)"
                    )))
                }
            }
        }
    }
    if parts.next().is_some() {
        return Err(bad("too many ':'"));
    }
    if !src.starts_with('/') {
        return Err(bad(
            "the source must be an absolute host path (named volumes are not supported)",
        ));
    }
    if !dst.starts_with('/') {
        return Err(bad(
            "the destination must be an absolute path in the container",
        ));
    }
    let src = Path::new(src);
    if !src.exists() {
        std::fs::create_dir_all(src).map_err(|e| {
            CliError::io(format!("creating the volume source {}", src.display()), e)
        })?;
    }
    let path = src
        .canonicalize()
        .map_err(|e| CliError::io(format!("resolving the volume source {}", src.display()), e))?;
    Ok(ExtraMount {
        target: dst.to_string(),
        source: MountSource::Host { path, owner: None },
        read_only,
    })
}

/// `-m 512m` -> GB of 2^30 bytes. Units b, k, m, g, t (binary, as docker),
/// with an optional trailing `b` or `ib`; no unit means bytes.
pub fn parse_memory(s: &str) -> Result<f64, CliError> {
    Ok(parse_memory_bytes(s)? as f64 / (1u64 << 30) as f64)
}

/// Docker's `--memory` units, all binary: `512m`, `2g`, `1.5GiB`, `1048576`
/// (`run -m` and `build -m` both).
pub fn parse_memory_bytes(s: &str) -> Result<u64, CliError> {
    let bad = || {
        CliError::bad_input(format!(
            "--memory {s:?}: expected a number of bytes with an optional unit b, k, m, g (e.g. 512m)"
        ))
    };
    let lower = s.trim().to_ascii_lowercase();
    let unitless = lower.trim_end_matches("ib").trim_end_matches('b');
    let (number, shift) = match unitless.chars().last() {
        Some('k') => (&unitless[..unitless.len() - 1], 10),
        Some('m') => (&unitless[..unitless.len() - 1], 20),
        Some('g') => (&unitless[..unitless.len() - 1], 30),
        Some('t') => (&unitless[..unitless.len() - 1], 40),
        _ => (unitless, 0),
    };
    let n: f64 = number.trim().parse().map_err(|_| bad())?;
    let bytes = n * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_are_binary() {
        assert_eq!(parse_memory("1g").unwrap(), 1.0);
        assert_eq!(parse_memory("512m").unwrap(), 0.5);
        assert_eq!(parse_memory("512MiB").unwrap(), 0.5);
        assert_eq!(parse_memory("1073741824").unwrap(), 1.0);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("-1g").is_err());
    }

    #[test]
    fn volumes_need_absolute_paths() {
        assert!(parse_volume("data:/data").is_err());
        assert!(parse_volume("/tmp:data").is_err());
        assert!(parse_volume("/tmp:/data:bogus").is_err());
        let m = parse_volume("/tmp:/data:ro").unwrap();
        assert!(m.read_only);
        assert_eq!(m.target, "/data");
    }
}
