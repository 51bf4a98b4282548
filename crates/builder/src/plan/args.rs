//! Build args: the platform ARGs BuildKit predefines, and the build args no ARG consumes.

use cairn_dockerfile::{Command, Dockerfile, Typed};
use cairn_registry::Platform;
use std::collections::{BTreeMap, HashMap};

/// The platform ARGs BuildKit predefines: builds run for this machine
/// (linux/amd64; there is no `--platform` for a whole build).
pub(crate) fn platform_args(target: &Platform) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (side, p) in [("TARGET", target), ("BUILD", &Platform::host())] {
        args.insert(format!("{side}PLATFORM"), p.to_string());
        args.insert(format!("{side}OS"), p.os.clone());
        args.insert(format!("{side}ARCH"), p.architecture.clone());
        args.insert(
            format!("{side}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    args
}

/// Build args no ARG declares, neither global nor in the stages built, in
/// name order; the proxy variables every build takes are never unused.
pub(crate) fn unused_build_args(
    doc: &Dockerfile,
    stages: &[usize],
    build_args: &HashMap<String, String>,
) -> Vec<String> {
    const PREDEFINED: [&str; 5] = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    ];
    let mut declared: Vec<String> = doc.global_args.iter().map(|a| a.name.clone()).collect();
    for i in stages {
        for typed in doc.stages[*i].instructions.iter().map(|i| i.typed()) {
            if let Ok(Typed {
                command: Command::Arg(decls),
                ..
            }) = typed
            {
                declared.extend(decls.into_iter().map(|d| d.name));
            }
        }
    }
    let mut unused: Vec<String> = build_args
        .keys()
        .filter(|k| !declared.contains(k))
        .filter(|k| !PREDEFINED.contains(&k.to_ascii_uppercase().as_str()))
        .cloned()
        .collect();
    unused.sort();
    unused
}
