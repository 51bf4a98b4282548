//! Building the sandbox's root filesystem inside its mount namespace.
//!
//! overlay(layers, upper) at `merged`, then /proc, a tmpfs /dev with the
//! host's harmless device nodes bound in, /dev/pts, /dev/shm, the bind-mounted
//! /etc files, and finally pivot_root into it. Mount points missing from the
//! image are created in the upper dir (as buildah does); `created_mountpoints`
//! in the sandbox record lets a commit drop them again.

use crate::fscopy::resolve_all_in_root;
use crate::spec::{ExtraMount, MountSource, Network, RunSpec};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// A failed setup step, naming what was being done to which path.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct RootfsError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

fn err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(nix::errno::Errno) -> RootfsError + 'a {
    move |e| RootfsError {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Set up the root filesystem and pivot into it. Runs as PID 1 of the
/// sandbox, inside its user and mount namespaces. With `terminal`, stdin's
/// terminal becomes `/dev/console` (`console.rs`).
pub fn enter(spec: &RunSpec, terminal: bool) -> Result<(), RootfsError> {
    let _ = nix::unistd::sethostname(&spec.hostname);
    let root = Path::new("/");
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("making mounts private at", root))?;

    let merged = &spec.rootfs.merged;
    mount_overlay(spec)?;

    let proc_dir = ensure_dir(merged, "proc")?;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), &proc_dir, Some("proc"), nosuid, None::<&str>)
        .map_err(err("mounting proc at", &proc_dir))?;

    crate::masks::apply(merged, spec.network == Network::None).map_err(|(what, source)| {
        RootfsError {
            what: "while",
            path: PathBuf::from(what),
            source,
        }
    })?;

    mount_dev(merged)?;
    if terminal {
        let console = merged.join("dev/console");
        crate::console::bind_console(&console).map_err(|message| RootfsError {
            what: "while",
            path: PathBuf::from("setting up /dev/console"),
            source: std::io::Error::other(message),
        })?;
    }

    for bind in &spec.bind_files {
        // Symlinks in the image resolve inside it: a /etc/hosts pointing at
        // a host path must not make us create or cover that host path.
        let target = in_root(merged, &bind.target)?;
        if !target.exists() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
            }
            std::fs::write(&target, b"").map_err(io_err("creating mount point", &target))?;
        }
        mount(
            Some(&bind.source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err("bind-mounting over", &target))?;
        if bind.read_only {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
                .map_err(err("making read-only", &target))?;
        }
    }

    for extra in &spec.mounts {
        mount_extra(merged, extra)?;
    }

    if spec.network == Network::None {
        crate::netns::loopback_up().map_err(err("bringing up loopback in", merged))?;
    }

    std::env::set_current_dir(merged).map_err(io_err("entering", merged))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching
    // it leaves only the new root, with no directory needed for the old one.
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root into", merged))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detaching the old root from", merged))?;
    std::env::set_current_dir("/").map_err(io_err("entering", root))?;
    Ok(())
}

fn mount_overlay(spec: &RunSpec) -> Result<(), RootfsError> {
    let r = &spec.rootfs;
    if r.volatile && !r.layers.is_empty() {
        // A volatile mount leaves `work/work/incompat/volatile/dirty`, and
        // overlay refuses a work dir holding it: an earlier exec of this
        // sandbox's throwaway state made it.
        let marker = r.work.join("work/incompat/volatile");
        let _ = std::fs::remove_file(marker.join("dirty"));
        let _ = std::fs::remove_dir(&marker);
        let _ = std::fs::remove_dir(r.work.join("work/incompat"));
        let volatile = OverlayOpts { volatile: true };
        return mount_overlay_with(&r.layers, &r.upper, &r.work, &r.merged, volatile);
    }
    mount_overlay_at(&r.layers, &r.upper, &r.work, &r.merged)
}

/// Options of an overlay mount beyond its dirs.
#[derive(Default, Clone, Copy)]
struct OverlayOpts {
    /// Skip every sync of the upper dir, the one at unmount included (a
    /// syncfs of the whole host filesystem): for upper dirs nothing keeps
    /// (`run --rm`) or that are synced when kept (build steps: the commit
    /// syncs the layer dir it adopts).
    volatile: bool,
}

/// Mount `layers` (lowest first) under `upper` at `merged`.
fn mount_overlay_at(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<(), RootfsError> {
    mount_overlay_with(layers, upper, work, merged, OverlayOpts::default())
}

fn mount_overlay_with(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
    extra: OverlayOpts,
) -> Result<(), RootfsError> {
    if layers.is_empty() {
        // FROM scratch: nothing below, the upper dir is the whole tree.
        return mount(
            Some(upper),
            merged,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err("bind-mounting upper dir at", merged));
    }
    let (lower, shared_parent) = lowerdir_list(layers);
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={},userxattr{}",
        upper.display(),
        work.display(),
        if extra.volatile { ",volatile" } else { "" }
    );
    if let Some(p) = &shared_parent {
        std::env::set_current_dir(p).map_err(io_err("entering", p))?;
    }
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(err("mounting overlay at", merged))
}

