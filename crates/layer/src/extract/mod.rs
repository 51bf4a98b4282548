//! Safe extraction of a layer blob into a directory.

mod decode;
pub use decode::{blob_diff_id, buffered_blob_diff_id, BlobDiffId};
mod name;
pub(crate) mod root;

use crate::capture::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::compression::Compression;
use crate::digest::Digest;
use crate::error::LayerError;
use crate::idmap::IdMap;
use crate::limits::{ExtractLimits, LimitExceeded, LimitKind, MAX_TREE_DEPTH};
use crate::sys;
use crate::OverlayFlavour;
use root::{clear_dir, remove_all_at, Root};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use tar::EntryType;

/// What to do with whiteouts (`.wh.NAME`) and opaque markers (`.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Keep them in overlayfs form, for a layer dir used as a lowerdir:
    /// `.wh.NAME` -> 0:0 char device NAME, opaque -> the flavour's opaque xattr.
    Overlay(OverlayFlavour),
    /// Apply them to what is already in the destination (a flattened rootfs):
    /// delete NAME; clear the dir of everything not from this layer.
    Apply,
}

/// How to extract.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    pub whiteout_mode: WhiteoutMode,
    /// Maps the IDs in the tar (container IDs) to the owners written on disk.
    pub id_map: IdMap,
    /// Not real root: device nodes are skipped and failures to chown or to set
    /// privileged xattrs are recorded as notes instead of failing.
    pub unprivileged: bool,
    /// Caps on size (sparse holes included), entries and header sizes; a
    /// cap hit stops with `LayerError::Limit` before the bytes are written.
    /// The default caps hold for untrusted blobs ([`ExtractLimits`]).
    pub limits: ExtractLimits,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            whiteout_mode: WhiteoutMode::Apply,
            id_map: IdMap::identity(),
            unprivileged: !is_real_root(),
            limits: ExtractLimits::default(),
        }
    }
}

/// Root in the initial user namespace: euid 0 and the identity uid_map.
/// Root inside a user namespace cannot create device nodes.
pub fn is_real_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let full_map = std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
        .unwrap_or(false);
    euid == 0 && full_map
}

/// What an extraction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractStats {
    /// Detected from the blob's first bytes.
    pub compression: Compression,
    /// sha256 of the uncompressed stream: compare with the config's diff_ids.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// Tar entries processed (markers included, PAX headers not).
    pub entries: u64,
    pub skipped_devices: u64,
    /// Things skipped or degraded, one line each (capped at `MAX_NOTES`).
    pub notes: Vec<String>,
}

const MAX_NOTES: usize = 100;
/// Bytes of one file written before its writeback is started.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// Extract a layer blob (gzip, zstd or plain tar, detected by content) into
/// `dest`, an existing directory. Nothing outside `dest` is ever created,
/// changed or removed, whatever the blob contains; see `docs/layers.md` for
/// which hostile entries are rejected and which are contained.
pub fn extract_layer<R: Read + Send>(
    blob: R,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats, LayerError> {
    let _span = crate::timing::span("layer.extract");
    let root = Root::open(dest)?;
    let (outlet, mut reader) = decode::channel();
    std::thread::scope(|s| {
        let decoder = s.spawn(move || decode::run_decoder(blob, opts.limits.max_size, outlet));
        let mut ex = Extractor::new(root, opts);
        let result = ex
            .run(&mut reader)
            .and_then(|()| reader.drain().map_err(LayerError::Stream));
        drop(reader); // lets a blocked decoder finish
        let decoded = decoder.join().unwrap_or_else(|_| {
            Err(LayerError::Stream(io::Error::other(
                "decoder thread panicked",
            )))
        });
        // The decoder's error (size limit, corrupt compression) is the cause of
        // whatever the tar reader then saw; report it first.
        let decoded = decoded?;
        result?;
        ex.finish_dirs()?;
        Ok(ExtractStats {
            compression: decoded.compression,
            diff_id: decoded.diff_id,
            uncompressed_size: decoded.size,
            entries: ex.entries,
            skipped_devices: ex.skipped_devices,
            notes: ex.notes,
        })
    })
}

/// Metadata of one entry, owners already mapped to host IDs.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A directory whose mode and mtime are set at the end (its children would
/// change the mtime, and a read-only mode would stop their creation).
struct PendingDir {
    rel: Vec<u8>,
    mode: u32,
    mtime: i64,
}

struct Extractor<'o> {
    root: Root,
    opts: &'o ExtractOptions,
    /// Paths this layer created (and their ancestors): an opaque marker in
    /// Apply mode clears everything else.
    created: HashSet<Vec<u8>>,
    dirs: Vec<PendingDir>,
    entries: u64,
    /// Bytes the entries declare so far (a sparse file with its real size).
    declared: u64,
    /// Bytes of file content written so far.
    written: u64,
    skipped_devices: u64,
    notes: Vec<String>,
    buf: Vec<u8>,
}

