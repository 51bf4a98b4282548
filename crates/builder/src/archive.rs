//! ADD of local tar archives: detected by content (a tar header after
//! decompression, as BuildKit's `isArchivePath` does), plain or compressed
//! with gzip, bzip2, xz or zstd, and extracted into the destination dir by a
//! task in the user namespace (so the archive's owners land as they should,
//! rootless too). With `--chown` every entry gets that owner (BuildKit's
//! `applyRootArchive` with the copy user).

use crate::BuildError;
use crate::Builder;
use cairn_layer::{ExtractLimits, LimitExceeded, LimitKind};
use cairn_sandbox::SandboxError;
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A reader of the decompressed content of `path`.
fn open(path: &Path) -> std::io::Result<(Compression, Box<dyn Read>)> {
    let mut head = [0u8; 6];
    let n = std::fs::File::open(path)?.read(&mut head)?;
    let kind = detect(&head[..n]);
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let reader: Box<dyn Read> = match kind {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    };
    Ok((kind, reader))
}

/// Is the regular file at `path` a tar archive (after decompression)?
pub(crate) fn is_tar_archive(path: &Path) -> bool {
    let is_file = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
    if !is_file {
        return false;
    }
    let Ok((_, mut reader)) = open(path) else {
        return false;
    };
    let mut block = [0u8; 512];
    if reader.read_exact(&mut block).is_err() {
        return false;
    }
    valid_header(&block)
}

/// A tar header block: its checksum adds up (ustar, GNU and v7 alike).
fn valid_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let text = text.trim_start_matches(' ');
    let Ok(stored) = u32::from_str_radix(text, 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == stored
}

/// Extract the archive at `archive` into `dest` (a dir in the step's upper
/// dir), giving every entry `owner` when set. `scratch` holds temporary files.
pub(crate) fn extract(
    builder: &Builder,
    archive: &Path,
    dest: &Path,
    owner: Option<(u32, u32)>,
    scratch: &Path,
) -> Result<(), BuildError> {
    let (kind, reader) = open(archive).map_err(BuildError::io(archive))?;
    let limits = ExtractLimits::from_env().map_err(SandboxError::from)?;
    let what = format!("ADD {}", archive.display());
    // The extraction task reads plain, gzip and zstd tars itself; others,
    // and any archive whose owners change, are rewritten as a plain tar.
    let blob = if owner.is_none()
        && matches!(
            kind,
            Compression::None | Compression::Gzip | Compression::Zstd
        ) {
        archive.to_path_buf()
    } else {
        let name = archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = scratch.join(format!("add-{name}.tar"));
        let rewritten = rewrite(reader, &out, owner, &limits);
        if rewritten.is_err() {
            // Best effort: scratch is under tmp/, which GC clears anyway.
            let _ = std::fs::remove_file(&out);
        }
        rewritten.map_err(|e| match e {
            Rewrite::Limit(exceeded) => BuildError::Sandbox(SandboxError::ExtractLimit {
                archive: what.clone(),
                exceeded,
            }),
            Rewrite::Io(e) => BuildError::input(format!("{what}: reading the archive: {e}")),
        })?;
        out
    };
    builder.tasks.extract_tar(&blob, dest, limits, &what)
}

/// Why a rewrite stopped.
enum Rewrite {
    Limit(LimitExceeded),
    Io(std::io::Error),
}

impl From<std::io::Error> for Rewrite {
    fn from(e: std::io::Error) -> Self {
        Rewrite::Io(e)
    }
}

/// Copy a tar stream to `out` as a plain tar, with every entry owned by
/// `owner`, under the same caps as extraction: each entry's declared size
/// (a sparse file's real size) counts before its bytes are copied.
fn rewrite(
    reader: Box<dyn Read>,
    out: &Path,
    owner: Option<(u32, u32)>,
    limits: &ExtractLimits,
) -> Result<(), Rewrite> {
    let mut archive = tar::Archive::new(reader);
    let file = std::fs::File::create(out)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    let (mut total, mut count) = (0u64, 0u64);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let path = entry.path()?.into_owned();
        count += 1;
        total = total.saturating_add(entry.size());
        let hit = |kind, limit| {
            Rewrite::Limit(LimitExceeded {
                kind,
                limit,
                entry: Some(path.display().to_string()),
            })
        };
        if let Some(limit) = limits.max_entries.filter(|l| count > *l) {
            return Err(hit(LimitKind::Entries, limit));
        }
        if let Some(limit) = limits.max_size.filter(|l| total > *l) {
            return Err(hit(LimitKind::Size, limit));
        }
        if let Some((uid, gid)) = owner {
            header.set_uid(uid.into());
            header.set_gid(gid.into());
        }
        let kind = header.entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            builder.append_link(&mut header, &path, &target)?;
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue; // already folded into the entries they describe
        } else {
            if kind.is_gnu_sparse() {
                // Written out whole: a plain regular file of its real size.
                header.set_entry_type(tar::EntryType::Regular);
            }
            header.set_size(entry.size());
            builder.append_data(&mut header, &path, &mut entry)?;
        }
    }
    builder.into_inner()?;
    Ok(())
}