/// The `lowerdir=` value for `layers` (lowest first) and, when every layer
/// dir shares a parent (the store's layers/), that parent: the names are
/// then relative to it, since mount options must fit in one page and the
/// mounter must work in it. A dir listed twice (two steps that made the same
/// layer) is kept only at its topmost place: overlay refuses a repeated
/// layer, and the merged tree is the same without the lower copy.
pub(crate) fn lowerdir_list(layers: &[PathBuf]) -> (String, Option<PathBuf>) {
    let parent = layers
        .first()
        .and_then(|l| l.parent())
        .map(Path::to_path_buf);
    let shared_parent = parent.filter(|p| layers.iter().all(|l| l.parent() == Some(p.as_path())));
    let lower: Vec<String> = unique_layers(layers)
        .iter()
        .rev() // overlay lists the topmost layer first
        .map(|layer| match &shared_parent {
            Some(_) => layer
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            None => layer.to_string_lossy().into_owned(),
        })
        .collect();
    (lower.join(":"), shared_parent)
}

/// `layers` (lowest first) with each repeated dir kept only at its topmost place.
pub(crate) fn unique_layers(layers: &[PathBuf]) -> Vec<PathBuf> {
    let mut unique: Vec<PathBuf> = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        if !unique.contains(layer) {
            unique.push(layer.clone());
        }
    }
    unique.reverse();
    unique
}

/// Set up one `RUN --mount` over `target` in the rootfs at `merged`.
fn mount_extra(merged: &Path, m: &ExtraMount) -> Result<(), RootfsError> {
    let source = match &m.source {
        MountSource::Tmpfs { size } => {
            let target = in_root(merged, &m.target)?;
            std::fs::create_dir_all(&target).map_err(io_err("creating mount point", &target))?;
            let opts = size.as_ref().map(|s| format!("size={s}"));
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if m.read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            return mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                flags,
                opts.as_deref(),
            )
            .map_err(err("mounting tmpfs at", &target));
        }
        MountSource::Host { path, owner } => {
            if let Some(o) = owner {
                nix::unistd::chown(path, Some(o.uid.into()), Some(o.gid.into()))
                    .map_err(err("giving an owner to", path))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(o.mode))
                    .map_err(io_err("setting the mode of", path))?;
            }
            path.clone()
        }
        MountSource::Overlay {
            lowers,
            upper,
            work,
            at,
            subpath,
        } => {
            mount_overlay_at(lowers, upper, work, at)?;
            let sub = subpath.trim_matches('/');
            if sub.is_empty() || sub == "." {
                at.clone()
            } else {
                let found = resolve_all_in_root(at, sub).map_err(io_err("resolving", at))?;
                if std::fs::symlink_metadata(&found).is_err() {
                    return Err(RootfsError {
                        what: "mount source not found:",
                        path: PathBuf::from(subpath),
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    });
                }
                found
            }
        }
    };
    let target = in_root(merged, &m.target)?;
    if source.is_dir() {
        std::fs::create_dir_all(&target).map_err(io_err("creating mount point", &target))?;
    } else if std::fs::symlink_metadata(&target).is_err() {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        std::fs::write(&target, b"").map_err(io_err("creating mount point", &target))?;
    }
    mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("bind-mounting over", &target))?;
    if m.read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
            .map_err(err("making read-only", &target))?;
    }
    Ok(())
}

/// `path` inside the rootfs at `root`, symlinks resolved as the sandbox will
/// see them (never leaving `root`), and never `root` itself.
fn in_root(root: &Path, path: &str) -> Result<PathBuf, RootfsError> {
    let resolved = resolve_all_in_root(root, path).map_err(io_err("resolving", Path::new(path)))?;
    if resolved == root {
        return Err(RootfsError {
            what: "mount point resolves to the root",
            path: PathBuf::from(path),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    Ok(resolved)
}

fn ensure_dir(root: &Path, name: &str) -> Result<PathBuf, RootfsError> {
    let dir = in_root(root, name)?;
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(io_err("creating mount point", &dir))?;
    }
    Ok(dir)
}

fn mount_dev(merged: &Path) -> Result<(), RootfsError> {
    let dev = ensure_dir(merged, "dev")?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(err("mounting tmpfs at", &dev))?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        let target = dev.join(name);
        std::fs::write(&target, b"").map_err(io_err("creating", &target))?;
        // /dev/tty fails to bind where the caller has no terminal; the rest must work.
        if let Err(e) = mount(
            Some(&host),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            if name != "tty" {
                return Err(err("bind-mounting device", &target)(e));
            }
        }
    }
    let pts = ensure_dir(&dev, "pts")?;
    let _ = mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    let shm = ensure_dir(&dev, "shm")?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(err("mounting tmpfs at", &shm))?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        std::os::unix::fs::symlink(target, &path).map_err(io_err("creating", &path))?;
    }
    Ok(())
}
