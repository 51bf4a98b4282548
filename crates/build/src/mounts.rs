//! `RUN --mount`: the flag's value read into a [`RunMount`] (BuildKit's
//! fields and defaults), what a mount adds to the step's cache key, and the
//! mounts set up for one run (see `mount_setup.rs`).
//!
//! Types: `bind` (default; a path of the context or of another stage or
//! image, read-only unless `rw`, writes discarded), `cache` (a directory kept
//! in the store between builds, shared by `id`), `tmpfs`, and `secret` (a
//! value given to the build, as a file and/or an environment variable, never
//! in a layer or a cache key).

use std::collections::BTreeMap;

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

/// The `from=` names of every `--mount` in `flags`, unexpanded: the stages a
/// RUN depends on, for planning.
pub(crate) fn from_names(flags: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut names = Vec::new();
    for value in flags.get("mount").into_iter().flatten() {
        for field in split_fields(value).unwrap_or_default() {
            if let Some((k, v)) = field.split_once('=') {
                if k.eq_ignore_ascii_case("from") {
                    names.push(v.to_string());
                }
            }
        }
    }
    names
}

/// Read one `--mount` value. `workdir` anchors relative targets (BuildKit
/// joins them with the WORKDIR); `expand` substitutes build args and ENV in
/// each field's value. Errors say which field is wrong and why.
pub(crate) fn parse(
    value: &str,
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
    for field in split_fields(value)? {
        let (key, raw) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let value = raw.map(expand).transpose()?;
        let needs_value = |v: Option<String>| {
            v.ok_or_else(|| format!("{key}: expected {key}=VALUE in {field:?}"))
        };
        match key.as_str() {
            "type" => {
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
            "target" | "dst" | "destination" => target = Some(needs_value(value)?),
            "source" | "src" => source = Some(needs_value(value)?),
            "from" => from = Some(needs_value(value)?),
            "id" => id = Some(needs_value(value)?),
            "readonly" | "ro" => read_only = Some(parse_bool(&key, value.as_deref())?),
            "rw" | "readwrite" => read_only = Some(!parse_bool(&key, value.as_deref())?),
            "required" => required = parse_bool(&key, value.as_deref())?,
            "sharing" => {
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
            "mode" => {
                let v = needs_value(value)?;
                mode = Some(
                    u32::from_str_radix(&v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| format!("mode={v}: expected an octal mode like 0755"))?,
                );
                set_options.push("mode");
            }
            "uid" | "gid" => {
                let v = needs_value(value)?;
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("{key}={v}: expected a numeric ID"))?;
                if key == "uid" {
                    uid = Some(n);
                } else {
                    gid = Some(n);
                }
                set_options.push("uid/gid");
            }
            "size" => {
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
            "env" => {
                env = Some(needs_value(value)?);
                set_options.push("env");
            }
            _ => return Err(format!("unknown field {key:?} in {field:?}")),
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

/// Split a comma-separated list of fields the way a CSV reader does: a field
/// may be double-quoted (then commas are literal, `""` is a quote).
fn split_fields(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = value.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => {
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                        None => return Err(format!("unterminated quote in {value:?}")),
                    }
                }
                at_field_start = false;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            c => {
                // A quote inside key="value" opens a quoted value.
                if c == '=' && chars.peek() == Some(&'"') {
                    field.push('=');
                    at_field_start = true;
                    continue;
                }
                field.push(c);
                at_field_start = false;
            }
        }
    }
    fields.push(field);
    Ok(fields.into_iter().filter(|f| !f.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: &str) -> Result<RunMount, String> {
        parse(v, "/work", &|s| Ok(s.replace("$X", "x")))
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
            ("type=nfs,target=/t", "type=nfs"),
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

    #[test]
    fn from_names_are_found() {
        let mut flags = BTreeMap::new();
        flags.insert(
            "mount".to_string(),
            vec![
                "type=bind,from=build,target=/b".into(),
                "type=cache,target=/c".into(),
            ],
        );
        assert_eq!(from_names(&flags), vec!["build".to_string()]);
    }
}
