//! The copy of context files into a step's tree: on every core (one rayon
//! task per entry, directories in parallel), relative to open directory
//! descriptors, with few syscalls per file.
//!
//! Per regular file: `statx` of the source at its directory's descriptor,
//! `openat` of the source (no symlink followed) and of the new file
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`, so nothing that already sits in the tree
//! is written through), one `copy_file_range` (the size is known), `fchown`
//! only when the entry gets an owner other than the caller, `fchmod` only
//! when the umask or setuid/setgid bits ask for it, `futimens`, two
//! `close`. The old path-based copier made 14 syscalls per file on one
//! thread, and a root build with a subordinate mapping then walked the tree
//! a second time to chown every entry (3 more).
//!
//! What it writes is what [`cairn_sandbox::fscopy::Copier`] writes: type,
//! mode (or `--chmod`'s), mtime, symlinks as links, hard links among one
//! source's files as links, sockets, fifos and devices left out. A
//! directory's mode, owner and time are set after its contents (writing
//! into it moves its time; a read-only mode would stop the writes).

use super::deferred::{Body, Deferred, Entry};
use super::known::{kept, KnownLog, KEEP_MAX};
use super::plan::CopyPlan;
use cairn_layer::{KnownEntry, KnownKind};
use cairn_sandbox::chmod::Chmod;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// How one copy gives owners, modes and which context paths it takes.
pub(super) struct TreeCopy<'a> {
    /// Host owner of every entry written; `None`: the caller's (root
    /// without `--chown`, or a rootless staging tree).
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<&'a Chmod>,
    /// With `.dockerignore` or `--exclude`: the plan that decides and the
    /// base `--exclude` patterns are relative to.
    pub filter: Option<(&'a CopyPlan, &'a str)>,
    /// Files with more than one link, by source (dev, ino): the path of
    /// the first copy (the later names link to it).
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// Rootless: files and symlinks are recorded here (read into the tar
    /// later), not written; dirs are made as always.
    defer: Option<&'a Deferred>,
    /// Deferring: this copy's index, source root and top destination dir.
    started: OnceLock<(usize, PathBuf, PathBuf)>,
    /// Deferring: an entry was recorded in the top destination dir, whose
    /// time then moves as if it had been written there.
    touched_top: AtomicBool,
    /// Writing (not deferring): what was written below the top dir, for
    /// the commit (see [`super::known`]).
    known: Option<KnownLog>,
}

/// What [`TreeCopy::entry`] did with one entry.
enum Wrote {
    Nothing,
    /// With the entry for the commit when the copy keeps a [`KnownLog`].
    Written(Option<Box<KnownEntry>>),
    /// Boxed: this is returned up a recursion as deep as the tree.
    Recorded(Box<Entry>),
}

/// One entry to copy: the source directory and name, its context path,
/// and where it goes.
struct At<'a> {
    src_dir: BorrowedFd<'a>,
    dst_dir: BorrowedFd<'a>,
    name: &'a CStr,
    /// Context path of the entry (for the filter).
    rel: &'a str,
    /// Path of the source dir (for errors).
    src_path: &'a Path,
    /// Path of the destination dir (for errors and links).
    dst_path: &'a Path,
    /// The destination dir was made by this copy (nothing else is in it).
    fresh: bool,
    /// The copy's log of what it wrote, if it keeps one.
    known: Option<&'a KnownLog>,
}

impl<'a> TreeCopy<'a> {
    pub fn new(
        owner: Option<(u32, u32)>,
        chmod: Option<&'a Chmod>,
        filter: Option<(&'a CopyPlan, &'a str)>,
    ) -> Self {
        raise_fd_limit();
        TreeCopy {
            owner,
            chmod,
            filter,
            links: Mutex::new(HashMap::new()),
            defer: None,
            started: OnceLock::new(),
            touched_top: AtomicBool::new(false),
            known: None,
        }
    }

    /// Log what is written below `top` (the dir [`TreeCopy::copy_contents`]
    /// fills) for the commit; see [`TreeCopy::into_known`].
    pub fn knowing(mut self, top: &Path) -> Self {
        self.known = Some(KnownLog::new(top));
        self
    }

    /// The log of what was written (`None` if not asked for).
    pub fn into_known(self) -> Option<KnownLog> {
        self.known
    }

    /// Record files and symlinks in `defer` instead of writing them.
    pub fn deferring(mut self, defer: Option<&'a Deferred>) -> Self {
        self.defer = defer;
        self
    }

    /// Deferring: register this copy's source root (open as `src`) and
    /// top destination dir.
    fn start(&self, src: BorrowedFd, src_path: &Path, top: &Path) -> io::Result<()> {
        if let Some(defer) = self.defer {
            let index = defer.add_copy(src, src_path)?;
            let _ = self
                .started
                .set((index, src_path.to_path_buf(), top.to_path_buf()));
        }
        Ok(())
    }

    /// Deferring: move the top destination dir's time as writing into it
    /// would have.
    fn touch_top(&self, dst: BorrowedFd, path: &Path) -> io::Result<()> {
        if self.touched_top.load(Ordering::Relaxed) {
            check(unsafe { libc::futimens(dst.as_raw_fd(), std::ptr::null()) })
                .map_err(ctx("setting times of", path))?;
        }
        Ok(())
    }

    /// Copy `from` (file, symlink, or dir with everything below it; `rel`
    /// in the context) to the path `to`, replacing what is there unless
    /// both are dirs.
    pub fn copy(&self, from: &Path, rel: &str, to: &Path) -> io::Result<()> {
        on_deep_stacks(|| self.copy_on_this_thread(from, rel, to))
    }

    fn copy_on_this_thread(&self, from: &Path, rel: &str, to: &Path) -> io::Result<()> {
        let (src_parent, src_name) = split(from)?;
        let (dst_parent, dst_name) = split(to)?;
        if src_name.as_bytes() == b"." || dst_name.as_bytes() == b"." {
            return Err(io::Error::other(format!("cannot copy {}", from.display())));
        }
        let src_dir = open_dir(None, &cstr(src_parent.as_os_str())?, src_parent)?;
        let dst_dir = open_dir(None, &cstr(dst_parent.as_os_str())?, dst_parent)?;
        let src_name = cstr(src_name)?;
        let dst_name = cstr(dst_name)?;
        let st = lstat_at(src_dir.as_fd(), &src_name).map_err(ctx("reading", from))?;
        self.start(src_dir.as_fd(), src_parent, dst_parent)?;
        let wrote = self.entry(
            &At {
                src_dir: src_dir.as_fd(),
                dst_dir: dst_dir.as_fd(),
                name: &dst_name,
                rel,
                src_path: src_parent,
                dst_path: dst_parent,
                fresh: false,
                known: self.known.as_ref(),
            },
            &src_name,
            &st,
        )?;
        if let (Wrote::Recorded(entry), Some(defer)) = (wrote, self.defer) {
            defer.record(dst_parent, vec![(dst_name.into_bytes(), *entry)]);
            self.touched_top.store(true, Ordering::Relaxed);
        }
        self.touch_top(dst_dir.as_fd(), dst_parent)
    }

    /// Copy the contents of dir `from` (`rel` in the context) into the
    /// existing dir `to`. Returns the names written at the top.
    pub fn copy_contents(&self, from: &Path, rel: &str, to: &Path) -> io::Result<Vec<String>> {
        on_deep_stacks(|| self.copy_contents_on_this_thread(from, rel, to))
    }

    fn copy_contents_on_this_thread(
        &self,
        from: &Path,
        rel: &str,
        to: &Path,
    ) -> io::Result<Vec<String>> {
        let src = open_dir(None, &cstr(from.as_os_str())?, from)?;
        let dst = open_dir(None, &cstr(to.as_os_str())?, to)?;
        self.start(src.as_fd(), from, to)?;
        let written = self.contents(src.as_fd(), dst.as_fd(), rel, from, to, false)?;
        self.touch_top(dst.as_fd(), to)?;
        Ok(written)
    }

    /// Copy every entry of the open dir `src` into `dst` (`fresh`: made
    /// by this copy), on every core. Returns the names written.
    fn contents(
        &self,
        src: BorrowedFd,
        dst: BorrowedFd,
        rel: &str,
        src_path: &Path,
        dst_path: &Path,
        fresh: bool,
    ) -> io::Result<Vec<String>> {
        let names = read_names(src).map_err(ctx("reading", src_path))?;
        let wrote: Vec<(String, Wrote)> = names
            .par_iter()
            .map(|name| {
                let text = String::from_utf8_lossy(name.to_bytes());
                let child = join(rel, &text);
                let st = lstat_at(src, name).map_err(ctx("reading", &src_path.join(&*text)))?;
                let at = At {
                    src_dir: src,
                    dst_dir: dst,
                    name,
                    rel: &child,
                    src_path,
                    dst_path,
                    fresh,
                    known: self.known.as_ref(),
                };
                Ok((text.into_owned(), self.entry(&at, name, &st)?))
            })
            .collect::<io::Result<_>>()?;
        let mut written = Vec::with_capacity(wrote.len());
        let mut recorded = Vec::new();
        let mut known = Vec::new();
        for (name, wrote) in wrote {
            match wrote {
                Wrote::Nothing => continue,
                Wrote::Written(entry) => known.extend(entry.map(|e| *e)),
                Wrote::Recorded(entry) => recorded.push((name.as_bytes().to_vec(), *entry)),
            }
            written.push(name);
        }
        if let Some(log) = &self.known {
            log.push(known);
        }
        if let Some(defer) = self.defer.filter(|_| !recorded.is_empty()) {
            if self.started.get().is_some_and(|s| s.2 == dst_path) {
                self.touched_top.store(true, Ordering::Relaxed);
            }
            defer.record(dst_path, recorded);
        }
        Ok(written)
    }

    /// Copy one entry named `src_name` in `at.src_dir` (stat `st`) to
    /// `at.name` in `at.dst_dir`. Says what it did.
    fn entry(&self, at: &At, src_name: &CStr, st: &libc::stat) -> io::Result<Wrote> {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => self.dir(at, src_name, st),
            libc::S_IFREG | libc::S_IFLNK => {
                if let Some((plan, base)) = self.filter {
                    if !plan.keeps(base, at.rel) {
                        return Ok(Wrote::Nothing);
                    }
                }
                if self.defer.is_some() {
                    return self.record(at, src_name, st).map(Wrote::Recorded);
                }
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    self.symlink(at, src_name, st).map(Wrote::Written)
                } else {
                    self.file(at, src_name, st).map(Wrote::Written)
                }
            }
            _ => Ok(Wrote::Nothing), // sockets, fifos and devices are not copied
        }
    }

    /// Deferring: what a file or symlink would be written as, after the
    /// real entry at its name (if any) is removed as [`replace_with`] would.
    /// Not inlined: [`TreeCopy::entry`] is in a recursion as deep as the
    /// tree, and its frame must stay small.
    #[inline(never)]
    fn record(&self, at: &At, src_name: &CStr, st: &libc::stat) -> io::Result<Box<Entry>> {
        let to = || at.dst_path.join(OsStr::from_bytes(at.name.to_bytes()));
        if !at.fresh {
            match lstat_at(at.dst_dir, at.name) {
                Ok(old) => self.remove_real(at, &old, &to())?,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(ctx("reading", &to())(e)),
            }
        }
        let Some((copy, root, _)) = self.started.get() else {
            return Err(io::Error::other("a deferred copy that was not started"));
        };
        let body = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            let target = read_link_at(at.src_dir, src_name, st.st_size as usize)
                .map_err(ctx("reading", &to()))?;
            Body::Symlink(target)
        } else {
            let src_dir = at.src_path.strip_prefix(root).map_err(|_| {
                io::Error::other(format!(
                    "{} is not below the copy's source",
                    at.src_path.display()
                ))
            })?;
            Body::File {
                src_dir: src_dir.to_path_buf(),
                name: src_name.to_owned(),
                size: st.st_size as u64,
                id: (st.st_dev, st.st_ino),
                linked: st.st_nlink > 1,
            }
        };
        let mode = match (&body, self.chmod) {
            (Body::Symlink(_), _) => 0o777,
            (_, Some(chmod)) => chmod.apply(st.st_mode, false),
            (_, None) => st.st_mode & 0o7777,
        };
        Ok(Box::new(Entry {
            body,
            copy: *copy,
            mode,
            mtime: st.st_mtime,
        }))
    }

    /// Deferring: remove the real entry (stat `old`) at `at.name`, and for
    /// a dir, the entries recorded below it.
    #[inline(never)]
    fn remove_real(&self, at: &At, old: &libc::stat, to: &Path) -> io::Result<()> {
        if old.st_mode & libc::S_IFMT == libc::S_IFDIR {
            std::fs::remove_dir_all(to).map_err(ctx("replacing", to))?;
            if let Some(defer) = self.defer {
                defer.forget_below(to);
            }
            Ok(())
        } else {
            unlink_at(at.dst_dir, at.name, false).map_err(ctx("replacing", to))
        }
    }

    fn dir(&self, at: &At, src_name: &CStr, st: &libc::stat) -> io::Result<Wrote> {
        if let Some((plan, base)) = self.filter {
            if plan.skips(base, at.rel) {
                return Ok(Wrote::Nothing);
            }
        }
        let to = at.dst_path.join(OsStr::from_bytes(at.name.to_bytes()));
        if at.rel.bytes().filter(|&b| b == b'/').count() >= MAX_DEPTH {
            return Err(io::Error::other(format!(
                "{}: more than {MAX_DEPTH} nested directories",
                to.display()
            )));
        }
        let existed = match mkdir_at(at.dst_dir, at.name) {
            Ok(()) => {
                // A file recorded at this name is replaced by the dir.
                if let Some(defer) = self.defer.filter(|_| !at.fresh) {
                    defer.forget(at.dst_path, at.name.to_bytes());
                }
                false
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // The log cannot tell what the dir held before.
                if let Some(log) = &self.known {
                    log.spoil();
                }
                dir_over(at, &to)?
            }
            Err(e) => return Err(ctx("creating", &to)(e)),
        };
        let from_path = at.src_path.join(OsStr::from_bytes(src_name.to_bytes()));
        let src = open_dir(Some(at.src_dir), src_name, &from_path)?;
        let dst = open_dir(Some(at.dst_dir), at.name, &to)?;
        let written = self.contents(src.as_fd(), dst.as_fd(), at.rel, &from_path, &to, !existed)?;
        if let Some((plan, base)) = self.filter {
            // An excluded dir is made only to hold a re-included entry.
            if !existed && written.is_empty() && !plan.keeps(base, at.rel) {
                drop(dst);
                unlink_at(at.dst_dir, at.name, true).map_err(ctx("removing", &to))?;
                return Ok(Wrote::Nothing);
            }
        }
        let mode = self.finish(dst.as_fd(), st, true, &to)?;
        Ok(Wrote::Written(self.log_entry(at, KnownKind::Dir, mode, st)))
    }

    // Leaves of the recursion, kept out of [`TreeCopy::entry`]'s frame.
    #[inline(never)]
    fn file(
        &self,
        at: &At,
        src_name: &CStr,
        st: &libc::stat,
    ) -> io::Result<Option<Box<KnownEntry>>> {
        let to = || at.dst_path.join(OsStr::from_bytes(at.name.to_bytes()));
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let src = open_at(at.src_dir, src_name, flags, 0).map_err(ctx("reading", &to()))?;
        // Hold the link table from the first name's creation on, so a
        // second name is linked only once the file exists.
        let mut links =
            (st.st_nlink > 1).then(|| self.links.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(table) = links.as_mut() {
            if let Some(first) = table.get(&(st.st_dev, st.st_ino)) {
                let first = cstr(first.as_os_str())?;
                replace_with(at, &to(), |dir, name| link_at(&first, dir, name))?;
                return Ok(None);
            }
        }
        if let Some(log) = self.known.as_ref().filter(|_| st.st_nlink > 1) {
            log.spoil(); // the log has no hard links
        }
        let create =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let perm = (st.st_mode & 0o777) as libc::mode_t;
        let dst = replace_with(at, &to(), |dir, name| open_at(dir, name, create, perm))?;
        if let Some(table) = links.as_mut() {
            table.insert((st.st_dev, st.st_ino), to());
        }
        drop(links);
        let size = st.st_size as u64;
        let (size, content) = match &self.known {
            // A small file is read and written (not `copy_file_range`d)
            // and its bytes go on to the tar.
            Some(log) if log.keeps(size) => {
                let bytes = copy_kept(&src, &dst, size).map_err(ctx("copying to", &to()))?;
                (bytes.len() as u64, kept(bytes))
            }
            _ => (
                copy_data(&src, &dst, size).map_err(ctx("copying to", &to()))?,
                None,
            ),
        };
        let mode = self.finish(dst.as_fd(), st, false, &to())?;
        Ok(self.log_entry(at, KnownKind::File { size, content }, mode, st))
    }

    /// The log's entry for what was just written at `at` (mode `mode`,
    /// time and owner as the copy set them).
    #[inline(never)]
    fn log_entry(
        &self,
        at: &At,
        kind: KnownKind,
        mode: u32,
        st: &libc::stat,
    ) -> Option<Box<KnownEntry>> {
        let log = self.known.as_ref()?;
        // Without an owner of its own, an entry is its creator's.
        let owner = self.owner.unwrap_or(log.creator);
        log.entry(
            at.dst_path,
            at.name.to_bytes(),
            kind,
            mode,
            owner,
            st.st_mtime,
        )
        .map(Box::new)
    }

    #[inline(never)]
    fn symlink(
        &self,
        at: &At,
        src_name: &CStr,
        st: &libc::stat,
    ) -> io::Result<Option<Box<KnownEntry>>> {
        let to = at.dst_path.join(OsStr::from_bytes(at.name.to_bytes()));
        let target =
            read_link_at(at.src_dir, src_name, st.st_size as usize).map_err(ctx("reading", &to))?;
        replace_with(at, &to, |dir, name| symlink_at(&target, dir, name))?;
        let kind = KnownKind::Symlink(target.as_bytes().to_vec());
        if let Some((uid, gid)) = self.owner {
            let r = unsafe {
                libc::fchownat(
                    at.dst_dir.as_raw_fd(),
                    at.name.as_ptr(),
                    uid,
                    gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            check(r).map_err(ctx("chown", &to))?;
        }
        let times = [timespec(st), timespec(st)];
        let r = unsafe {
            libc::utimensat(
                at.dst_dir.as_raw_fd(),
                at.name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        check(r).map_err(ctx("setting times of", &to))?;
        // A link's own mode is always 0777 on Linux.
        Ok(self.log_entry(at, kind, 0o777, st))
    }

    /// Owner, mode (after the owner: chown clears setuid/setgid) and
    /// time of a written file or dir, through its descriptor. Returns
    /// the mode it has.
    fn finish(&self, fd: BorrowedFd, st: &libc::stat, is_dir: bool, to: &Path) -> io::Result<u32> {
        if let Some((uid, gid)) = self.owner {
            check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map_err(ctx("chown", to))?;
        }
        let mode = match self.chmod {
            Some(chmod) => chmod.apply(st.st_mode, is_dir),
            None => st.st_mode & 0o7777,
        };
        // A file was created with its permission bits less the umask.
        let created = (st.st_mode & 0o777) & !umask();
        if is_dir || mode != created {
            check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })
                .map_err(ctx("chmod", to))?;
        }
        let times = [timespec(st), timespec(st)];
        check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
            .map_err(ctx("setting times of", to))?;
        Ok(mode)
    }
}

/// How deep the copy goes before it refuses: the product's one depth
/// policy. PATH_MAX (4,096 bytes) already keeps a context's paths above
/// ~2,000 levels; this bounds the recursion below what [`COPY_STACK`] holds
/// whatever the paths are.
const MAX_DEPTH: usize = cairn_layer::MAX_TREE_DEPTH;

/// The copy recurses once per directory level, and each level costs a few
/// KiB of stack with rayon's frames: a default 2 MiB worker stack ends
/// near 700 levels, and a stack overflow aborts the whole process, while a
/// context can nest directories ~2,000 deep. So the copy runs on a pool of
/// its own whose threads have room (virtual memory: only the pages a deep
/// tree touches are backed).
const COPY_STACK: usize = 64 << 20;

/// Run `f` on the copy's pool (on this thread if the pool cannot be made).
fn on_deep_stacks<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .stack_size(COPY_STACK)
            .thread_name(|i| format!("cairn-copy-{i}"))
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// The name of a dir to make is taken: a dir there is kept (true), a
/// non-dir is replaced by a new dir (false). Not inlined: the copy's
/// recursion is as deep as the tree and its frames must stay small.
#[inline(never)]
fn dir_over(at: &At, to: &Path) -> io::Result<bool> {
    let old = lstat_at(at.dst_dir, at.name).map_err(ctx("reading", to))?;
    if old.st_mode & libc::S_IFMT != libc::S_IFDIR {
        unlink_at(at.dst_dir, at.name, false).map_err(ctx("replacing", to))?;
        mkdir_at(at.dst_dir, at.name).map_err(ctx("creating", to))?;
        Ok(false)
    } else {
        Ok(true)
    }
}

/// Run `make(dir, name)`; when the name is taken, remove what is there
/// (a dir with everything in it) and run it again.
fn replace_with<T>(
    at: &At,
    to: &Path,
    make: impl Fn(BorrowedFd, &CStr) -> io::Result<T>,
) -> io::Result<T> {
    match make(at.dst_dir, at.name) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // The log cannot tell what was there.
            if let Some(log) = at.known {
                log.spoil();
            }
            let old = lstat_at(at.dst_dir, at.name).map_err(ctx("reading", to))?;
            if old.st_mode & libc::S_IFMT == libc::S_IFDIR {
                std::fs::remove_dir_all(to).map_err(ctx("replacing", to))?;
            } else {
                unlink_at(at.dst_dir, at.name, false).map_err(ctx("replacing", to))?;
            }
            make(at.dst_dir, at.name).map_err(ctx("creating", to))
        }
        other => other.map_err(ctx("creating", to)),
    }
}

/// Copy `size` bytes: `copy_file_range` (in the kernel, a clone where the
/// filesystem shares extents), else reads and writes.
fn copy_data(src: &OwnedFd, dst: &OwnedFd, size: u64) -> io::Result<u64> {
    let mut done: u64 = 0;
    while done < size {
        let want = (size - done).min(1 << 30) as usize;
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) if done == 0 => {
                    copy_by_reading(src, dst)
                }
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        if n == 0 {
            break; // the source shrank
        }
        done += n as u64;
    }
    Ok(done)
}

fn copy_by_reading(src: &OwnedFd, dst: &OwnedFd) -> io::Result<u64> {
    let src = std::fs::File::from(src.try_clone()?);
    let dst = std::fs::File::from(dst.try_clone()?);
    io::copy(&mut &src, &mut &dst)
}

/// Copy at most `size` (<= [`KEEP_MAX`]) bytes by reading them (one
/// `read` as a rule) and writing them; returns them. A source that shrank
/// gives fewer bytes, one that grew is cut at `size`, as [`copy_data`] does.
fn copy_kept(src: &OwnedFd, dst: &OwnedFd, size: u64) -> io::Result<Vec<u8>> {
    use nix::errno::Errno;
    let want = size.min(KEEP_MAX) as usize;
    let mut bytes = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match nix::unistd::read(src, &mut bytes[got..]) {
            Ok(0) => break, // the source shrank
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    bytes.truncate(got);
    let mut put = 0;
    while put < got {
        match nix::unistd::write(dst, &bytes[put..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => put += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(bytes)
}

/// Each directory being copied holds two descriptors until its contents
/// are done, so a deep tree holds two per level (and more while the pool
/// works on several branches): the soft limit on open files is raised to
/// the hard one, once, as Go's runtime does for every program.
fn raise_fd_limit() {
    static RAISED: OnceLock<()> = OnceLock::new();
    RAISED.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    });
}

/// The process's umask, read once (`/proc/self/status`; when unknown,
/// 0777: every entry then gets its `fchmod`).
fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    })
}

fn timespec(st: &libc::stat) -> libc::timespec {
    libc::timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec,
    }
}

fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(io::Error::other(format!(
            "no parent dir: {}",
            path.display()
        ))),
    }
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::other("a path with a NUL byte"))
}

fn ctx<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> io::Error + 'p {
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open_at(dir: BorrowedFd, name: &CStr, flags: i32, mode: libc::mode_t) -> io::Result<OwnedFd> {
    loop {
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) };
        if fd >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Open a directory: relative to `dir` never through a symlink (entries
/// of a tree being copied); a path the caller resolved (a context path
/// after its symlinks, a dir in the step's tree) as it is, since the
/// context root itself may be reached through a link.
fn open_dir(dir: Option<BorrowedFd>, name: &CStr, shown: &Path) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let fd = match dir {
        Some(dir) => open_at(dir, name, flags | libc::O_NOFOLLOW, 0),
        None => {
            let r = unsafe { libc::open(name.as_ptr(), flags) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(unsafe { OwnedFd::from_raw_fd(r) })
            }
        }
    };
    fd.map_err(ctx("opening", shown))
}

fn lstat_at(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(r)?;
    Ok(unsafe { st.assume_init() })
}

fn mkdir_at(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) })
}

fn unlink_at(dir: BorrowedFd, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

fn link_at(first: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            first.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            0,
        )
    };
    check(r)
}

fn symlink_at(target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// The target of the symlink `name` (`hint`: its lstat size).
fn read_link_at(dir: BorrowedFd, name: &CStr, hint: usize) -> io::Result<CString> {
    let target = cairn_layer::readlinkat(dir, name.to_bytes(), hint)?;
    CString::new(target).map_err(|_| io::Error::other("a link with a NUL byte"))
}

/// The names in an open dir (without `.` and `..`). The descriptor is
/// duplicated: reading moves its offset, and `fdopendir` takes ownership.
fn read_names(dir: BorrowedFd) -> io::Result<Vec<CString>> {
    let dup = dir.try_clone_to_owned()?;
    let raw = dup.as_raw_fd();
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(dup); // owned by the stream now
    let mut names = Vec::new();
    loop {
        unsafe { *libc::__errno_location() = 0 };
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            let errno = unsafe { *libc::__errno_location() };
            unsafe { libc::closedir(stream) };
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
            return Ok(names);
        }
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn set_mtime(path: &Path, secs: i64) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let t = libc::timespec {
            tv_sec: secs,
            tv_nsec: 5,
        };
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                [t, t].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(r, 0);
    }

    /// A tree with a read-only dir, setgid and odd modes, a hard link, a
    /// relative and an escaping symlink, a fifo, and 100 files in one dir.
    fn source(root: &Path) {
        std::fs::create_dir_all(root.join("d/many")).unwrap();
        for i in 0..100 {
            std::fs::write(root.join(format!("d/many/f{i}")), format!("{i}")).unwrap();
        }
        std::fs::write(root.join("d/f"), "content").unwrap();
        std::fs::set_permissions(root.join("d/f"), std::fs::Permissions::from_mode(0o2751))
            .unwrap();
        std::fs::hard_link(root.join("d/f"), root.join("d/many/g")).unwrap();
        std::os::unix::fs::symlink("f", root.join("d/l")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("d/out")).unwrap();
        nix::unistd::mkfifo(
            &root.join("d/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        std::fs::create_dir(root.join("ro")).unwrap();
        std::fs::write(root.join("ro/x"), "x").unwrap();
        for p in ["d/f", "d/many/f7", "ro/x"] {
            set_mtime(&root.join(p), 1_000_000 + p.len() as i64);
        }
        set_mtime(&root.join("d/l"), 1_500_000);
        set_mtime(&root.join("d/many"), 2_000_000);
        std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
        set_mtime(&root.join("ro"), 3_000_000);
    }

    #[test]
    fn a_tree_is_copied_as_the_copier_copies_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        source(&src);
        std::fs::create_dir(&dst).unwrap();
        let copy = TreeCopy::new(None, None, None);
        let mut top = copy.copy_contents(&src, "src", &dst).unwrap();
        top.sort();
        assert_eq!(top, ["d", "ro"]);
        let meta = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.join("d/many/f42")).unwrap(),
            "42"
        );
        assert_eq!(
            meta("d/f").mode() & 0o7777,
            0o2751,
            "setgid and odd mode kept"
        );
        assert_eq!(meta("d/f").ino(), meta("d/many/g").ino(), "hard link kept");
        assert_eq!(std::fs::read_link(dst.join("d/l")).unwrap(), Path::new("f"));
        assert_eq!(
            std::fs::read_link(dst.join("d/out")).unwrap(),
            Path::new("/etc/passwd"),
            "a symlink is copied as a link, never followed"
        );
        assert!(!dst.join("d/fifo").exists(), "fifos are not copied");
        for p in ["d/f", "d/many/f7", "ro/x"] {
            assert_eq!(meta(p).mtime(), 1_000_000 + p.len() as i64, "{p}");
        }
        assert_eq!(meta("d/l").mtime(), 1_500_000, "a link's own time");
        assert_eq!(
            meta("d/many").mtime(),
            2_000_000,
            "a dir's time is set last"
        );
        assert_eq!(meta("ro").mode() & 0o7777, 0o555);
        assert_eq!(meta("ro").mtime(), 3_000_000);
        std::fs::set_permissions(dst.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(src.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn what_sits_at_a_name_is_replaced_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/victim"), "new").unwrap();
        std::fs::write(src.join("file"), "new").unwrap();
        // In the tree already: a link where a file goes, pointing outside,
        // and a link where a dir goes.
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), "old").unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), dst.join("file")).unwrap();
        std::os::unix::fs::symlink(&outside, dst.join("sub")).unwrap();
        let copy = TreeCopy::new(None, None, None);
        copy.copy_contents(&src, "", &dst).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "old"
        );
        assert!(std::fs::symlink_metadata(dst.join("sub")).unwrap().is_dir());
        assert_eq!(
            std::fs::read_to_string(dst.join("sub/victim")).unwrap(),
            "new"
        );
        assert_eq!(std::fs::read_to_string(dst.join("file")).unwrap(), "new");
        // One file onto an existing dir: the dir goes.
        copy.copy(&src.join("file"), "file", &dst.join("sub"))
            .unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("sub")).unwrap(), "new");
    }

    #[test]
    fn a_deep_tree_is_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        let mut leaf = src.clone();
        // Deeper than a default 2 MiB thread stack holds (~700 levels).
        for _ in 0..1800 {
            leaf.push("d");
        }
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("f"), "deep").unwrap();
        std::fs::create_dir(&dst).unwrap();
        TreeCopy::new(None, None, None)
            .copy_contents(&src, "", &dst)
            .unwrap();
        let copied = dst.join(leaf.strip_prefix(&src).unwrap()).join("f");
        assert_eq!(std::fs::read_to_string(copied).unwrap(), "deep");
        // Deferring (rootless) walks the same recursion.
        let staged = tmp.path().join("staged");
        std::fs::create_dir(&staged).unwrap();
        let deferred = Deferred::default();
        TreeCopy::new(None, None, None)
            .deferring(Some(&deferred))
            .copy_contents(&src, "", &staged)
            .unwrap();
        let leaf_dir = staged.join(leaf.strip_prefix(&src).unwrap());
        assert!(deferred.take(&leaf_dir).contains_key(b"f".as_slice()));
    }

    #[test]
    fn deferring_makes_dirs_and_records_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a"), "aaa").unwrap();
        std::fs::write(src.join("sub/b"), "b").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("out")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        // A file already in the tree where a recorded one goes is removed.
        std::fs::write(dst.join("a"), "old").unwrap();
        let deferred = Deferred::default();
        let copy = TreeCopy::new(None, None, None).deferring(Some(&deferred));
        let mut names = copy.copy_contents(&src, "", &dst).unwrap();
        names.sort();
        assert_eq!(names, ["a", "out", "sub"]);
        let on_disk: Vec<_> = walkdir::WalkDir::new(&dst)
            .min_depth(1)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| !e.file_type().is_dir())
            .map(|e| e.path().to_path_buf())
            .collect();
        assert!(on_disk.is_empty(), "only dirs are written: {on_disk:?}");
        let top = deferred.take(&dst);
        assert_eq!(
            top.keys().cloned().collect::<Vec<_>>(),
            [b"a".to_vec(), b"out".to_vec()]
        );
        assert!(
            matches!(&top[&b"out".to_vec()].body, Body::Symlink(t) if t.to_bytes() == b"/etc/passwd")
        );
        let sub = deferred.take(&dst.join("sub"));
        let mut read = String::new();
        let mut sources = super::super::deferred::SourceDirs::default();
        let mut file = deferred
            .open(&mut sources, &sub[&b"b".to_vec()])
            .unwrap()
            .unwrap();
        io::Read::read_to_string(&mut file, &mut read).unwrap();
        assert_eq!(read, "b");
    }

    #[test]
    fn a_recorded_file_swapped_for_a_link_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a"), "aaa").unwrap();
        std::fs::write(src.join("sub/b"), "b").unwrap();
        std::fs::write(tmp.path().join("secret"), "secret").unwrap();
        std::fs::create_dir(&dst).unwrap();
        let deferred = Deferred::default();
        let copy = TreeCopy::new(None, None, None).deferring(Some(&deferred));
        copy.copy_contents(&src, "", &dst).unwrap();
        // Between the walk and the tar: the file becomes a link out of the
        // context, and the dir a link to a dir outside.
        std::fs::remove_file(src.join("a")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), src.join("a")).unwrap();
        std::fs::rename(src.join("sub"), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("moved"), src.join("sub")).unwrap();
        let mut sources = super::super::deferred::SourceDirs::default();
        let top = deferred.take(&dst);
        let err = deferred
            .open(&mut sources, &top[&b"a".to_vec()])
            .err()
            .unwrap();
        assert!(err.to_string().contains("src/a"), "{err}");
        let sub = deferred.take(&dst.join("sub"));
        let err = deferred
            .open(&mut sources, &sub[&b"b".to_vec()])
            .err()
            .unwrap();
        assert!(err.to_string().contains("opening"), "{err}");
    }

    #[test]
    fn chmod_applies_to_files_and_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), "x").unwrap();
        std::fs::create_dir(&dst).unwrap();
        let chmod = Chmod::parse("750").unwrap();
        TreeCopy::new(None, Some(&chmod), None)
            .copy_contents(&src, "", &dst)
            .unwrap();
        let mode = |p: &str| std::fs::metadata(dst.join(p)).unwrap().mode() & 0o7777;
        assert_eq!((mode("d"), mode("d/f")), (0o750, 0o750));
    }
}
