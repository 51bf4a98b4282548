//! `RUN --mount`: a typed mount spec (fields read by `cairn-dockerfile`)
//! made into a [`RunMount`]: values expanded, BuildKit's defaults applied,
//! values checked. The mounts are set up for one run in `mount_setup.rs`.
//!
//! Types: `bind` (default; a path of the context or of another stage or
//! image, read-only unless `rw`, writes discarded), `cache` (a directory kept
//! in the store between builds, shared by `id`), `tmpfs`, and `secret` (a
//! value given to the build, as a file and/or an environment variable, never
//! in a layer or a cache key).

use cairn_dockerfile::typed::{MountKey, MountSpec};

/// What kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// Everyone writes at once (the default).
    Shared,
    /// A build that finds it in use gets a fresh, throw-away directory.
    Private,
    /// A build waits until the one using it is done.
    Locked,
}

/// One `--mount=...` of a RUN, with BuildKit's defaults applied.
#[derive(Debug, Clone)]
pub(crate) struct RunMount {
    pub kind: MountType,
    /// Absolute path in the container; `None` only for a secret exposed
    /// through `env` alone.
    pub target: Option<String>,
    /// Path in the context or in `from` (bind; cache with `from`).
    pub source: String,
    /// Stage or image the source comes from (bind, cache).
    pub from: Option<String>,
    pub read_only: bool,
    /// Cache id (default: the target) or secret id.
    pub id: String,
    pub sharing: Sharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs size, as the kernel takes it.
    pub size: Option<String>,
    /// A secret that must be given to the build.
    pub required: bool,
    /// A secret also (or only) exposed as this environment variable.
    pub env: Option<String>,
}

/// Make one typed `--mount` into a mount. `workdir` anchors relative
/// targets (BuildKit joins them with the WORKDIR); `expand` substitutes
/// build args and ENV in each field's value. Errors say which field is
/// wrong and why.
pub(crate) fn parse(
    spec: &MountSpec,
    workdir: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<RunMount, String> {
    let mut kind = MountType::Bind;
    let mut target = None;
    let mut source = None;
    let mut from = None;
    let mut read_only = None;
    let mut id = None;
    let mut sharing = Sharing::Shared;
    let (mut mode, mut uid, mut gid) = (None, None, None);
    let mut size = None;
    let mut required = false;
    let mut env = None;
    let mut set_options = Vec::new();
    for field in &spec.fields {
        let key = &field.name;
        let value = field.value.as_deref().map(expand).transpose()?;
        let needs_value = |v: Option<String>| {
            v.ok_or_else(|| format!("{key}: expected {key}=VALUE in {:?}", field.text))
        };
        match field.key {
            MountKey::Type => {
                kind = match needs_value(value)?.as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => return Err("type=ssh: SSH agent forwarding is not supported".into()),
                    other => {
                        return Err(format!(
                        "type={other}: unknown mount type (expected bind, cache, tmpfs or secret)"
                    ))
                    }
                }
            }
            MountKey::Target => target = Some(needs_value(value)?),
            MountKey::Source => source = Some(needs_value(value)?),
            MountKey::From => from = Some(needs_value(value)?),
            MountKey::Id => id = Some(needs_value(value)?),
            MountKey::ReadOnly => read_only = Some(parse_bool(key, value.as_deref())?),
            MountKey::ReadWrite => read_only = Some(!parse_bool(key, value.as_deref())?),
            MountKey::Required => required = parse_bool(key, value.as_deref())?,
            MountKey::Sharing => {
                sharing = match needs_value(value)?.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    other => {
                        return Err(format!(
                            "sharing={other}: expected shared, private or locked"
                        ))
                    }
                };
                set_options.push("sharing");
            }
            MountKey::Mode => {
                let v = needs_value(value)?;
                mode = Some(
                    u32::from_str_radix(&v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| format!("mode={v}: expected an octal mode like 0755"))?,
                );
                set_options.push("mode");
            }
            MountKey::Uid | MountKey::Gid => {
                let v = needs_value(value)?;
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("{key}={v}: expected a numeric ID"))?;
                if field.key == MountKey::Uid {
                    uid = Some(n);
                } else {
                    gid = Some(n);
                }
                set_options.push("uid/gid");
            }
            MountKey::Size => {
                let v = needs_value(value)?;
                let digits = v.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || v.len() - digits.len() > 1
                {
                    return Err(format!(
                        "size={v}: expected bytes, optionally with k, m or g"
                    ));
                }
                size = Some(v);
                set_options.push("size");
            }
            MountKey::Env => {
                env = Some(needs_value(value)?);
                set_options.push("env");
            }
        }
    }
    let type_name = type_name(kind);
    let allowed: &[&str] = match kind {
        MountType::Bind => &[],
        MountType::Cache => &["sharing", "mode", "uid/gid"],
        MountType::Tmpfs => &["size"],
        MountType::Secret => &["mode", "uid/gid", "env"],
    };
    if let Some(bad) = set_options.iter().find(|o| !allowed.contains(o)) {
        return Err(format!("{bad} does not apply to type={type_name}"));
    }
    if from.is_some() && matches!(kind, MountType::Tmpfs | MountType::Secret) {
        return Err(format!("from does not apply to type={type_name}"));
    }
    let target = target.map(|t| absolute(workdir, &t));
    if target.is_none() && kind != MountType::Secret {
        return Err(format!("type={type_name} needs a target"));
    }
    if target.as_deref() == Some("/") {
        return Err("target=/: cannot mount over the root".into());
    }
    let id = match kind {
        MountType::Secret => id
            .or_else(|| source.clone())
            .or_else(|| {
                target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').next())
                    .map(str::to_string)
            })
            .ok_or("type=secret needs an id (or a target to take it from)")?,
        _ => id.unwrap_or_else(|| target.clone().unwrap_or_default()),
    };
    let target = match kind {
        // BuildKit's default: /run/secrets/ID, unless only `env` was asked for.
        MountType::Secret if target.is_none() && env.is_none() => {
            Some(format!("/run/secrets/{id}"))
        }
        _ => target,
    };
    Ok(RunMount {
        kind,
        target,
        source: source.unwrap_or_default(),
        from,
        // Bind and secret mounts are read-only unless asked; cache and tmpfs writable.
        read_only: read_only.unwrap_or(matches!(kind, MountType::Bind | MountType::Secret)),
        id,
        sharing,
        mode,
        uid,
        gid,
        size,
        required,
        env,
    })
}