impl<'o> Extractor<'o> {
    fn new(root: Root, opts: &'o ExtractOptions) -> Self {
        Extractor {
            root,
            opts,
            created: HashSet::new(),
            dirs: Vec::new(),
            entries: 0,
            declared: 0,
            written: 0,
            skipped_devices: 0,
            notes: Vec::new(),
            buf: vec![0u8; 256 * 1024],
        }
    }

    fn note(&mut self, msg: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(msg);
        } else if self.notes.len() == MAX_NOTES {
            self.notes.push("(further notes omitted)".into());
        }
    }

    fn run(&mut self, reader: &mut dyn Read) -> Result<(), LayerError> {
        let meter = crate::meter::Meter::default();
        let mut metered = meter.reader(reader);
        let mut archive = tar::Archive::new(&mut metered as &mut dyn Read);
        let mut entries = archive.entries().map_err(LayerError::Stream)?;
        let limits = self.opts.limits;
        loop {
            // What the tar reader consumes now is headers: bounded (see meter.rs).
            meter.arm(limits.max_header_size);
            let next = entries.next();
            meter.disarm();
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|e| match limits.max_header_size {
                Some(limit) if meter.tripped() => limit_hit(LimitKind::HeaderSize, limit, None),
                _ => LayerError::Stream(e),
            })?;
            self.entries += 1;
            if let Some(limit) = limits.max_entries.filter(|l| self.entries > *l) {
                let raw = entry.path_bytes().into_owned();
                return Err(limit_hit(LimitKind::Entries, limit, Some(&raw)));
            }
            self.entry(&mut entry)?;
            // Data the entry's handler did not read (a skipped type, a
            // directory with a body) is read here, outside the header budget.
            io::copy(&mut entry, &mut io::sink()).map_err(LayerError::Stream)?;
        }
        Ok(())
    }

    /// Count an entry's declared size against the size cap, before any of
    /// its bytes are written. A sparse entry declares its real size.
    fn declare(&mut self, raw: &[u8], size: u64) -> Result<(), LayerError> {
        self.declared = self.declared.saturating_add(size);
        match self.opts.limits.max_size {
            Some(limit) if self.declared > limit => {
                Err(limit_hit(LimitKind::Size, limit, Some(raw)))
            }
            _ => Ok(()),
        }
    }

    fn mark_created(&mut self, rel: &[u8]) {
        let mut p = rel;
        loop {
            if !self.created.insert(p.to_vec()) {
                return;
            }
            match p.iter().rposition(|&b| b == b'/') {
                Some(i) => p = &p[..i],
                None => return,
            }
        }
    }

    fn meta(
        &self,
        entry: &mut tar::Entry<'_, &mut dyn Read>,
        raw: &[u8],
    ) -> Result<Meta, LayerError> {
        let h = entry.header();
        let bad = |what: &str| LayerError::bad_entry(raw, format!("unreadable {what} in header"));
        let mut uid = h.uid().map_err(|_| bad("uid"))?;
        let mut gid = h.gid().map_err(|_| bad("gid"))?;
        let mut mtime = h.mtime().map_err(|_| bad("mtime"))? as i64;
        let mode = h.mode().map_err(|_| bad("mode"))? & 0o7777;
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(LayerError::Stream)? {
            for ext in exts {
                let ext = ext.map_err(LayerError::Stream)?;
                let (key, value) = (ext.key_bytes(), ext.value_bytes());
                let num = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                };
                match key {
                    b"uid" => uid = num().ok_or_else(|| bad("PAX uid"))? as u64,
                    b"gid" => gid = num().ok_or_else(|| bad("PAX gid"))? as u64,
                    b"mtime" => mtime = num().ok_or_else(|| bad("PAX mtime"))?,
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            xattrs.push((name.to_vec(), value.to_vec()));
                        }
                    }
                }
            }
        }
        let id = |v: u64, kind| {
            u32::try_from(v)
                .map_err(|_| LayerError::bad_entry(raw, format!("{kind} {v} out of range")))
        };
        let (uid, gid) = (id(uid, "uid")?, id(gid, "gid")?);
        let map = &self.opts.id_map;
        let unmapped = |kind, v| {
            LayerError::bad_entry(raw, format!("{kind} {v} is not covered by the ID map"))
        };
        Ok(Meta {
            mode,
            uid: map.uid_to_host(uid).ok_or_else(|| unmapped("uid", uid))?,
            gid: map.gid_to_host(gid).ok_or_else(|| unmapped("gid", gid))?,
            mtime,
            xattrs,
        })
    }

    /// The owner for directories we create implicitly: container root.
    fn implicit_owner(&self) -> Option<(u32, u32)> {
        let map = &self.opts.id_map;
        Some((map.uid_to_host(0)?, map.gid_to_host(0)?))
    }

    fn entry(&mut self, entry: &mut tar::Entry<'_, &mut dyn Read>) -> Result<(), LayerError> {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        match kind {
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => {
                return Ok(());
            }
            _ => {}
        }
        let rel = name::clean(&raw)?;
        if rel.split(|&b| b == b'/').count() > MAX_TREE_DEPTH {
            return Err(limit_hit(
                LimitKind::Depth,
                MAX_TREE_DEPTH as u64,
                Some(&raw),
            ));
        }
        if rel.is_empty() {
            // The root itself ("./"): its metadata belongs to the destination's owner.
            return Ok(());
        }
        let (parent_rel, base) = name::split_last(&rel);
        let (parent_rel, base) = (parent_rel.to_vec(), base.to_vec());

        if let Some(target) = base.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&raw, &parent_rel, &base, target);
        }
        let meta = self.meta(entry, &raw)?;
        let owner = self.implicit_owner();
        let mut made = Vec::new();
        let parent_fd = self
            .root
            .parent(&parent_rel, owner, &mut |p| made.push(p.to_vec()))
            .map_err(|e| LayerError::extract(&raw, "resolving the parent directory", e))?;
        for p in made {
            self.mark_created(&p);
        }
        let pfd = parent_fd.as_fd();

        // Creation is tried first and an existing entry handled on EEXIST:
        // the common case (a fresh directory) costs no extra lookup.
        if kind == EntryType::Directory {
            match sys::mkdirat(pfd, &base, 0o700) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    let st = sys::lstatat(pfd, &base)
                        .map_err(|e| LayerError::extract(&raw, "lstat", e))?;
                    if st.is_none_or(|st| st.st_mode & libc::S_IFMT != libc::S_IFDIR) {
                        // A non-directory in the way (a symlink included) is
                        // removed, never followed.
                        sys::unlinkat(pfd, &base, false).map_err(|e| {
                            LayerError::extract(&raw, "removing the non-directory in the way", e)
                        })?;
                        self.root.invalidate();
                        sys::mkdirat(pfd, &base, 0o700)
                            .map_err(|e| LayerError::extract(&raw, "mkdir", e))?;
                    }
                }
                Err(e) => return Err(LayerError::extract(&raw, "mkdir", e)),
            }
            self.chown_at(&raw, pfd, &base, &meta)?;
            if !meta.xattrs.is_empty() {
                let dfd = sys::openat(
                    pfd,
                    &base,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| LayerError::extract(&raw, "opening the directory", e))?;
                self.set_xattrs(&raw, XattrTarget::Fd(dfd.as_fd()), &meta.xattrs)?;
            }
            self.dirs.push(PendingDir {
                rel: rel.clone(),
                mode: meta.mode,
                mtime: meta.mtime,
            });
            self.mark_created(&rel);
            return Ok(());
        }

        let is_device = matches!(kind, EntryType::Char | EntryType::Block);
        if is_device && self.opts.unprivileged {
            self.skipped_devices += 1;
            self.note(format!(
                "{}: device node skipped (unprivileged)",
                String::from_utf8_lossy(&raw)
            ));
            return Ok(());
        }
        let supported = matches!(
            kind,
            EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse
                | EntryType::Symlink
                | EntryType::Link
                | EntryType::Fifo
                | EntryType::Char
                | EntryType::Block
        );
        if !supported {
            self.note(format!(
                "{}: entry type {:?} skipped",
                String::from_utf8_lossy(&raw),
                kind
            ));
            return Ok(());
        }

        match kind {
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::bad_entry(&raw, "link without a target"))?
                    .into_owned();
                if target.contains(&0) || target.is_empty() {
                    return Err(LayerError::bad_entry(
                        &raw,
                        "empty link target or NUL in it",
                    ));
                }
                if kind == EntryType::Symlink {
                    // A symlink's target is just data: it may say anything, and
                    // is never followed by this extractor.
                    self.create_replacing(&raw, pfd, &base, "symlink", || {
                        sys::symlinkat(&target, pfd, &base)
                    })?;
                    self.finish_node(&raw, pfd, &base, &meta, false)?;
                } else {
                    self.hard_link(&raw, pfd, &base, &target)?;
                }
            }
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                let (fmt, dev) = match kind {
                    EntryType::Fifo => (libc::S_IFIFO, 0),
                    _ => {
                        let h = entry.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let fmt = if kind == EntryType::Char {
                            libc::S_IFCHR
                        } else {
                            libc::S_IFBLK
                        };
                        (fmt, libc::makedev(major, minor))
                    }
                };
                self.create_replacing(&raw, pfd, &base, "mknod", || {
                    sys::mknodat(pfd, &base, fmt | 0o600, dev)
                })?;
                self.finish_node(&raw, pfd, &base, &meta, true)?;
            }
            _ => self.regular_file(entry, &raw, pfd, &base, &meta)?,
        }
        self.mark_created(&rel);
        Ok(())
    }

    /// Run `create`; if the name exists, remove what is there (recursively for
    /// a directory, as tar does; a symlink is removed, never followed) and
    /// run it once more.
    fn create_replacing<T>(
        &mut self,
        raw: &[u8],
        pfd: BorrowedFd<'_>,
        base: &[u8],
        op: &'static str,
        mut create: impl FnMut() -> io::Result<T>,
    ) -> Result<T, LayerError> {
        match create() {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                remove_all_at(pfd, base)
                    .map_err(|e| LayerError::extract(raw, "removing the existing entry", e))?;
                self.root.invalidate();
                create().map_err(|e| LayerError::extract(raw, op, e))
            }
            r => r.map_err(|e| LayerError::extract(raw, op, e)),
        }
    }

    fn regular_file(
        &mut self,
        entry: &mut tar::Entry<'_, &mut dyn Read>,
        raw: &[u8],
        pfd: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
    ) -> Result<(), LayerError> {
        let size = entry.size();
        self.declare(raw, size)?;
        let fd = self.create_replacing(raw, pfd, base, "create", || {
            sys::openat(
                pfd,
                base,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )
        })?;
        let mut file = std::fs::File::from(fd);
        let mut written: u64 = 0;
        // Where writeback was last started: a layer dir is made durable
        // (`syncfs`) before the store names it, and a big file whose
        // writeback began while it was written leaves that sync little to do.
        let mut synced_to: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::Stream(e)),
            };
            // The running counts: never more than the header declared, and
            // never past the cap, whatever the header said.
            written += n as u64;
            if written > size {
                return Err(LayerError::bad_entry(
                    raw,
                    "more data than its header declares",
                ));
            }
            self.written = self.written.saturating_add(n as u64);
            if let Some(limit) = self.opts.limits.max_size.filter(|l| self.written > *l) {
                return Err(limit_hit(LimitKind::Size, limit, Some(raw)));
            }
            file.write_all(&self.buf[..n])
                .map_err(|e| LayerError::extract(raw, "write", e))?;
            if written - synced_to >= WRITEBACK_CHUNK {
                sys::start_writeback(file.as_fd(), synced_to, written - synced_to);
                synced_to = written;
            }
        }
        let fd = file.as_fd();
        if let Err(e) = sys::fchown(fd, meta.uid, meta.gid) {
            self.owner_failure(raw, e)?;
        }
        sys::fchmod(fd, meta.mode).map_err(|e| LayerError::extract(raw, "chmod", e))?;
        // After chown and chmod: both may clear security.capability.
        self.set_xattrs(raw, XattrTarget::Fd(fd), &meta.xattrs)?;
        sys::futimes(fd, meta.mtime).map_err(|e| LayerError::extract(raw, "set mtime", e))?;
        Ok(())
    }

    fn hard_link(
        &mut self,
        raw: &[u8],
        pfd: BorrowedFd<'_>,
        base: &[u8],
        target: &[u8],
    ) -> Result<(), LayerError> {
        let target_rel = name::clean(target)?;
        if target_rel.is_empty() {
            return Err(LayerError::bad_entry(
                raw,
                "hard link to the root directory",
            ));
        }
        let (tparent, tbase) = name::split_last(&target_rel);
        // The target's parent is resolved inside the root like everything else;
        // linkat with flags 0 links a symlink itself, never what it points to.
        let tdir = self
            .root
            .open_dir(tparent, libc::O_PATH)
            .map_err(|e| LayerError::extract(raw, "resolving the hard link target", e))?;
        self.create_replacing(raw, pfd, base, "hard link", || {
            sys::linkat(tdir.as_fd(), tbase, pfd, base)
        })
    }

    /// Owner, mode, xattrs and mtime for symlinks, fifos and devices.
    fn finish_node(
        &mut self,
        raw: &[u8],
        pfd: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), LayerError> {
        self.chown_at(raw, pfd, base, meta)?;
        if chmod {
            sys::fchmodat(pfd, base, meta.mode)
                .map_err(|e| LayerError::extract(raw, "chmod", e))?;
        }
        self.set_xattrs(raw, XattrTarget::At(pfd, base), &meta.xattrs)?;
        sys::lutimesat(pfd, base, meta.mtime).map_err(|e| LayerError::extract(raw, "set mtime", e))
    }

    fn chown_at(
        &mut self,
        raw: &[u8],
        pfd: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
    ) -> Result<(), LayerError> {
        match sys::lchownat(pfd, base, meta.uid, meta.gid) {
            Ok(()) => Ok(()),
            Err(e) => self.owner_failure(raw, e),
        }
    }

    fn owner_failure(&mut self, raw: &[u8], e: io::Error) -> Result<(), LayerError> {
        if self.opts.unprivileged
            && matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EINVAL))
        {
            self.note(format!(
                "{}: owner not set (unprivileged): {e}",
                String::from_utf8_lossy(raw)
            ));
            Ok(())
        } else {
            Err(LayerError::extract(raw, "chown", e))
        }
    }

    fn set_xattrs(
        &mut self,
        raw: &[u8],
        target: XattrTarget<'_>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), LayerError> {
        for (k, v) in xattrs {
            // Overlay metadata from a tar would change what the overlay shows
            // (opaque, redirect): only markers may produce it.
            if k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.") {
                self.note(format!(
                    "{}: overlay xattr {} dropped",
                    String::from_utf8_lossy(raw),
                    String::from_utf8_lossy(k)
                ));
                continue;
            }
            let r = match target {
                XattrTarget::Fd(fd) => sys::fsetxattr(fd, k, v),
                XattrTarget::At(dir, name) => sys::lsetxattr_at(dir, name, k, v),
            };
            if let Err(e) = r {
                let soft = matches!(e.raw_os_error(), Some(libc::ENOTSUP))
                    || (self.opts.unprivileged
                        && matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)));
                if !soft {
                    return Err(LayerError::extract(raw, "setting an xattr", e));
                }
                self.note(format!(
                    "{}: xattr {} not set: {e}",
                    String::from_utf8_lossy(raw),
                    String::from_utf8_lossy(k)
                ));
            }
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        raw: &[u8],
        parent_rel: &[u8],
        base: &[u8],
        target: &[u8],
    ) -> Result<(), LayerError> {
        let owner = self.implicit_owner();
        let mut made = Vec::new();
        let parent = self
            .root
            .parent(parent_rel, owner, &mut |p| made.push(p.to_vec()))
            .map_err(|e| LayerError::extract(raw, "resolving the parent directory", e))?;
        // fsetxattr and reading the directory need a real (non-O_PATH) fd.
        let pfd = sys::openat(parent.as_fd(), b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(|e| LayerError::extract(raw, "opening the parent directory", e))?;
        for p in made {
            self.mark_created(&p);
        }
        if base == OPAQUE_MARKER {
            return match self.opts.whiteout_mode {
                WhiteoutMode::Overlay(flavour) => {
                    sys::fsetxattr(pfd.as_fd(), &flavour.opaque_xattr(), b"y")
                        .map_err(|e| LayerError::extract(raw, "setting the opaque xattr", e))
                }
                WhiteoutMode::Apply => {
                    let created = &self.created;
                    let prefix = if parent_rel.is_empty() {
                        Vec::new()
                    } else {
                        [parent_rel, b"/"].concat()
                    };
                    let r = clear_dir(pfd.as_fd(), &mut |child| {
                        created.contains(&[prefix.as_slice(), child].concat())
                    });
                    self.root.invalidate();
                    r.map_err(|e| LayerError::extract(raw, "clearing the opaque directory", e))
                }
            };
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not content.
            self.note(format!(
                "{}: AUFS metadata skipped",
                String::from_utf8_lossy(raw)
            ));
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(LayerError::bad_entry(raw, "whiteout of an invalid name"));
        }
        match self.opts.whiteout_mode {
            WhiteoutMode::Overlay(_) => {
                remove_all_at(pfd.as_fd(), target).map_err(|e| {
                    LayerError::extract(raw, "removing the entry a whiteout replaces", e)
                })?;
                self.root.invalidate();
                sys::mknodat(pfd.as_fd(), target, libc::S_IFCHR, 0)
                    .map_err(|e| LayerError::extract(raw, "creating the whiteout device", e))?;
                let mut rel = parent_rel.to_vec();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(target);
                self.mark_created(&rel);
                Ok(())
            }
            WhiteoutMode::Apply => {
                let r = remove_all_at(pfd.as_fd(), target);
                self.root.invalidate();
                r.map_err(|e| LayerError::extract(raw, "applying a whiteout", e))
            }
        }
    }

    /// Modes and mtimes of directories, deepest first, once their children exist.
    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        self.root.invalidate();
        for d in std::mem::take(&mut self.dirs).into_iter().rev() {
            let fd = match self
                .root
                .open_dir(&d.rel, libc::O_RDONLY | libc::O_NOFOLLOW)
            {
                Ok(fd) => fd,
                // Replaced or removed by a later entry: nothing to finish.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(LayerError::extract(&d.rel, "reopening the directory", e)),
            };
            sys::fchmod(fd.as_fd(), d.mode).map_err(|e| LayerError::extract(&d.rel, "chmod", e))?;
            sys::futimes(fd.as_fd(), d.mtime)
                .map_err(|e| LayerError::extract(&d.rel, "set mtime", e))?;
        }
        Ok(())
    }
}

fn limit_hit(kind: LimitKind, limit: u64, entry: Option<&[u8]>) -> LayerError {
    LayerError::Limit(LimitExceeded {
        kind,
        limit,
        entry: entry.map(|e| String::from_utf8_lossy(e).into_owned()),
    })
}

#[derive(Clone, Copy)]
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a [u8]),
}
