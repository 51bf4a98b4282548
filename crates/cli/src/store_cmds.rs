//! The store commands: `images`, `tag`, `rmi`, `export`, `import`, `prune`, `fsck`.

use crate::exit::{classify, open_store, CliError};
use cairn::store::{self, size, ImageRef, Store, StoreError, Transport};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, ValueEnum)]
pub enum ImagesFormat {
    Table,
    Json,
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: ImagesFormat,
    /// Print only the image digests, one per image
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

pub fn images(root: Option<&Path>, args: ImagesArgs) -> Result<(), CliError> {
    let store = open_store(root)?;
    let images = store.images().map_err(classify)?;
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for i in &images {
            if seen.insert(i.digest) {
                println!("{}", i.digest);
            }
        }
        return Ok(());
    }
    match args.format {
        ImagesFormat::Json => {
            let text = serde_json::to_string_pretty(&images)
                .map_err(|e| CliError::failed(format!("rendering JSON: {e}")))?;
            println!("{text}");
        }
        ImagesFormat::Table => {
            println!("{:<60} {:<19} {:>10}  CREATED", "NAME", "DIGEST", "SIZE");
            for i in &images {
                let short = &i.digest.to_string()[..19];
                let names: Vec<&str> = if i.names.is_empty() {
                    vec!["<none>"]
                } else {
                    i.names.iter().map(String::as_str).collect()
                };
                for n in names {
                    println!(
                        "{n:<60} {short:<19} {:>10}  {}",
                        size::format_size(i.size),
                        i.created
                    );
                }
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct TagArgs {
    /// The image to tag (name or digest)
    pub source: String,
    /// The new name
    pub target: String,
}

pub fn tag(root: Option<&Path>, args: TagArgs) -> Result<(), CliError> {
    let target = ImageRef::parse(&args.target).map_err(classify)?;
    let store = open_store(root)?;
    let digest = store.resolve(&args.source).map_err(classify)?;
    store.tag(&target, &digest).map_err(classify)?;
    println!("{target} -> {digest}");
    Ok(())
}

#[derive(Args)]
pub struct RmiArgs {
    /// Names to remove (a digest removes every name of that image); the blobs go at the next prune
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Do not fail on names that are not in the store
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn rmi(root: Option<&Path>, args: RmiArgs) -> Result<(), CliError> {
    let store = open_store(root)?;
    let mut unknown = Vec::new();
    for image in &args.images {
        let result = match image.parse::<store::Digest>() {
            Ok(d) => store.untag_manifest(&d),
            Err(_) => {
                ImageRef::parse(image).and_then(|r| store.untag(&r).map(|_| vec![r.to_string()]))
            }
        };
        match result {
            Ok(names) => names.iter().for_each(|n| println!("Untagged: {n}")),
            Err(StoreError::UnknownImage(_)) => unknown.push(image.clone()),
            Err(e) => return Err(classify(e)),
        }
    }
    if !unknown.is_empty() && !args.force {
        return Err(CliError::bad_input(format!(
            "no such image: {}",
            unknown.join(", ")
        )));
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// The image to export (name or digest)
    pub image: String,
    /// oci:DIR[:REF], oci-archive:FILE[:REF] or docker-archive:FILE[:NAME]
    pub destination: String,
}

pub fn export(root: Option<&Path>, args: ExportArgs) -> Result<(), CliError> {
    let dest = Transport::parse(&args.destination).map_err(classify)?;
    let store = open_store(root)?;
    let digest = store.export(&args.image, &dest).map_err(classify)?;
    println!("{digest}");
    Ok(())
}

#[derive(Args)]
pub struct ImportArgs {
    /// oci:DIR[:REF], oci-archive:FILE[:REF] or docker-archive:FILE[:NAME]
    pub source: String,
    /// Name the imported image (instead of the names the source carries)
    pub name: Option<String>,
}

pub fn import(root: Option<&Path>, args: ImportArgs) -> Result<(), CliError> {
    let source = Transport::parse(&args.source).map_err(classify)?;
    let name = args
        .name
        .as_deref()
        .map(ImageRef::parse)
        .transpose()
        .map_err(classify)?;
    let store = open_store(root)?;
    let imported = store.import(&source, name.as_ref()).map_err(classify)?;
    for i in imported {
        if i.names.is_empty() {
            println!(
                "{} (untagged: give a NAME to keep it past the next prune)",
                i.digest
            );
        }
        for n in i.names {
            println!("{} {n}", i.digest);
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct PruneArgs {
    /// Keep build cache up to this size (e.g. 10GB, 500MiB), least recently used dropped first
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Also delete every RUN --mount=type=cache directory
    #[arg(long)]
    pub cache_mounts: bool,
}

pub fn prune(root: Option<&Path>, args: PruneArgs) -> Result<(), CliError> {
    let budget = args
        .keep_storage
        .as_deref()
        .map(size::parse_size)
        .transpose()
        .map_err(classify)?;
    let root: PathBuf = store::default_root(root);
    let store = Store::open_exclusive(root).map_err(CliError::failed)?;
    // First the sandboxes whose owner died (`run --rm` killed), as `sandbox
    // ls` does, so that what only they kept alive is freed below.
    let dead = crate::sandbox_cmds::remove_dead(&store)?;
    // Layer dirs and RUN upper dirs hold files of subordinate IDs: removed
    // by tasks in the user namespace (rootless, the caller cannot).
    let launcher = cairn::sandbox::Launcher::current_exe().map_err(CliError::failed)?;
    let mapping = cairn::sandbox::idmap::IdMapping::for_current_user();
    let remover = cairn::sandbox::TaskRemover {
        launcher: &launcher,
        mapping: &mapping,
    };
    let r = store.gc_with(budget, &remover).map_err(classify)?;
    if args.cache_mounts {
        let n = cairn::build::remove_cache_mounts(&store, &launcher).map_err(CliError::failed)?;
        println!("Removed {n} cache mount(s)");
    }
    println!(
        "Freed {} ({} blobs, {} layer dirs, {} temp entries; forgot {} untagged manifests, dropped {} cache entries)",
        size::format_size(r.blob_bytes_freed),
        r.blobs_removed,
        r.layer_dirs_removed,
        r.tmp_entries_removed,
        r.manifests_forgotten,
        r.cache_entries_dropped
    );
    if !dead.is_empty() {
        println!(
            "Removed {} sandbox(es) whose owner process is gone: {}",
            dead.len(),
            dead.join(" ")
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct FsckArgs {
    /// Also re-read every extracted layer dir and compare it with what was
    /// extracted (finds truncated or changed files; reads all layer data)
    #[arg(long)]
    pub full: bool,
}

/// Re-reads layer dirs in a user namespace (their files may belong to
/// subordinate IDs the caller cannot read).
struct TaskVerifier {
    launcher: cairn::sandbox::Launcher,
    mapping: cairn::sandbox::idmap::IdMapping,
}

impl store::gc::LayerVerifier for TaskVerifier {
    fn tree_digest(&self, dir: &Path) -> Result<store::Digest, String> {
        self.launcher
            .tree_digest(&self.mapping, dir)
            .map_err(|e| e.to_string())
    }

    fn blob_tree_digest(&self, blob: &Path, scratch: &Path) -> Result<store::Digest, String> {
        let what = format!("blob {}", blob.display());
        let limits = cairn::layer::ExtractLimits::from_env().map_err(|e| e.to_string())?;
        let extracted =
            self.launcher
                .extract_layer(&self.mapping, blob, scratch, limits, &what, true);
        let remover = cairn::sandbox::TaskRemover {
            launcher: &self.launcher,
            mapping: &self.mapping,
        };
        let _ = store::layer_dirs::TreeRemover::remove_tree(&remover, scratch);
        match extracted.map_err(|e| e.to_string())?.tree {
            Some(tree) => Ok(tree),
            None => Err(format!("no tree digest of {what}")),
        }
    }
}

pub fn fsck(root: Option<&Path>, args: FsckArgs) -> Result<(), CliError> {
    let store = open_store(root)?;
    let problems = if args.full {
        let verifier = TaskVerifier {
            launcher: cairn::sandbox::Launcher::current_exe().map_err(CliError::failed)?,
            mapping: cairn::sandbox::idmap::IdMapping::for_current_user(),
        };
        store.fsck_full(&verifier)
    } else {
        store.fsck()
    }
    .map_err(CliError::failed)?;
    if problems.is_empty() {
        println!("ok");
        return Ok(());
    }
    for p in &problems {
        println!("{p}");
    }
    Err(CliError::failed(format!(
        "fsck found {} problem(s)",
        problems.len()
    )))
}