pub(crate) fn type_name(kind: MountType) -> &'static str {
    match kind {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
    }
}

/// `path` made absolute against `workdir`, cleaned.
fn absolute(workdir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{workdir}/{path}")
    };
    format!("/{}", crate::context::clean(&joined))
}

/// Go's strconv.ParseBool, with a bare key meaning true.
fn parse_bool(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None => Ok(true),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(format!("{key}={other}: expected true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: &str) -> Result<RunMount, String> {
        let text = format!("FROM scratch\nRUN --mount='{v}' true\n");
        let doc = cairn_dockerfile::parse(&text).map_err(|e| e.to_string())?;
        let typed = doc.stages[0].instructions[0]
            .typed()
            .map_err(|e| e.to_string())?;
        let cairn_dockerfile::Command::Run(run) = typed.command else {
            return Err("not a RUN".into());
        };
        parse(&run.mounts[0], "/work", &|s| Ok(s.replace("$X", "x")))
    }

    #[test]
    fn defaults_follow_buildkit() {
        let b = read("target=/src").unwrap();
        assert_eq!(b.kind, MountType::Bind);
        assert!(b.read_only);
        assert_eq!(b.source, "");
        let c = read("type=cache,target=cache").unwrap();
        assert_eq!(c.target.as_deref(), Some("/work/cache"));
        assert_eq!(c.id, "/work/cache");
        assert!(!c.read_only);
        assert_eq!(c.sharing, Sharing::Shared);
        let s = read("type=secret,id=tok").unwrap();
        assert_eq!(s.target.as_deref(), Some("/run/secrets/tok"));
        assert!(s.read_only && !s.required);
        let e = read("type=secret,id=tok,env=TOKEN").unwrap();
        assert_eq!(e.target, None);
        let t = read("type=secret,target=/etc/key").unwrap();
        assert_eq!(t.id, "key");
    }

    #[test]
    fn fields_are_read_and_expanded() {
        let m =
            read("type=cache,id=$X,target=/c,sharing=locked,mode=0700,uid=10,gid=20,ro").unwrap();
        assert_eq!(m.id, "x");
        assert_eq!(m.sharing, Sharing::Locked);
        assert_eq!((m.mode, m.uid, m.gid), (Some(0o700), Some(10), Some(20)));
        assert!(m.read_only);
        let q = read("type=bind,\"source=a,b\",target=/t,rw=true").unwrap();
        assert_eq!(q.source, "a,b");
        assert!(!q.read_only);
        let q = read("type=bind,source=\"a,b\",target=/t").unwrap();
        assert_eq!(q.source, "a,b");
        assert_eq!(
            read("type=tmpfs,target=/t,size=64m")
                .unwrap()
                .size
                .as_deref(),
            Some("64m")
        );
    }

    #[test]
    fn bad_values_are_named() {
        for (v, want) in [
            ("type=nfs,target=/t", "\"nfs\""),
            ("type=ssh", "not supported"),
            ("type=cache", "needs a target"),
            ("target=/t,mode=0755", "mode does not apply to type=bind"),
            ("type=cache,target=/t,sharing=maybe", "sharing=maybe"),
            ("type=cache,target=/t,mode=9", "mode=9"),
            ("type=cache,target=/t,uid=me", "uid=me"),
            ("type=tmpfs,target=/t,size=lots", "size=lots"),
            ("type=tmpfs,target=/t,from=x", "from does not apply"),
            ("target=/t,ro=maybe", "ro=maybe"),
            ("target=/t,colour=red", "unknown field"),
            ("target=/", "root"),
            ("type=secret", "needs an id"),
            ("target=\"/t", "unterminated quote"),
        ] {
            let e = read(v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
